"""The console script's exit: atexit handlers and buffered output survive skipping the teardown."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body), encoding="utf-8")
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, check=False, capture_output=True, text=True,
                          timeout=60, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_exit_now_runs_atexit_handlers_flushes_output_and_keeps_the_code(tmp_path: Path) -> None:
    done = _run(tmp_path, """
        import atexit, logging, pathlib, sys
        from orchestrator.cli import exit_now

        class Deleted:
            def __del__(self):  # a finalizer at teardown: skipped, which is the point
                pathlib.Path("teardown").write_text("ran")

        kept = Deleted()
        logging.basicConfig(filename="log.txt", level=logging.INFO)
        logging.getLogger("t").info("logged")
        atexit.register(lambda: pathlib.Path("atexit").write_text("ran"))
        sys.stdout.write("no newline, still buffered")
        exit_now(3)
    """)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "no newline, still buffered"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert "logged" in (tmp_path / "log.txt").read_text()
    assert not (tmp_path / "teardown").exists()  # the teardown was skipped


def test_exit_now_with_a_live_thread_exits_normally(tmp_path: Path) -> None:
    done = _run(tmp_path, """
        import threading, time, sys
        from orchestrator.cli import exit_now

        def late():
            time.sleep(0.3)
            print("thread finished", flush=True)

        threading.Thread(target=late).start()
        exit_now(4)
    """)
    assert done.returncode == 4, done.stderr
    assert done.stdout == "thread finished\n"  # joined, as sys.exit would


def test_console_script_is_the_fast_exit() -> None:
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert 'orchestrate = "orchestrator.cli:entry"' in pyproject


def test_a_one_shot_collect_leaves_the_cyclic_gc_off_only_when_the_process_ends(tmp_path: Path) -> None:
    import gc

    from collect_fixtures import build_seed_study

    from orchestrator.cli import main

    study = build_seed_study(tmp_path / "me").experiment_dir
    argv = ["collect", str(study), "--out", str(tmp_path / "results"), "--format", "csv"]
    assert gc.isenabled()
    assert main(argv) == 0
    assert gc.isenabled()  # a caller that goes on (a test, a notebook) gets it back
    try:
        assert main([*argv, "--format", "md"], ends_process=True) == 0
        assert not gc.isenabled()  # the console script: its garbage is the exit's
    finally:
        gc.enable()
