"""Fixtures for the tests that run against the real local SLURM cluster (tests/slurm/start-cluster.sh)."""

from __future__ import annotations

import subprocess
from collections.abc import Generator
from pathlib import Path

import pytest

SLURM_SCRIPTS = Path(__file__).resolve().parents[1] / "slurm"


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Start the local cluster, or find it running (idempotent, under 2 s when warm).

    Fails, never skips: a test tier that silently skips when its cluster is broken proves nothing.
    """
    try:
        result = subprocess.run(
            [str(SLURM_SCRIPTS / "start-cluster.sh")], capture_output=True, text=True, timeout=300, check=False
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"tests/slurm/start-cluster.sh timed out after {error.timeout} s", pytrace=False)
    if result.returncode != 0:
        pytest.fail(
            f"tests/slurm/start-cluster.sh failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}",
            pytrace=False,
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    """On a failure in this directory, add the cluster's state (dump-state.sh) to the test's report."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed and report.when in ("setup", "call"):
        try:
            dump = subprocess.run(
                [str(SLURM_SCRIPTS / "dump-state.sh")], capture_output=True, text=True, timeout=60, check=False
            ).stdout
        except (OSError, subprocess.TimeoutExpired) as error:
            dump = f"tests/slurm/dump-state.sh could not run: {error}"
        report.sections.append(("SLURM state (tests/slurm/dump-state.sh)", dump))
