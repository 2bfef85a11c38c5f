"""Calibration of the VRAM preflight (orchestrator/vram.py): estimated against measured peak memory.

Each recipe is a ``TrainConfig`` and trains through the production path (``jobs.trainer.build_model``
+ ``build_session`` + ``train_session``: the SpecTrainer, collator, methods and optimizer a real run
uses) on synthetic SQuAD v2 features that are all ``--max-length`` tokens long (the worst case the
estimate assumes), for a few steps, at each ``--batch-sizes``. The model is a config with random
weights: ``--model DIR`` (config.json + tokenizer), by default a BERT-base-shaped config with a
stand-in vocabulary (``benchmarks.trainer.model_dir``). For each run it records
``torch.cuda.max_memory_reserved()`` (and allocated) next to the estimate's reserved bytes (the
same quantity: the CUDA context is outside both), and the CUDA context measured once
(device used minus reserved).

    python benchmarks/vram.py --out vram.json                      # every recipe at batch 8 and 32
    python benchmarks/vram.py --recipes full-fp16,lora-r8 --batch-sizes 8
    python benchmarks/vram.py --dry                                # estimates only (no GPU needed)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.contract import TrainConfig, resolve_model_ref
from orchestrator import vram

LORA = {"r": 8, "alpha": 16, "target_modules": ["query", "value"]}
# The recipes, as TrainConfig overrides (SDPA, padding to max_length, AdamW unless said).
RECIPES: dict[str, dict[str, Any]] = {
    "full-fp16": {"precision": "fp16"},
    "full-bf16": {"precision": "bf16"},
    "full-fp16-eager": {"precision": "fp16", "attention": "eager"},
    "lora-r8": {"precision": "fp16", "lora": LORA},
    "qlora-4bit": {"precision": "bf16", "lora": LORA, "quantization": {"bits": 4, "compute_dtype": "bf16"}},
    "bitfit": {"precision": "fp16", "bitfit": {}},
    "freeze-6": {"precision": "fp16", "freeze": {"layers": 6}},
    "adamw-8bit": {"precision": "fp16", "optimizer": "adamw_8bit"},
    "adamw-fused": {"precision": "fp16", "optimizer": "adamw_fused"},
    "checkpointing": {"precision": "fp16", "gradient_checkpointing": True},
    # Padding-free packing (jobs/packing.py): eager rows with 4-D block masks, and under CUDA graphs (P2's
    # knobs in benchmarks/trainer.py: the row count rounded up to PACKED_ROWS_MULTIPLE, flat fused AdamW).
    "packed": {"precision": "fp16", "padding": "packed"},
    "packed-graphs": {"precision": "fp16", "padding": "packed", "optimizer": "adamw_fused",
                      "compile": {"enabled": True, "mode": "reduce-overhead"}},
}
# The same recipes on a distilbert-base-shaped model (6 layers, no segment embeddings, q_lin/v_lin).
DISTILBERT = "distilbert-"
for _name in ("full-fp16", "lora-r8", "packed"):
    RECIPES[DISTILBERT + _name] = dict(RECIPES[_name])
RECIPES[DISTILBERT + "lora-r8"]["lora"] = {**LORA, "target_modules": ["q_lin", "v_lin"]}
TOLERANCE = 0.15  # issue 13: each estimate within 15% of the measured peak reserved


def train_config(recipe: str, batch: int, model: str, args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{
        "model_name_or_path": model, "random_init": True, "data": {"synthetic": {}},
        "max_seq_length": args.max_length, "doc_stride": args.max_length // 3, "padding": "max_length",
        "batch_size": batch, "max_steps": args.steps, "logging_steps": 50, "save_steps": 10**9,
        "dataloader_workers": 0, "seed": 0, **RECIPES[recipe]})


def estimate_row(train: TrainConfig, config: dict[str, Any], recipe: str) -> dict[str, Any]:
    value = vram.estimate(train, config)
    row: dict[str, Any] = {"recipe": recipe, "batch_size": train.batch_size, "max_seq_length": train.max_seq_length}
    if isinstance(value, vram.Unknown):
        return {**row, "estimate_reserved_mib": None, "estimate_unknown": value.reason}
    return {**row, "estimate_reserved_mib": round(value.reserved_bytes / 2**20), "estimate_total_gib":
            round(value.total_gib, 2), "estimate_phase": value.phase, "estimate_parts_mib": value.parts_mib()}


def measure(train: TrainConfig, model_path: Path, arch: str) -> dict[str, Any]:
    """Train ``train.max_steps`` steps through the production path; the peaks in MiB."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from benchmarks.trainer import release_memory, synthetic_features
    from jobs.contract import RunDir
    from jobs.tasks import TASKS
    from jobs.trainer import build_model, build_session, train_session

    release_memory()
    task = TASKS["squad_v2"]
    lengths = np.full(train.batch_size * (train.max_steps or 1), train.max_seq_length)
    features = synthetic_features(lengths, train.max_seq_length, pad=train.padding == "max_length", seed=1)
    if arch == "distilbert":  # DistilBERT has no segment embeddings
        features = features.remove_columns("token_type_ids")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = build_model(train, task)
    with tempfile.TemporaryDirectory(prefix="bench-vram-") as folder:
        session = build_session(train, RunDir(Path(folder)), model, tokenizer, task, features, warmup_steps=1)
        train_session(session, resume=False)
    row = {"measured_reserved_mib": round(torch.cuda.max_memory_reserved() / 2**20),
           "measured_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20)}
    del session, model
    release_memory()
    return row


def cuda_context_mib() -> float:
    """Device memory in use that torch's allocator does not hold: the CUDA context and kernels."""
    import torch

    if not torch.cuda.is_available():  # a peak of 0 MiB would be a figure that was never measured
        raise SystemExit("no CUDA device here: run with --dry for the estimates alone")
    torch.empty(1, device="cuda")
    free, total = torch.cuda.mem_get_info()
    return round((total - free - torch.cuda.memory_reserved()) / 2**20)


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = ("recipe", "batch_size", "estimate_reserved_mib", "measured_reserved_mib", "error_pct",
               "measured_allocated_mib", "estimate_phase", "estimate_total_gib")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join("" if row.get(name) is None else str(row[name]) for name in columns) + " |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated: " + ", ".join(RECIPES))
    parser.add_argument("--batch-sizes", default="8,32")
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--steps", type=int, default=4, help="training steps a run (the peak comes by step 2)")
    parser.add_argument("--model", help="directory with config.json and a tokenizer for the BERT-shaped recipes "
                                        "(random weights are used); default: a BERT-base-shaped config with a "
                                        "stand-in vocabulary. distilbert-* recipes use a distilbert-base shape")
    parser.add_argument("--layers", type=int, default=12, help="layers of the default model")
    parser.add_argument("--dry", action="store_true", help="estimates only: no GPU, nothing trained")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    unknown = [name for name in args.recipes.split(",") if name not in RECIPES]
    if unknown:
        raise SystemExit(f"--recipes: {', '.join(unknown)} not known; choose from {', '.join(RECIPES)}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-vram-model-") as folder:
        models = {arch: model_path_for(arch, Path(folder), args) for arch in ("bert", "distilbert")}
        configs = {arch: json.loads((path / "config.json").read_text(encoding="utf-8")) for arch, path in models.items()}
        context = None if args.dry else cuda_context_mib()
        print(f"# {time.strftime('%Y-%m-%d')} {'estimates only' if args.dry else _device()}; CUDA context "
              f"{context} MiB (estimate assumes {vram.CUDA_CONTEXT_BYTES // 2**20}); command: python "
              f"benchmarks/vram.py {' '.join(sys.argv[1:] if argv is None else argv)}", flush=True)
        for recipe in args.recipes.split(","):
            arch = "distilbert" if recipe.startswith(DISTILBERT) else "bert"
            model_path = models[arch]
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                train = train_config(recipe, batch, str(model_path), args)
                row = estimate_row(train, configs[arch], recipe)
                if not args.dry:
                    try:
                        row.update(measure(train, model_path, arch))
                    except Exception as error:  # noqa: BLE001 - one broken recipe must not hide the others
                        row["error"] = repr(error)[:300]
                    if row.get("measured_reserved_mib") and row["estimate_reserved_mib"] is not None:
                        ratio = row["estimate_reserved_mib"] / row["measured_reserved_mib"]
                        row["error_pct"] = round(100 * (ratio - 1), 1)
                rows.append(row)
                print("ROW " + json.dumps(row), flush=True)
    print_table(rows)
    compared = [row for row in rows if "error_pct" in row]
    if compared:
        within = sum(abs(row["error_pct"]) <= 100 * TOLERANCE for row in compared)
        print(f"TARGET estimates within {TOLERANCE:.0%} of the measured peak reserved: {within} of {len(compared)}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"cuda_context_mib": context, "rows": rows}, indent=1) + "\n", encoding="utf-8")
    return 0


def model_path_for(arch: str, folder: Path, args: argparse.Namespace) -> Path:
    """``--model`` for BERT-shaped recipes, else a random-weight config of ``arch``'s base shape
    (``--layers`` for BERT; DistilBERT keeps its 6)."""
    if args.model and arch == "bert":
        return Path(resolve_model_ref(args.model))
    from benchmarks.trainer import model_dir

    return model_dir(folder / arch, args.layers if arch == "bert" else 6, arch)


def _device() -> str:
    import torch

    return f"{torch.cuda.get_device_name()} torch {torch.__version__}"


if __name__ == "__main__":
    raise SystemExit(main())
