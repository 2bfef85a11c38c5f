"""Probe: one training step of a BERT-base-shaped QA model on padded vs packed batches (jobs/packing.py).

Not the trainer: a bare loop (forward, loss, backward, fused AdamW), the same features in the same order for
every variant, so the figure isolates the batch layout and the attention path. Lengths follow SQuAD v2's at 384
tokens (benchmarks/trainer.py's sampler). MFU counts real tokens only, as benchmarks/trainer.py does.

    python benchmarks/packing_probe.py --batch-size 64 --steps 60 --warmup 15
    python benchmarks/packing_probe.py --check-varlen   # the flash variable-length path against the block mask
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import BertConfig, BertForQuestionAnswering

from benchmarks.trainer import PEAK_FLOPS, squad_like_lengths
from jobs import packing

MAX_LENGTH = 384


def features(lengths: np.ndarray, seed: int) -> list[dict[str, list[int]]]:
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths.tolist():
        ids = rng.integers(1000, 30000, n).tolist()
        ids[0] = 101
        out.append({"input_ids": ids, "token_type_ids": [0] * 13 + [1] * (n - 13),
                    "start": int(rng.integers(0, n)), "end": int(rng.integers(0, n))})
    return out


def padded_batch(chunk: list[dict], device: str) -> dict[str, torch.Tensor]:
    width = max(len(f["input_ids"]) for f in chunk)
    ids = torch.zeros(len(chunk), width, dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for i, f in enumerate(chunk):
        n = len(f["input_ids"])
        ids[i, :n], types[i, :n], mask[i, :n] = torch.tensor(f["input_ids"]), torch.tensor(f["token_type_ids"]), 1
    return {k: v.to(device) for k, v in {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}.items()}


def block_mask(batch: dict[str, torch.Tensor], row_len: int):
    from torch.nn.attention.flex_attention import create_block_mask

    document = torch.zeros(batch["input_ids"].shape, dtype=torch.long, device=batch["input_ids"].device)
    for i, (row, offset, length) in enumerate(zip(batch["feature_row"].tolist(), batch["feature_offset"].tolist(),
                                                  batch["feature_length"].tolist())):
        document[row, offset:offset + length] = i + 1

    def same_document(b, h, q, k):
        return document[b, q] == document[b, k]

    return create_block_mask(same_document, document.shape[0], None, row_len, row_len, device=document.device)


def flops_per_token_matmul(model: torch.nn.Module) -> float:
    return 6 * sum(m.weight.numel() for name, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and "pooler" not in name)


def run(variant: str, model: torch.nn.Module, batches: list[list[dict]], row_len: int, min_rows: int,
        warmup: int, steps: int, device: str) -> dict[str, float]:
    compiled = variant.endswith("+compile")
    packed = variant.startswith("packed")
    flex = "-flex" in variant  # flex_attention with a document block mask (no attention dropout: a speed probe)
    no_mask = "-nomask" in variant  # features see each other: wrong maths, the upper bound masking costs against
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device == "cuda")
    forward = torch.compile(model) if compiled else model
    times = []
    real_tokens = 0
    attention_flops = 0.0
    for index, chunk in enumerate(batches[:warmup + steps]):
        starts = torch.tensor([f["start"] for f in chunk], device=device)
        ends = torch.tensor([f["end"] for f in chunk], device=device)
        if packed:
            batch = {k: v.to(device) for k, v in packing.pack(chunk, row_len, min_rows).items()}
            if no_mask:
                batch["attention_mask"] = None
            if flex:
                batch["attention_mask"] = block_mask(batch, row_len)
        else:
            batch = padded_batch(chunk, device)
        torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            if packed:
                start, end = packing.qa_logits(forward, batch)
                loss = packing.qa_loss(start.float(), end.float(), starts, ends)
            else:
                loss = forward(**batch, start_positions=starts, end_positions=ends).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if index >= warmup:
            times.append(time.perf_counter() - started)
            lengths = [len(f["input_ids"]) for f in chunk]
            real_tokens += sum(lengths)
            attention_flops += 12 * model.config.num_hidden_layers * model.config.hidden_size * sum(n * n for n in lengths)
    total = sum(times)
    flops = flops_per_token_matmul(model) * real_tokens + attention_flops
    peak = next((v for k, v in PEAK_FLOPS.items() if k in torch.cuda.get_device_name()), None)
    samples = steps * len(batches[0])
    return {"samples_per_s": samples / total, "step_ms_median": 1000 * statistics.median(times),
            "step_ms_mean": 1000 * total / len(times), "mfu_real_tokens": flops / total / peak if peak else float("nan")}


def check_varlen(batch_size: int, row_len: int, device: str) -> int:
    """jobs.packing's variable-length attention (the flash kernel: CUDA, bf16) against the block mask on the same
    packed batch of a random BERT-base QA model: per-feature logits in evaluation, and a training step's
    gradients (dropout off, so both paths compute the same function). Prints the largest differences beside
    the bf16 noise of the mask path itself (the same batch with the features in reverse order); exit 1 when
    the varlen path is further from the mask than that noise allows (4x)."""
    torch.manual_seed(0)
    config = BertConfig(attn_implementation="sdpa", attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0)
    model = BertForQuestionAnswering(config).to(device, torch.bfloat16)
    feats = features(squad_like_lengths(batch_size, MAX_LENGTH, seed=1), seed=1)
    batch = {k: v.to(device) for k, v in packing.pack(feats, row_len).items()}
    reverse = {k: v.to(device) for k, v in packing.pack(feats[::-1], row_len).items()}
    starts = torch.tensor([f["start"] for f in feats], device=device)
    ends = torch.tensor([f["end"] for f in feats], device=device)

    def step(use_varlen: bool, inputs: dict[str, torch.Tensor], reverse: bool) -> tuple[torch.Tensor, dict]:
        order = torch.arange(len(feats), device=device)
        order = order.flip(0) if reverse else order
        model.zero_grad(set_to_none=True)
        model.config._attn_implementation = "sdpa"
        if use_varlen:
            packing.use_varlen_attention(model)
        start, end = packing.qa_logits(model, inputs)
        loss = packing.qa_loss(start.float(), end.float(), starts[order], ends[order])
        loss.backward()
        grads = {name: param.grad.float().clone() for name, param in model.named_parameters() if param.grad is not None}
        logits = torch.where(torch.isinf(start), 0.0, start.float())[order]
        return logits, grads

    mask_logits, mask_grads = step(False, batch, False)
    noise_logits, noise_grads = step(False, reverse, True)
    varlen_logits, varlen_grads = step(True, batch, False)

    def grad_gap(a: dict, b: dict) -> float:
        return max(float((a[k] - b[k]).norm() / (b[k].norm() + 1e-12)) for k in b)

    noise = float((noise_logits - mask_logits).abs().max()), grad_gap(noise_grads, mask_grads)
    gap = float((varlen_logits - mask_logits).abs().max()), grad_gap(varlen_grads, mask_grads)
    print(f"{torch.cuda.get_device_name()}: {batch_size} features in {batch['input_ids'].shape[0]} rows of {row_len}; "
          f"largest per-feature start-logit difference: varlen vs mask {gap[0]:.3g}, mask vs mask reordered "
          f"{noise[0]:.3g}; largest relative gradient difference (a parameter): varlen {gap[1]:.3g}, reordered "
          f"{noise[1]:.3g}", flush=True)
    return 0 if gap[0] <= 4 * max(noise[0], 1e-3) and gap[1] <= 4 * max(noise[1], 1e-3) else 1


def time_attention_kernels(batch_size: int, row_len: int, device: str, repeats: int = 50) -> None:
    """Forward + backward of the attention alone (BERT-base heads, bf16, dropout 0.1) on one packed batch's
    q/k/v: SDPA with the block mask, flash variable-length, cuDNN variable-length (where this torch has it)."""
    import torch.nn.functional as F

    feats = features(squad_like_lengths(batch_size, MAX_LENGTH, seed=2), seed=2)
    batch = packing.pack(feats, row_len, rows_multiple=8)
    rows, heads, dim = batch["input_ids"].shape[0], 12, 64
    cu = batch["cu_seqlens"].to(device)
    mask = batch["attention_mask"].to(device)
    q, k, v = (torch.randn(rows, heads, row_len, dim, device=device, dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))

    def flat(t: torch.Tensor) -> torch.Tensor:
        return t.transpose(1, 2).reshape(rows * row_len, heads, dim)

    kernels = {
        "sdpa+mask": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.1),
        "flash varlen": lambda: torch.ops.aten._flash_attention_forward(
            flat(q), flat(k), flat(v), cu, cu, row_len, row_len, 0.1, False, False)[0],
        "cudnn varlen": lambda: torch.ops.aten._cudnn_attention_forward(
            flat(q), flat(k), flat(v), None, cu, cu, row_len, row_len, True, 0.1, False, False)[0],
    }
    for name, kernel in kernels.items():
        try:
            for _ in range(3):
                kernel().float().sum().backward()
            torch.cuda.synchronize()
            began = time.perf_counter()
            for _ in range(repeats):
                kernel().float().sum().backward()
            torch.cuda.synchronize()
            print(f"attention {name}: {(time.perf_counter() - began) / repeats * 1e3:.3f} ms forward+backward "
                  f"({rows} rows x {row_len}, {len(feats)} features)", flush=True)
        except Exception as exc:  # noqa: BLE001 - a kernel this torch lacks is a line of output, not the end
            print(f"attention {name}: unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--row-len", type=int, default=512)
    parser.add_argument("--variants", default="padded,packed,padded+compile,packed+compile")
    parser.add_argument("--check-varlen", action="store_true", help="only compare the varlen path with the mask")
    args = parser.parse_args()
    device = "cuda"
    if args.check_varlen:
        time_attention_kernels(args.batch_size, args.row_len, device)
        return check_varlen(args.batch_size, args.row_len, device)
    n = args.batch_size * (args.warmup + args.steps)
    feats = features(squad_like_lengths(n, MAX_LENGTH, seed=0), seed=0)
    batches = [feats[i:i + args.batch_size] for i in range(0, n, args.batch_size)]
    min_rows = max(packing.place([len(f["input_ids"]) for f in b], args.row_len).num_rows for b in batches)
    fill = statistics.mean(packing.place([len(f["input_ids"]) for f in b], args.row_len, min_rows).fill for b in batches)
    width = statistics.mean(max(len(f["input_ids"]) for f in b) for b in batches)
    real = statistics.mean(statistics.mean(len(f["input_ids"]) for f in b) for b in batches)
    print(f"{torch.cuda.get_device_name()}; batch {args.batch_size}; rows {min_rows} x {args.row_len} (fill "
          f"{fill:.1%}); padded width mean {width:.0f} (fill {real / width:.1%})", flush=True)
    for variant in args.variants.split(","):
        torch.manual_seed(0)
        implementation = "flex_attention" if "-flex" in variant else "sdpa"
        config = BertConfig(attn_implementation=implementation)
        if "-flex" in variant or "-nodrop" in variant:
            config.attention_probs_dropout_prob = 0.0
        model = BertForQuestionAnswering(config).to(device)
        figures = run(variant, model, batches, args.row_len, min_rows, args.warmup, args.steps, device)
        print(variant, " ".join(f"{k}={v:.4g}" for k, v in figures.items()), flush=True)
        del model
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
