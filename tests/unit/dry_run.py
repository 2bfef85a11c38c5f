"""One way the unit tests run ``orchestrate submit MATRIX --dry-run`` through the CLI."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestrator.cli import main


def dry_run(tmp_path: Path, head: str, body: str, capsys: pytest.CaptureFixture[str],
            *extra: str) -> tuple[int, str, str]:
    """Write ``head`` + ``body`` (dedented; ``{root}`` becomes tmp_path/scratch) to m.yaml and run
    ``submit --dry-run`` on it; (exit code, stdout, stderr). A traceback is always a failure."""
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(head).replace("{root}", str(tmp_path / "scratch")) + textwrap.dedent(body))
    code = main(["submit", str(path), "--dry-run", *extra])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err
