"""Submit-time checks that look beyond the matrix: the model's config, the data, the hub.

What a run would otherwise find out on the compute node, hours later, is checked here
on the login node, without importing torch or transformers:

* ``lora.placement`` / ``ia3.placement``: a known preset, defined for the model's architecture;
* ``lora.target_modules`` / ``ia3.target_modules`` against the module names of the model's architecture and
  ``freeze.layers`` against its layer count, where its ``config.json`` is reachable
  (``package:`` references, local directories, the Hugging Face cache); elsewhere the
  worker refuses unmatched targets at once (``jobs.methods.base.unmatched_targets``);
* ``data.train_file`` / ``validation_file``: present, readable, and the first record
  has the task's columns;
* a hub data set known not to fit the task (``glue/mrpc`` for ``sst2``), or another GLUE
  configuration than the task's (``glue/mrpc`` for ``rte``: the same columns, other labels);
* SQuAD v2's ``doc_stride`` against the room left after the question (QUESTION_ROOM);
* the run's estimated peak GPU memory (orchestrator/vram.py) against its partition's
  ``gpu_mem_gb``, naming the knob changes that would fit.
* evaluation during training (orchestrator/matrix/evaluation.py): knobs that go together, the metric
  to stop on, the training rows they need;
* ``data.max_train_samples`` against the training rows, where their number is known here
  (local files are counted; HUB_TRAIN_ROWS; generated data is checked by the contract).

Each problem names the key, the value and the fix; nothing is written.
"""

from __future__ import annotations

import functools
import json
import lzma
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jobs.contract import ALL_LINEAR, RunSpec, TrainConfig, hub_dataset, resolve_model_ref
from jobs.methods import placement
from jobs.packing import packing_problem
from jobs.tasks import get_task
from orchestrator import vram, vramfit
from orchestrator.matrix.datafiles import count_rows, file_problem
from orchestrator.matrix.evaluation import evaluation_problems
from orchestrator.matrix.problems import Problems, suggest
from orchestrator.profiles import Profile

# Hub data sets whose columns are known, by (name, config) as jobs.tasks.data loads them.
HUB_COLUMNS: dict[tuple[str, str | None], tuple[str, ...]] = {
    ("squad_v2", None): ("id", "title", "context", "question", "answers"),
    ("squad", None): ("id", "title", "context", "question", "answers"),
    ("glue", "sst2"): ("sentence", "label", "idx"),
    ("glue", "cola"): ("sentence", "label", "idx"),
    ("glue", "mrpc"): ("sentence1", "sentence2", "label", "idx"),
    ("glue", "qqp"): ("question1", "question2", "label", "idx"),
    ("glue", "stsb"): ("sentence1", "sentence2", "label", "idx"),
    ("glue", "mnli"): ("premise", "hypothesis", "label", "idx"),
    ("glue", "qnli"): ("question", "sentence", "label", "idx"),
    ("glue", "rte"): ("sentence1", "sentence2", "label", "idx"),
    ("glue", "wnli"): ("sentence1", "sentence2", "label", "idx"),
    ("imdb", None): ("text", "label"),
}
# Owner-prefixed hub ids of the data sets above (the same files as the short names).
HUB_OWNERS = {"rajpurkar/squad_v2": "squad_v2", "rajpurkar/squad": "squad", "nyu-mll/glue": "glue",
              "stanfordnlp/imdb": "imdb"}
# Training rows of hub data sets, by (name, config) as above: data.max_train_samples above them is refused.
HUB_TRAIN_ROWS: dict[tuple[str, str | None], int] = {
    ("squad_v2", None): 130_319, ("glue", "sst2"): 67_349, ("glue", "cola"): 8_551, ("glue", "mrpc"): 3_668,
    ("glue", "qqp"): 363_846, ("glue", "rte"): 2_490, ("glue", "qnli"): 104_743, ("glue", "mnli"): 392_702,
    ("glue", "stsb"): 5_749,
}

# Tokens kept free for the question when checking doc_stride: the fast tokenizer needs
# doc_stride < max_seq_length - question tokens - 3 special tokens ([CLS] q [SEP] c [SEP]),
# and the longest question is only known from the data. Real data gets a conservative
# 64 (SQuAD questions are short sentences; outliers run to a few dozen word pieces); the
# generated questions of data.synthetic are templates of at most a dozen word pieces.
QUESTION_ROOM = {"synthetic": 20, "real": 64}
SPECIAL_TOKENS = 3

# Leaf names LoRA can target (linear and embedding layers), by config.json model_type.
_BERT_LIKE = ("query", "key", "value", "dense", "word_embeddings", "position_embeddings", "token_type_embeddings")
MODULES_BY_TYPE: dict[str, tuple[str, ...]] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE + ("out_proj",),
    "xlm-roberta": _BERT_LIKE + ("out_proj",),
    "camembert": _BERT_LIKE + ("out_proj",),
    "electra": _BERT_LIKE + ("embeddings_project", "dense_prediction", "out_proj"),
    "distilbert": ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2", "word_embeddings", "position_embeddings"),
    "albert": ("query", "key", "value", "dense", "ffn", "ffn_output", "embedding_hidden_mapping_in",
               "word_embeddings", "position_embeddings", "token_type_embeddings"),
    "deberta-v2": ("query_proj", "key_proj", "value_proj", "dense", "word_embeddings", "position_embeddings"),
    "gpt2": ("c_attn", "c_proj", "c_fc", "wte", "wpe"),
}
LAYER_COUNT_KEYS = vram.KEYS["layers"]  # the config keys the VRAM estimate reads the depth from, too


def problems(specs: Sequence[RunSpec], hf_home: str | None = None, profile: Profile | None = None) -> Problems:
    """Every problem of ``specs`` this module can see, each with its key path; with ``profile``,
    also the runs whose estimated GPU memory exceeds their partition's ``gpu_mem_gb``."""
    found: Problems = []
    checked: set[str] = set()
    for spec in specs:
        key = spec.base_name + spec.train.model_dump_json()
        if key in checked:
            continue
        checked.add(key)
        found += train_problems(spec.train, f"runs.{spec.base_name}", hf_home)
    return found + (memory_problems(specs, profile) if profile is not None else [])


def gpu_limit_gib(spec: RunSpec, profile: Profile) -> tuple[str, float] | None:
    """(partition, gpu_mem_gb) of the CUDA partition ``spec`` asks GPUs of, or None (no limit known)."""
    partition = profile.partition(spec.resources.partition)
    if partition is None or not partition.cuda or partition.gpu_mem_gb is None or spec.resources.gpus < 1:
        return None
    return str(spec.resources.partition), partition.gpu_mem_gb


def memory_problems(specs: Sequence[RunSpec], profile: Profile) -> Problems:
    """Runs that would not fit their GPU (vramfit.fit_problem), one problem a matrix entry and message:
    the seeds of a grid share theirs."""
    by_message: dict[tuple[str, str], list[str]] = {}
    seen: dict[str, str | None] = {}
    for spec in specs:
        limit = gpu_limit_gib(spec, profile)
        if limit is None:
            continue
        key = spec.train.model_copy(update={"seed": 0}).model_dump_json() + repr(limit)
        if key not in seen:
            config = model_config(spec.train.model_name_or_path, profile.hf_home)
            seen[key] = vramfit.fit_problem(spec.train, config, limit[1], limit[0])
        if seen[key] is not None:
            by_message.setdefault((spec.base_name, str(seen[key])), []).append(spec.run_name)
    found: Problems = []
    for (base_name, message), runs in by_message.items():
        more = f" (and {len(runs) - 1} more run(s) of {base_name})" if len(runs) > 1 else ""
        found.append((f"runs.{base_name}", f"run {runs[0]}{more}: {message}"))
    return found


def train_problems(train: TrainConfig, where: str, hf_home: str | None = None) -> Problems:
    """Every problem of one run's training config this module can see, keyed under ``where``."""
    found = (stride_problems(train, where) + data_problems(train, where)
             + evaluation_problems(train, where, training_rows(train)))
    config = model_config(train.model_name_or_path, hf_home)
    if config is not None:
        found += model_problems(train, config, where)
    return found + placement_problems(train, None if config is None else str(config.get("model_type", "")), where)


def placement_problems(train: TrainConfig, model_type: str | None, where: str) -> Problems:
    """``lora.placement`` / ``ia3.placement``: a known preset, defined for the model's architecture when its
    config.json is reachable (``model_type``; None: not reachable, the worker resolves it against the model)."""
    found: Problems = []
    for section in ("lora", "ia3"):
        chosen = getattr(train, section)
        preset = chosen.placement if chosen is not None else None
        problem = None if preset is None else placement.preset_problem(f"{section}.placement", preset, model_type)
        if problem is not None:
            hint = suggest(str(preset), list(placement.PRESETS)) if preset not in placement.PRESETS else ""
            found.append((f"{where}.{section}.placement", problem + hint + _architecture_words(train, model_type)))
    return found


def _architecture_words(train: TrainConfig, model_type: str | None) -> str:
    """The model's module names for a placement problem: each role's module, else its linear layers."""
    if model_type in placement.PATHS_BY_TYPE:
        modules = placement.architecture_modules(model_type)
    elif model_type in MODULES_BY_TYPE:
        modules = ", ".join(MODULES_BY_TYPE[model_type])
    else:
        return ""
    return f"; the modules of {train.model_name_or_path} (model_type {model_type}): {modules}"


def stride_problems(train: TrainConfig, where: str) -> Problems:
    """Overflow windows (SQuAD v2): the stride must fit the room left after the question."""
    task = get_task(train.task)
    own = task.knob_problems(train)
    if own:
        return [(f"{where}.doc_stride", problem) for problem in own]
    if not task.overflow_windows:
        return []
    source = "synthetic" if train.data.synthetic is not None else "real"
    room = QUESTION_ROOM[source]
    limit = train.max_seq_length - SPECIAL_TOKENS - room  # the tokenizer's max_len for the longest question
    if train.doc_stride < limit:
        return []
    fix = f"raise max_seq_length to at least {train.doc_stride + SPECIAL_TOKENS + room + 1}"
    if limit > 1:
        fix = f"lower doc_stride to at most {limit - 1} or {fix}"
    message = (f"{train.doc_stride} does not fit: the tokenizer needs doc_stride < max_seq_length "
               f"({train.max_seq_length}) - {SPECIAL_TOKENS} special tokens - the question ({room} tokens kept for "
               f"{source} data) = {limit}; {fix}")
    return [(f"{where}.doc_stride", message)]


# ------------------------------------------------------------------------- model


def model_config(name: str, hf_home: str | None = None) -> dict[str, Any] | None:
    """The model's config.json as a dict, or None when it is not reachable from here."""
    path = _config_path(name, hf_home)
    if path is None:
        return None
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def unreachable_reason(name: str, hf_home: str | None = None) -> str:
    """Why ``model_config`` found no config for ``name``, in words that do not repeat the name (it is user
    text, and the dry run's output is read as a script)."""
    try:
        resolved = resolve_model_ref(name)
    except ValueError:
        return "a package: model whose package is not installed here (pip install it, or the worker checks)"
    local = Path(os.path.expanduser(resolved))
    if local.is_dir():
        if not (local / "config.json").is_file():
            return "the model directory has no config.json"
        return "the model directory's config.json is not a JSON object"
    if resolved.count("/") > 1 or resolved.startswith((".", "/", "~")):
        return "the model path does not exist here (it may on the compute node)"
    where = "the Hugging Face cache here" + (" or the profile's hf_home" if hf_home else "")
    return f"the hub model's config.json is not in {where}; download it once on the login node to check it"


@functools.lru_cache(maxsize=64)
def _config_path(name: str, hf_home: str | None) -> str | None:
    try:
        resolved = resolve_model_ref(name)
    except ValueError:
        return None  # package not installed on the login node: the worker checks
    local = Path(os.path.expanduser(resolved))
    if local.is_dir():
        return str(local / "config.json") if (local / "config.json").is_file() else None
    if resolved.count("/") > 1 or resolved.startswith((".", "/", "~")):
        return None  # a path that does not exist here: maybe on the compute node
    from huggingface_hub import try_to_load_from_cache  # light: no torch

    caches = [None] + ([os.path.join(os.path.expanduser(os.path.expandvars(hf_home)), "hub")] if hf_home else [])
    for cache in caches:
        try:
            found = try_to_load_from_cache(resolved, "config.json", cache_dir=cache)
        except ValueError:  # not a valid repo id
            return None
        if isinstance(found, str):
            return found
    return None


def model_problems(train: TrainConfig, config: dict[str, Any], where: str) -> Problems:
    """lora/ia3.target_modules, freeze.layers and padding: packed against the model's architecture."""
    found: Problems = []
    model_type = str(config.get("model_type", ""))
    name = train.model_name_or_path
    packing = packing_problem(model_type) if train.padding == "packed" and model_type else None
    if packing is not None:
        found.append((f"{where}.padding", f"{name}: {packing}"))
    known = MODULES_BY_TYPE.get(model_type)
    for section in ("lora", "ia3"):
        chosen = getattr(train, section)
        if chosen is None or known is None or chosen.placement is not None:  # a placement: placement_problems
            continue
        targets = [t for t in chosen.target_modules if t != ALL_LINEAR or section == "ia3"]
        choices = known + get_task(train.task).head_modules
        unmatched = [t for t in targets if t.rsplit(".", 1)[-1] not in choices]
        if unmatched:
            hints = [f"{t!r}{suggest(t.rsplit('.', 1)[-1], list(choices))}" for t in unmatched]
            hints = [h.replace(" (did you mean", ": did you mean").removesuffix(")") for h in hints if "did you mean" in h]
            fix = f"write target_modules: {ALL_LINEAR}" if section == "lora" else f"set {section}.placement"
            message = (f"{', '.join(map(repr, unmatched))} match no module of {name} (model_type {model_type})"
                       + (f" ({'; '.join(hints)})" if hints else "") + f"; its layers: {', '.join(known)}; or {fix}")
            found.append((f"{where}.{section}.target_modules", message))
    layers = _layer_count(config, train)
    if layers is not None and train.freeze.layers > layers:
        message = f"{train.freeze.layers} exceeds the {layers} layers of {name}: use at most {layers}"
        found.append((f"{where}.freeze.layers", message))
    return found


def _layer_count(config: dict[str, Any], train: TrainConfig) -> int | None:
    for key in LAYER_COUNT_KEYS:
        value = train.model_overrides.get(key, config.get(key))
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


# -------------------------------------------------------------------------- data


def data_problems(train: TrainConfig, where: str) -> Problems:
    """Local files present, readable and with the task's columns; hub data that fits the task."""
    data = train.data
    found: Problems = []
    task = get_task(train.task)
    needed = task.required_columns  # the columns the task's loader reads
    for key, value in (("train_file", data.train_file), ("validation_file", data.validation_file)):
        if value is not None:
            problem = file_problem(value, needed)
            if problem:
                found.append((f"{where}.data.{key}", f"{value!r}: {problem}"))
    if data.name is not None:
        path, config = hub_dataset(data.name, data.config)
        columns = HUB_COLUMNS.get((HUB_OWNERS.get(path, path), config))
        missing = [c for c in needed if columns is not None and c not in columns]
        shown = f"{data.name!r}" + (f" (config {data.config!r})" if data.config else "")
        if missing:
            message = (f"{shown} has columns {', '.join(columns or ())}, not the {', '.join(missing)} task "
                       f"{train.task} needs: use data.name: {task.hub_dataset}, or set task to the data's task")
            found.append((f"{where}.data.name", message))
        elif _glue_config_mismatch(path, config, task.hub_dataset):
            # same columns, other labels (glue/mrpc for rte: 1 means paraphrase there, not entailment)
            which = f"GLUE's {config!r} set" if config else "GLUE without a configuration"
            message = (f"{shown} is {which}, not the {train.task} task's: use data.name: {task.hub_dataset}"
                       + (f", or set task: {config}" if config else ""))
            found.append((f"{where}.data.name", message))
    return found + size_problems(train, where)


def _glue_config_mismatch(path: str, config: str | None, task_hub: str) -> bool:
    """Whether a GLUE data set (``glue``, ``nyu-mll/glue``) names a configuration other than the task's
    own hub set (``glue/<task>``); False for other data sets and tasks without a GLUE set."""
    task_path, task_config = hub_dataset(task_hub) if task_hub else (None, None)
    return HUB_OWNERS.get(path, path) == "glue" and task_path == "glue" and config != task_config


def training_rows(train: TrainConfig) -> int | None:
    """The rows the run trains on (after ``data.max_train_samples``) where their number is known here:
    generated data, local files (counted), HUB_TRAIN_ROWS; None elsewhere or for an unreadable file."""
    data, rows = train.data, None
    if data.synthetic is not None:
        rows = data.synthetic.n_train
    elif data.name is not None:
        path, config = hub_dataset(data.name, data.config)
        rows = HUB_TRAIN_ROWS.get((HUB_OWNERS.get(path, path), config))
    elif data.train_file is not None:
        try:
            rows = count_rows(data.train_file)
        except (OSError, ValueError, EOFError, lzma.LZMAError):
            return None  # the file's own problem is reported by file_problem
    if rows is None or data.max_train_samples is None:
        return rows
    return min(rows, data.max_train_samples)


def size_problems(train: TrainConfig, where: str) -> Problems:
    """``data.max_train_samples`` above the training rows, where their number is known here (generated data
    is checked by the contract)."""
    data = train.data
    if data.max_train_samples is None or data.synthetic is not None:
        return []
    rows = training_rows(train.model_copy(update={"data": data.model_copy(update={"max_train_samples": None})}))
    if rows is None or data.max_train_samples <= rows:
        return []
    source = data.name or data.train_file
    message = (f"{data.max_train_samples} is more than the {rows} training rows of {source!r}: "
               f"lower it to at most {rows}, or drop it to train on every row")
    return [(f"{where}.data.max_train_samples", message)]
