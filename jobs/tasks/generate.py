"""Write a task's generated data set: ``python -m jobs.tasks.generate TASK OUT_DIR``.

``--n-train`` / ``--n-eval`` / ``--seed`` as ``data.synthetic`` in a matrix; the files are
those the task's ``write_synthetic`` writes (``<task>_train.jsonl``, ``<task>_eval.jsonl``,
and any the task adds, such as SQuAD v2's official-format evaluation file). Prints the
paths as a JSON list: the training split, the evaluation split, then the other files written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from jobs.contract import SyntheticData
from jobs.tasks import TASKS


def main(argv: Sequence[str] | None = None) -> int:
    """Write a generated data set; print the paths as JSON. Exit 2 on bad sizes."""
    parser = argparse.ArgumentParser(prog="python -m jobs.tasks.generate", description="generate a small data set")
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--n-train", type=int, default=400)
    parser.add_argument("--n-eval", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n_train < 1 or args.n_eval < 1:
        print("error: --n-train and --n-eval must be at least 1", file=sys.stderr)
        return 2
    before = set(args.out_dir.iterdir()) if args.out_dir.is_dir() else set()
    splits = TASKS[args.task].write_synthetic(args.out_dir, SyntheticData(n_train=args.n_train, n_eval=args.n_eval,
                                                                          seed=args.seed))
    others = sorted(set(args.out_dir.iterdir()) - before - set(splits))
    print(json.dumps([str(path) for path in (*splits, *others)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
