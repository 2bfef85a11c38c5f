"""Shared test setup: no network for Hugging Face, a fixed SCRATCH for the example matrices."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("SCRATCH", "/tmp/orchestrate-test-scratch")
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
