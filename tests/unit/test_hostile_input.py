"""A corpus of bad and hostile matrices: each gets a clear error and exit 2 through the real
CLI, nothing is written or submitted, and no matrix value can run a command."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from orchestrator.cli import main

GOOD = """
experiment: hostile
root: {root}
cluster: example-t4
defaults: {{precision: fp16}}
runs:
  A1: {{attention: eager}}
"""

CORPUS = {
    "syntax": ("runs:\n  A1: {attention: eager\n", "YAML syntax error at line"),
    "not-a-mapping": ("- just\n- a list\n", "the matrix must be a mapping"),
    "wrong-type": (GOOD.replace("A1: {{attention: eager}}", "A1: {{batch_size: [8]}}"), "runs.A1.batch_size"),
    "unknown-key": (GOOD.replace("precision: fp16", "precison: fp16"), "defaults.precison: unknown key (did you mean 'precision'?)"),
    "duplicate-run": (GOOD + "  A1: {{attention: sdpa}}\n", "runs.A1: duplicate key"),
    "cycle": (GOOD + "  B1: {{extends: B2}}\n  B2: {{extends: B1}}\n", "extends cycle: B1 -> B2 -> B1"),
    "missing-parent": (GOOD + "  B1: {{extends: nope}}\n", "runs.B1.extends: 'nope' is not a run"),
    "empty-axis": (GOOD + "grid: {{seed: []}}\n", "grid.seed: empty axis"),
    "unknown-profile": (GOOD.replace("example-t4", "mars"), "cluster: 'mars' is not a cluster profile"),
    "path-traversal-run": (GOOD + "  ../../etc: {{}}\n", "runs.../../etc: '../../etc' is not a safe run name"),
    "path-traversal-experiment": (GOOD.replace("experiment: hostile", "experiment: ../../x"), "experiment: '../../x' is not a safe name"),
    "shell-in-run-name": (GOOD + "  'x;touch PWNED': {{}}\n", "is not a safe run name"),
    "newline-in-account": (GOOD + "resources: {{account: \"lab\\n#SBATCH --wrap=touch PWNED\"}}\n", "resources.account"),
    "shell-in-partition": (GOOD + "resources: {{partition: \"t4$(touch PWNED)\"}}\n", "is not a valid SLURM name"),
    "huge-grid": (GOOD + "grid: {{seed: [" + ",".join(map(str, range(1000))) + "], learning_rate: ["
                  + ",".join(f"{i}.0e-6" for i in range(1, 101)) + "]}}\n", "expands to more than 5000 runs"),
    "unicode-name": (GOOD + "  Ä1: {{}}\n", "is not a safe run name"),
    "bad-float": (GOOD.replace("precision: fp16", "learning_rate: fast"), "defaults.learning_rate: 'fast'"),
    "negative": (GOOD.replace("precision: fp16", "batch_size: -4"), "defaults.batch_size: -4: Input should be greater than or equal to 1"),
    "bf16-on-t4": (GOOD.replace("precision: fp16", "precision: bf16"), "precision bf16 is not supported on Tesla T4"),
    "run-body-list": (GOOD + "  B1: [1, 2]\n", "runs.B1: must be a mapping of settings"),
    "run-grid-int": (GOOD + "  B1: {{grid: 4, resources: 3}}\n", "runs.B1.grid: must be a mapping"),
    "bool-as-number": (GOOD.replace("precision: fp16", "batch_size: true"), "defaults.batch_size: True: Input should be a valid integer"),
    "qlora-on-cpu": (GOOD + "  Q: {{precision: fp32, lora: {{r: 4}}, quantization: {{bits: 4}}, resources: {{partition: cpu, gpus: 0}}}}\n",
                     "quantization (QLoRA / 8-bit base) needs CUDA"),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_bad_matrix_exit_2_nothing_written(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    text, expected = CORPUS[name]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.yaml").write_text(textwrap.dedent(text).format(root=tmp_path / "scratch")
                                     if "{root}" in text else text)
    started = time.time()
    code = main(["submit", "m.yaml"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err, err
    assert err.startswith(("error: m.yaml: invalid matrix", "error: ")), err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.yaml"], "nothing may be written"
    assert not Path("PWNED").exists()
    assert time.time() - started < 10


def test_hostile_values_never_reach_a_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    text = textwrap.dedent(GOOD).format(root=tmp_path / "scratch") + (
        "  B1: {description: \"$(touch PWNED) `touch PWNED` ; touch PWNED\", "
        "model_name_or_path: \"x'; touch PWNED; echo '\\nrm -rf /\"}\n")
    (tmp_path / "m.yaml").write_text(text)
    assert main(["submit", "m.yaml", "--dry-run", "--executor", "slurm"] if _has_srun() else
                ["submit", "m.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "touch PWNED" not in out and "rm -rf" not in out  # values live in spec.json, never in the script
    assert not (tmp_path / "PWNED").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.yaml"]


def _has_srun() -> bool:
    return any(os.access(os.path.join(p, "sbatch"), os.X_OK) for p in os.environ.get("PATH", "").split(":"))
