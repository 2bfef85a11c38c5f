"""Score SQuAD v2 predictions with the official metric (``jobs.tasks.squad_v2.metric``).

``python -m jobs.tasks.squad_v2 DATA.json PREDICTIONS.json [--na-prob-file NA_PROBS.json]
[--na-prob-thresh 1.0] [--out-file OUT.json]``: the official script's interface. Bad input
(a missing or malformed file) is a one-line error and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jobs.contract import write_text_atomic
from jobs.tasks.squad_v2.metric import score


def load_data_file(path: Path) -> Any:
    """An official SQuAD v2 JSON file, a JSON list of examples, or JSON Lines."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """Score PREDICTIONS.json against DATA.json; print the metrics as JSON."""
    parser = argparse.ArgumentParser(prog="python -m jobs.tasks.squad_v2", description="SQuAD v2.0 scoring")
    parser.add_argument("data_file", type=Path, help="official SQuAD v2 JSON (or flat examples)")
    parser.add_argument("pred_file", type=Path, help="JSON object: question id -> predicted text")
    parser.add_argument("--na-prob-file", type=Path, help="JSON object: question id -> no-answer probability")
    parser.add_argument("--na-prob-thresh", type=float, default=1.0, help="predict empty above this probability")
    parser.add_argument("--out-file", "-o", type=Path, help="also write the metrics here")
    args = parser.parse_args(argv)
    try:
        dataset = load_data_file(args.data_file)
        predictions = json.loads(args.pred_file.read_text(encoding="utf-8"))
        na_probs = json.loads(args.na_prob_file.read_text(encoding="utf-8")) if args.na_prob_file else None
        metrics = score(dataset, predictions, na_probs, args.na_prob_thresh)
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = json.dumps(metrics, indent=2)
    if args.out_file:
        write_text_atomic(args.out_file, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
