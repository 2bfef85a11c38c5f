"""GPU benchmark of the shared trainer: study 1's recipes on BERT-base-sized QA models.

Every recipe is a ``TrainConfig`` and trains through the production code path
(``jobs.trainer.build_model`` + ``build_session``: the same SpecTrainer, callbacks,
collator and bucketing a real run uses); only the data are synthetic: random token
ids whose lengths follow SQuAD v2's under bert-base-uncased at 384 tokens (about
160 real tokens a feature, a tail of full 384-token overflow windows). Weights are
random (speed does not depend on them). The reference is the plain
``transformers.Trainer`` with study 1's A1 settings, run in the same process.

Numbers are steady state: the first ``--warmup`` steps (compilation, CUDA-graph
recording) are left out; samples/s and real tokens/s are over the next ``--steps``.
MFU counts the FLOPs of full fine-tuning on real tokens only:
6 x (matmul parameters) x tokens + 12 x layers x hidden x sum(length^2) (attention).

    python benchmarks/trainer.py --recipes REF,A1,REF,A1,REF,A1 --warmup 60 --steps 300
    python benchmarks/trainer.py --recipes REF,A2,A3,A4,B1,B3,C1,C2,D1,A5 --warmup 60 --steps 300
    python benchmarks/trainer.py --recipes A6,A5 --batch-size 64 --precision bf16 --warmup 30 --steps 100
    python benchmarks/trainer.py --recipes A1,A2,A3,A4,B1,B3,C1,C2,D1,A5 --batch-size 32 --memory-only

The last line of output is a summary against issue 3's targets (``TARGET ...`` lines).
Diagnostics: ``--cprofile DIR`` (host-side profile of the steady steps), a recipe with
``profile: true`` (e.g. ``A5-prof``: kernels.csv and a Chrome trace next to ``--out``),
``--smoke-run-training DIR`` (the whole run_training path on the GPU first).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import datasets
import torch
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    BertConfig,
    BertTokenizerFast,
    DataCollatorWithPadding,
    DistilBertConfig,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
)

from benchmarks.trainer_diagnostics import (
    clip_pass,
    compiled_autograd,
    extra_callbacks,
    keep_profile_files,
    smoke_run_training,
)
from jobs.contract import RunDir, TrainConfig
from jobs.model import parameter_counts
from jobs.preemption import end_loader_workers
from jobs.profiler import StepProfiler, TokenCounter
from jobs.tasks import TASKS
from jobs.trainer import build_model, build_session, train_session

COMPILE = {"enabled": True, "backend": "inductor"}
# Study 1's rows (DESIGN.md) as TrainConfig overrides of the A1 baseline, plus A5: our
# fastest accuracy-neutral full fine-tuning recipe (same maths as A1 up to padding).
RECIPES: dict[str, dict[str, Any]] = {
    "A1": {},
    "A2": {"attention": "sdpa"},
    "A3": {"attention": "sdpa", "compile": COMPILE},
    "A4": {"attention": "sdpa", "compile": COMPILE, "padding": "dynamic", "pad_to_multiple_of": 8, "bucketing": True},
    "B1": {"attention": "sdpa", "compile": COMPILE,
           "lora": {"r": 8, "alpha": 16, "target_modules": ["query", "key", "value"]}},
    "B3": {"attention": "sdpa", "compile": COMPILE, "freeze": {"layers": 10}, "learning_rate": 5e-5},
    "C1": {"attention": "sdpa", "compile": COMPILE, "optimizer": "adamw_8bit"},
    "C2": {"attention": "sdpa", "compile": COMPILE, "gradient_checkpointing": True},
    "D1": {"attention": "sdpa", "compile": {"enabled": True, "backend": "aot_eager"}},
    "A5": {"attention": "sdpa", "compile": {"enabled": True, "mode": "reduce-overhead"}, "padding": "dynamic",
           "pad_to_multiple_of": 128, "bucketing": True, "optimizer": "adamw_fused"},
    "A5-default": {"attention": "sdpa", "compile": COMPILE, "padding": "dynamic", "pad_to_multiple_of": 64,
                   "bucketing": True, "optimizer": "adamw_fused"},
}
# Padding-free packing (jobs/packing.py): the batch's features back to back in rows with block-diagonal
# attention; P1 compiled by inductor, P2 also under CUDA graphs (one graph a distinct row count).
# P1/P2 keep the block mask (SDPA); P3 is P2 with the variable-length flash attention (packing_attention:
# varlen, the default on a GPU in fp16/bf16), which skips the pairs across features the mask's kernel computes.
RECIPES["P1"] = {"attention": "sdpa", "compile": COMPILE, "padding": "packed", "optimizer": "adamw_fused",
                 "packing_attention": "mask"}
RECIPES["P2"] = {**RECIPES["P1"], "compile": {"enabled": True, "mode": "reduce-overhead"}}
RECIPES["P3"] = {**RECIPES["P2"], "packing_attention": "varlen"}
RECIPES["P3-kprof"] = RECIPES["P3"]
# LoRA r=8 on the attention's query/key/value: the fastest recipes with an adapter.
RECIPES["L5"] = {**RECIPES["A5"], "lora": {"r": 8, "alpha": 16, "target_modules": ["query", "key", "value"]}}
RECIPES["LP2"] = {**RECIPES["P2"], "lora": RECIPES["L5"]["lora"]}
# Short sentences (SST-2, ~25 tokens): CUDA graphs with padding to a multiple of 16, not 128.
RECIPES["A5-16"] = {**RECIPES["A5"], "pad_to_multiple_of": 16}
RECIPES["L5-16"] = {**RECIPES["L5"], "pad_to_multiple_of": 16}
# Diagnostics: one knob away from a recipe.
RECIPES["A1-w0"] = {**RECIPES["A1"], "dataloader_workers": 0}
RECIPES["A5-w0"] = {**RECIPES["A5"], "dataloader_workers": 0}
RECIPES["A5-prof"] = {**RECIPES["A5"], "profile": True}
RECIPES["A5-p64"] = {**RECIPES["A5"], "pad_to_multiple_of": 64}
RECIPES["A5-p32"] = {**RECIPES["A5"], "pad_to_multiple_of": 32}  # 12 shapes at 384 tokens: less padding, more graphs
RECIPES["A5-adamw"] = {**RECIPES["A5"], "optimizer": "adamw"}
# "-kprof": the recipe with a torch.profiler window over 3 steps right after --warmup (steady state, not
# the compile and graph recording that `profile: true`'s window of steps 4-6 sees); kernels.csv beside --out.
RECIPES["A5-kprof"], RECIPES["P2-kprof"] = RECIPES["A5"], RECIPES["P2"]
RECIPES["A5-p32-kprof"] = RECIPES["A5-p32"]
# "-ca": the recipe with compiled autograd (trainer_diagnostics.compiled_autograd): an experiment.
RECIPES["A5-ca"] = RECIPES["A5"]
RECIPES["A4-64"] = {**RECIPES["A4"], "pad_to_multiple_of": 64}  # A4 with at most 6 shapes at 384 tokens
# "-nowalks": the recipe with the Trainer's own per-step train() / zero_grad() walks (jobs.step_walks off).
for _name in ("A2", "A5", "A5-16", "L5-16"):
    RECIPES[f"{_name}-nowalks"] = RECIPES[_name]
# "-clippass": the flat optimizer's clip factor applied by a pass of its own, as before it joined the fused step.
for _name in ("A5", "A5-p32", "A5-16"):
    RECIPES[f"{_name}-clippass"] = RECIPES[_name]
# Large batches are bound by arithmetic, not launches: no CUDA graphs, tight padding.
RECIPES["A6"] = {**RECIPES["A5-default"], "pad_to_multiple_of": 16}
ACCURACY_NEUTRAL_FULL_FT = ("A1", "A2", "A3", "A4", "D1", "A5", "A5-default", "A5-p64", "A6", "P1", "P2", "P3", "A5-16")
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "T4": 65e12}  # dense fp16/bf16 tensor cores
T4_USABLE_MIB = 15360 - 400  # a 16 GB T4 shows 15,360 MiB; leave room for the CUDA context


def squad_like_lengths(n: int, max_length: int, seed: int) -> np.ndarray:
    """Feature lengths like SQuAD v2 train under bert-base-uncased at 384/128: a
    log-normal body (median ~145) and ~3% full-length overflow windows; mean ~160."""
    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.normal(math.log(140), 0.38, n)).round().astype(int)
    lengths[rng.random(n) < 0.03] = max_length
    return np.clip(lengths, 24, max_length)


def synthetic_features(lengths: np.ndarray, max_length: int, pad: bool, seed: int) -> datasets.Dataset:
    """QA training features with random tokens: [CLS] question [SEP] context [SEP]."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[Any]] = {key: [] for key in
                                  ("input_ids", "token_type_ids", "attention_mask", "start_positions", "end_positions", "length")}
    for length in lengths.tolist():
        width = max_length if pad else length
        ids = rng.integers(1000, 30000, length)
        ids[0], ids[-1], ids[min(12, length - 2)] = 101, 102, 102
        types = [0] * min(13, length - 1) + [1] * (length - min(13, length - 1))
        start = int(rng.integers(14, length - 1)) if length > 20 and rng.random() < 0.66 else 0
        end = min(start + int(rng.integers(0, 5)), length - 2) if start else 0
        rows["input_ids"].append(ids.tolist() + [0] * (width - length))
        rows["token_type_ids"].append(types + [0] * (width - length))
        rows["attention_mask"].append([1] * length + [0] * (width - length))
        rows["start_positions"].append(start)
        rows["end_positions"].append(end)
        rows["length"].append(length)
    return datasets.Dataset.from_dict(rows)


def sst2_like_lengths(n: int, max_length: int, seed: int) -> np.ndarray:
    """Sentence lengths like SST-2 train under bert-base-uncased with [CLS]/[SEP]: mostly short phrases
    (median ~20 tokens, mean ~25 with the long tail of full sentences, at most 66 in the real set)."""
    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.normal(math.log(20), 0.6, n)).round().astype(int)
    return np.clip(lengths, 4, min(max_length, 66))


def classification_features(lengths: np.ndarray, max_length: int, pad: bool, seed: int) -> datasets.Dataset:
    """Single-sentence classification features with random tokens: [CLS] sentence [SEP], label 0/1."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[Any]] = {key: [] for key in ("input_ids", "token_type_ids", "attention_mask", "labels", "length")}
    for length in lengths.tolist():
        width = max_length if pad else length
        ids = rng.integers(1000, 30000, length)
        ids[0], ids[-1] = 101, 102
        rows["input_ids"].append(ids.tolist() + [0] * (width - length))
        rows["token_type_ids"].append([0] * width)
        rows["attention_mask"].append([1] * length + [0] * (width - length))
        rows["labels"].append(int(rng.integers(0, 2)))
        rows["length"].append(length)
    return datasets.Dataset.from_dict(rows)


def model_dir(folder: Path, layers: int, arch: str = "bert") -> Path:
    """A bert-base-uncased- (or distilbert-base-uncased-) shaped config and a stand-in uncased WordPiece
    vocabulary."""
    config = BertConfig(num_hidden_layers=layers) if arch == "bert" else DistilBertConfig(n_layers=layers)
    config.save_pretrained(folder)
    specials = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = specials + [f"tok{i}" for i in range(30522 - len(specials))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


def flops_per_sample(model: torch.nn.Module, lengths: np.ndarray) -> float:
    """Full fine-tuning FLOPs of one average feature, counted on real tokens."""
    matmul = sum(m.weight.numel() for name, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and "pooler" not in name)
    config = model.config
    layers = getattr(config, "num_hidden_layers", None) or config.n_layers
    hidden = getattr(config, "hidden_size", None) or config.dim
    attention = 12 * layers * hidden * float(np.mean(lengths.astype(float) ** 2))
    return 6 * matmul * float(np.mean(lengths)) + attention


def peak_flops() -> float | None:
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    return next((value for key, value in PEAK_FLOPS.items() if key in name), None)


def row_from(name: str, section: dict[str, Any], memory: dict[str, Any], batch: int, flops_sample: float,
             params: dict[str, int]) -> dict[str, Any]:
    samples_per_s = section.get("steady_samples_per_s") or 0.0
    peak = peak_flops()
    return {
        "recipe": name, "batch_size": batch,
        "samples_per_s": samples_per_s, "tokens_per_s": section.get("steady_tokens_per_s"),
        "step_ms": 1000 * (section.get("steady_step_time_s") or 0.0),
        "compile_s": section.get("compile_time_s"),
        "mfu_pct": 100 * samples_per_s * flops_sample / peak if peak else None,
        "peak_alloc_mib": memory.get("peak_allocated_mib"), "peak_reserved_mib": memory.get("peak_reserved_mib"),
        "step_peak_alloc_mib": memory.get("step_peak_allocated_mib"),
        "step_peak_reserved_mib": memory.get("step_peak_reserved_mib"),
        "trainable": params["trainable"],
    }


def base_config(args: argparse.Namespace, model_path: Path) -> dict[str, Any]:
    return {
        "model_name_or_path": str(model_path), "random_init": True, "data": {"synthetic": {}}, "task": args.task,
        "max_seq_length": args.max_length,
        **({"doc_stride": args.max_length // 3} if args.task == "squad_v2" else {}), "attention": "eager", "precision": args.precision,
        "padding": "max_length", "batch_size": args.batch_size, "learning_rate": 3e-5,
        "max_steps": args.warmup + args.steps, "logging_steps": 50, "save_steps": 10**9,
        "dataloader_workers": 2, "seed": 0,
    }


def run_recipe(name: str, args: argparse.Namespace, model_path: Path, data: dict[bool, datasets.Dataset],
               lengths: np.ndarray) -> dict[str, Any]:
    """Train one recipe through the production path; its steady-state row."""
    recipe = dict(RECIPES[name])
    if args.arch == "distilbert" and "lora" in recipe:  # DistilBERT's attention projections
        recipe["lora"] = {**recipe["lora"], "target_modules": ["q_lin", "k_lin", "v_lin"]}
    train = TrainConfig(**{**base_config(args, model_path), **recipe})
    task = TASKS[args.task]
    tokenizer = BertTokenizerFast.from_pretrained(model_path)
    model = build_model(train, task)
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as folder:
        run_dir = RunDir(Path(folder))
        session = build_session(train, run_dir, model, tokenizer, task, data[train.padding != "max_length"],
                                warmup_steps=args.warmup, extra_callbacks=extra_callbacks(name, args))
        session.trainer.step_walks = not name.endswith("-nowalks")
        try:
            with compiled_autograd(name.endswith("-ca")), clip_pass(name.endswith("-clippass")):
                section = train_session(session, resume=False)
        finally:  # as run_training does: shielded workers ignore the SIGTERM that would end them at exit
            end_loader_workers()
        memory = session.profiler.memory
        keep_profile_files(name, run_dir.path, args)
    flops = flops_per_sample(model, lengths)
    return row_from(name, section, memory, args.batch_size, flops, parameter_counts(model))


def run_reference(args: argparse.Namespace, model_path: Path, data: dict[bool, datasets.Dataset],
                  lengths: np.ndarray) -> dict[str, Any]:
    """The plain transformers Trainer, study 1's A1 settings, default everything else."""
    torch.manual_seed(0)
    config = (BertConfig if args.arch == "bert" else DistilBertConfig).from_pretrained(model_path)
    if args.task == "squad_v2":
        model = AutoModelForQuestionAnswering.from_config(config, attn_implementation="eager")
        features, collator = data[False].remove_columns(["length"]), default_data_collator
    else:  # the Trainer's default for a tokenizer: pad each batch to its longest sentence
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
        features = data[True].remove_columns(["length"])
        collator = DataCollatorWithPadding(BertTokenizerFast.from_pretrained(model_path))

    counter = TokenCounter()
    profiler = StepProfiler(counter, warmup_steps=args.warmup)
    with tempfile.TemporaryDirectory(prefix="bench-ref-") as folder:
        training_args = TrainingArguments(
            output_dir=folder, per_device_train_batch_size=args.batch_size, learning_rate=3e-5,
            fp16=args.precision == "fp16", bf16=args.precision == "bf16", max_steps=args.warmup + args.steps,
            save_strategy="no", report_to="none", logging_steps=50, disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=training_args, train_dataset=features, data_collator=collator,
                          callbacks=[_CountSamples(counter, args.batch_size), profiler, *extra_callbacks("REF", args)])
        trainer.train()
    timing = profiler.timing()
    # No token counter inside the plain Trainer: features are drawn uniformly, so use the mean length.
    timing["steady_tokens_per_s"] = timing.get("steady_samples_per_s", 0.0) * float(np.mean(lengths))
    return row_from("REF", timing, profiler.memory, args.batch_size, flops_per_sample(model, lengths),
                    parameter_counts(model))


class _CountSamples(TrainerCallback):
    """Counts samples for the plain Trainer (ours counts them in its training step)."""

    def __init__(self, counter: TokenCounter, batch_size: int) -> None:
        self.counter, self.batch_size = counter, batch_size

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.counter.samples += self.batch_size


def release_memory() -> None:
    """Forget compiled graphs and cached blocks between recipes."""
    gc.collect()
    torch._dynamo.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = [("recipe", "{}"), ("batch_size", "{}"), ("samples_per_s", "{:.1f}"), ("tokens_per_s", "{:.0f}"),
               ("step_ms", "{:.2f}"), ("compile_s", "{:.1f}"), ("mfu_pct", "{:.1f}"), ("step_peak_alloc_mib", "{:.0f}"),
               ("step_peak_reserved_mib", "{:.0f}"), ("peak_alloc_mib", "{:.0f}"), ("peak_reserved_mib", "{:.0f}"),
               ("trainable", "{}"), ("vs_ref", "{:.2f}x"), ("fits_t4", "{}")]
    references = [row["samples_per_s"] for row in rows if row["recipe"] == "REF" and "error" not in row]
    reference = statistics.median(references) if references else None
    print("| " + " | ".join(name for name, _ in columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        if reference:
            row["vs_ref"] = row["samples_per_s"] / reference
        cells = []
        for name, fmt in columns:
            value = row.get(name)
            cells.append("" if value is None else fmt.format(value))
        print("| " + " | ".join(cells) + " |")


def summarize_targets(rows: list[dict[str, Any]]) -> None:
    """Issue 3's targets, from the medians of repeated recipes."""
    speeds: dict[str, list[float]] = {}
    for row in rows:
        if "error" not in row:
            speeds.setdefault(row["recipe"], []).append(row["samples_per_s"])
    median = {name: statistics.median(values) for name, values in speeds.items()}
    reference = median.get("REF")
    if reference:
        spread = f"{min(speeds['REF']):.1f}..{max(speeds['REF']):.1f}"
        print(f"TARGET reference: median {reference:.1f} samples/s over {len(speeds['REF'])} runs ({spread})")
        if "A1" in median:
            print(f"TARGET our A1 / reference = {median['A1'] / reference:.3f} (target within 0.95..1.05)")
        best = max((name for name in median if name in ACCURACY_NEUTRAL_FULL_FT), key=median.get, default=None)
        if best is not None:
            print(f"TARGET best accuracy-neutral full fine-tuning: {best} = {median[best] / reference:.2f}x (target 3x)")
    mfu = [row for row in rows if row.get("mfu_pct")]
    if mfu:
        top = max(mfu, key=lambda row: row["mfu_pct"])
        print(f"TARGET best MFU on real tokens: {top['recipe']} {top['mfu_pct']:.1f}% at batch {top['batch_size']}")
    fits = [f"{row['recipe']}={'yes' if row['fits_t4'] else 'no'}" for row in rows if "fits_t4" in row]
    if fits:
        print("TARGET fits a 15 GB T4 at this batch size: " + ", ".join(fits))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", default="REF,A1,A2,A3,A4,B1,B3,C1,C2,D1,A5",
                        help="comma-separated: REF (plain Trainer) and " + ", ".join(RECIPES))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--task", choices=["squad_v2", "sst2"], default="squad_v2",
                        help="sst2: single-sentence classification batches of SST-2's lengths (max length 128)")
    parser.add_argument("--arch", choices=["bert", "distilbert"], default="bert",
                        help="distilbert: distilbert-base-shaped (6 layers unless --layers)")
    parser.add_argument("--precision", choices=["fp16", "bf16", "fp32"], default="fp16")
    parser.add_argument("--max-length", type=int, help="default: 384 (squad_v2), 128 (sst2)")
    parser.add_argument("--layers", type=int, help="default: 12 (bert), 6 (distilbert)")
    parser.add_argument("--warmup", type=int, default=40, help="steps left out of the steady-state numbers")
    parser.add_argument("--steps", type=int, default=300, help="steps measured")
    parser.add_argument("--features", type=int, default=8192)
    parser.add_argument("--memory-only", action="store_true",
                        help="worst case for memory: every feature full length; a few steps (T4 fit check)")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--cprofile", type=Path, metavar="DIR", help="cProfile the steady-state steps into DIR")
    parser.add_argument("--smoke-run-training", type=Path, metavar="DIR",
                        help="first run the whole run_training path on small synthetic data into DIR")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.max_length = args.max_length or (384 if args.task == "squad_v2" else 128)
    args.layers = args.layers or (12 if args.arch == "bert" else 6)
    if args.memory_only:
        args.warmup, args.steps = 1, 2
    shaped = squad_like_lengths if args.task == "squad_v2" else sst2_like_lengths
    lengths = shaped(args.features, args.max_length, seed=0)
    if args.memory_only:
        lengths[:] = args.max_length
    build = synthetic_features if args.task == "squad_v2" else classification_features
    data = {pad_free: build(lengths, args.max_length, pad=not pad_free, seed=1) for pad_free in (False, True)}
    if args.arch == "distilbert":  # DistilBERT has no segment embeddings
        data = {key: value.remove_columns(["token_type_ids"]) for key, value in data.items()}
    print(f"# {time.strftime('%Y-%m-%d')} {torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'} "
          f"torch {torch.__version__}; features: mean length {lengths.mean():.1f} of {args.max_length}, "
          f"batch {args.batch_size}, {args.precision}, {args.task}, {args.arch} x{args.layers}; command: python benchmarks/trainer.py {' '.join(sys.argv[1:])}",
          flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-model-") as folder:
        model_path = model_dir(Path(folder), args.layers, args.arch)
        if args.smoke_run_training:
            smoke_run_training(args.smoke_run_training, model_dir(Path(folder) / "small", 2))
        for name in args.recipes.split(","):
            started = time.perf_counter()
            try:
                row = run_reference(args, model_path, data, lengths) if name == "REF" else \
                    run_recipe(name, args, model_path, data, lengths)
            except Exception as error:  # noqa: BLE001 - one broken recipe must not hide the others
                row = {"recipe": name, "batch_size": args.batch_size, "samples_per_s": 0.0, "error": repr(error)[:300]}
            row["wall_s"] = time.perf_counter() - started
            if args.memory_only and row.get("peak_reserved_mib") is not None:
                row["fits_t4"] = row["peak_reserved_mib"] <= T4_USABLE_MIB
            rows.append(row)
            print("ROW " + json.dumps(row), flush=True)
            release_memory()
    print_table(rows)
    summarize_targets(rows)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
