"""Several roots in one collect (issue 14): a teammate's read-only experiment directory
merged into one table with an owner column; nothing written under it; a run id in
both roots kept once, with a warning when the results differ."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from collect_fixtures import SEED_STUDY, build_seed_study, run_values, spec_dict, write_run

from orchestrator.collect import collect
from orchestrator.errors import UserError

REPO = Path(__file__).resolve().parents[2]
FORMATS = frozenset({"csv", "md"})


def teammate_root(tmp_path: Path) -> tuple[Path, str, str]:
    """alice's copy of the study: the same runs, one with another F1, and one run of her own
    (A1 with seed 4). Returns (root, the differing run id, her own run id)."""
    root = build_seed_study(tmp_path / "alice").experiment_dir
    a1 = SEED_STUDY[0]
    spec = spec_dict("seed-study", a1, 4, None)
    write_run(root / "runs", spec, "completed", run_values(a1, 4))
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["current_runs"][spec["run_name"]] = spec["run_id"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    differing = next(path for path in sorted((root / "runs").iterdir()) if path.name.startswith("A3-seed2"))
    result = json.loads((differing / "result.json").read_text())
    result["metrics"]["f1"] += 1.0
    (differing / "result.json").write_text(json.dumps(result))
    return root, differing.name, spec["run_id"]


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``root`` with its mtime_ns, size and mode."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            info = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (info.st_mtime_ns, info.st_size, info.st_mode)
    return out


def make_read_only(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames + [""]:
            path = os.path.join(dirpath, name)
            os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) & ~0o222)


def test_two_roots_one_table_with_owners_and_no_write_into_the_read_only_root(tmp_path: Path) -> None:
    mine = build_seed_study(tmp_path / "me").experiment_dir
    theirs, differing, own_run = teammate_root(tmp_path)
    make_read_only(theirs)  # chmod -R a-w: as root this stops nothing, hence the snapshot
    before = snapshot(theirs)
    out_dir = tmp_path / "results"
    report = collect(mine, out_dir, formats=FORMATS, read_roots=[f"alice={theirs}"])
    assert snapshot(theirs) == before
    runs = pd.read_csv(out_dir / "runs.csv").set_index("run_id")
    assert runs.index.is_unique
    assert runs.loc[own_run, "owner"] == "alice"
    assert runs.loc[own_run, "run_dir"] == str(theirs / "runs" / own_run)
    assert runs.loc[differing, "owner"] != "alice"  # the first root's copy is kept
    warnings = [line for line in report.problems if differing in line]
    assert len(warnings) == 1 and "different results" in warnings[0] and "metrics.f1" in warnings[0]
    assert sum("different results" in line for line in report.problems) == 1  # identical copies: silent
    accuracy = pd.read_csv(out_dir / "tables" / "accuracy_speed.csv").set_index("id")
    assert accuracy.loc["A1", "n"] == 4  # alice's seed 4 joins my three
    configurations = (out_dir / "tables" / "configurations.md").read_text()
    assert "alice" in configurations
    assert not list(theirs.rglob(".collect*"))


def test_the_owner_defaults_to_the_owner_of_the_root(tmp_path: Path) -> None:
    mine = build_seed_study(tmp_path / "me").experiment_dir
    theirs, _, own_run = teammate_root(tmp_path)
    os.chown(theirs, 65534, 65534)
    collect(mine, tmp_path / "results", formats=FORMATS, read_roots=[theirs])
    runs = pd.read_csv(tmp_path / "results" / "runs.csv").set_index("run_id")
    import pwd

    assert runs.loc[own_run, "owner"] == pwd.getpwuid(65534).pw_name


def test_bad_roots_are_all_reported_and_nothing_is_written(tmp_path: Path) -> None:
    mine = build_seed_study(tmp_path / "me").experiment_dir
    theirs, _, _ = teammate_root(tmp_path)
    out_dir = theirs / "results"
    with pytest.raises(UserError) as error:
        collect(mine, out_dir, formats=FORMATS, read_roots=[tmp_path / "nowhere", theirs, mine])
    text = str(error.value)
    assert "nowhere: no such experiment directory" in text
    assert "output directory" in text and "already read" in text
    assert not out_dir.exists()


def _can_mount_read_only() -> bool:
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind / /mnt && mount -o remount,ro,bind /mnt"],
                           capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(shutil.which("unshare") is None or not _can_mount_read_only(),
                    reason="needs a private mount namespace (unshare -m) to mount the root read-only")
def test_collect_with_the_teammate_root_mounted_read_only(tmp_path: Path) -> None:
    """The kernel's word for it: the root bind-mounted read-only, where any write fails."""
    mine = build_seed_study(tmp_path / "me").experiment_dir
    theirs, _, own_run = teammate_root(tmp_path)
    script = (f"mount --bind {theirs} {theirs} && mount -o remount,ro,bind {theirs} && "
              f"touch {theirs}/probe 2>/dev/null && exit 9; "
              f"{sys.executable} -c 'from pathlib import Path; from orchestrator.collect import collect; "
              f"r = collect(Path(\"{mine}\"), Path(\"{tmp_path / 'results'}\"), frozenset({{\"csv\"}}), "
              f"read_roots=[\"alice={theirs}\"]); "
              f"bad = [p for p in r.problems if \"cannot write\" in p]; print(bad); raise SystemExit(bool(bad))'")
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stdout + result.stderr
    runs = pd.read_csv(tmp_path / "results" / "runs.csv").set_index("run_id")
    assert runs.loc[own_run, "owner"] == "alice"


def test_the_command_line_takes_roots_and_rejects_a_bad_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli import main

    mine = build_seed_study(tmp_path / "me").experiment_dir
    theirs, _, own_run = teammate_root(tmp_path)
    out = tmp_path / "results"
    assert main(["collect", str(mine), "--out", str(out), "--format", "csv", "--root", f"alice={theirs}"]) == 0
    runs = pd.read_csv(out / "seed-study" / "runs.csv").set_index("run_id")
    assert runs.loc[own_run, "owner"] == "alice"
    assert main(["collect", str(mine), "--out", str(out), "--root", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such experiment directory" in capsys.readouterr().err
