"""A matrix's runs and their ``extends`` chains: run names, bodies, parents, cycles, the baseline.

A run may extend another (``A2: {extends: A1, ...}``); the chain is followed to its root,
ancestors first. A run whose chain cannot be followed (an unsafe name, a body that is not a
mapping, a missing parent, a cycle) is reported here and left out of expansion, so that every
other run is still checked in the same round.
"""

from __future__ import annotations

from typing import Any

from jobs.contract import SAFE_NAME, Resources, TrainConfig
from orchestrator.matrix.problems import Problems, shown, suggest, unknown_keys

RUN_KEYS = ("extends", "series", "grid", "resources", "description")


def run_entry_problems(runs: dict[str, Any]) -> Problems:
    problems: Problems = []
    for name, body in runs.items():
        where = f"runs.{name}" if isinstance(name, str) and len(name) <= 100 else f"runs.{shown(name)}"
        if not isinstance(name, str) or not SAFE_NAME.match(name):
            problems.append((where, (f"{shown(name)} is not a safe run name: use letters, digits and _.+- "
                             "(starting with a letter or digit; no '/', spaces or shell characters)")))
            continue
        if body is None:
            continue
        if not isinstance(body, dict):
            problems.append((where, "must be a mapping of settings (or empty)"))
            continue
        problems += unknown_keys(TrainConfig, body, where, also=RUN_KEYS)
        problems += unknown_keys(Resources, body.get("resources") or {}, f"{where}.resources")
        parent = body.get("extends")
        if parent is not None and not isinstance(parent, str):
            problems.append((f"{where}.extends", (f"{shown(parent)} is not a run name: write extends: NAME, "
                             f"one of {', '.join(map(str, runs))}")))
        elif parent is not None and parent not in runs:
            problems.append((f"{where}.extends", (f"{shown(parent)} is not a run{suggest(str(parent), [str(r) for r in runs])}"
                             f"; runs are {', '.join(map(str, runs))}")))
        if body.get("series") is not None and not (isinstance(body["series"], str) and SAFE_NAME.match(body["series"])):
            problems.append((f"{where}.series", f"{body['series']!r} is not a safe name"))
        for key in ("grid", "resources"):
            if body.get(key) is not None and not isinstance(body[key], dict):
                problems.append((f"{where}.{key}", "must be a mapping"))
    problems += _cycle_problems(runs)
    return problems


def _cycle_problems(runs: dict[str, Any]) -> Problems:
    problems: Problems = []
    for name in runs:
        chain = [name]
        current = name
        while isinstance(runs.get(current), dict) and _parent(runs, current) is not None:
            current = runs[current]["extends"]
            if current in chain:
                cycle = " -> ".join(chain[chain.index(current):] + [current])
                if current == name:
                    problems.append((f"runs.{name}.extends", f"extends cycle: {cycle}"))
                break
            chain.append(current)
    return problems


def _parent(runs: dict[str, Any], name: Any) -> str | None:
    """The run ``name`` extends, if that is the name of a run (else None: reported elsewhere)."""
    body = runs.get(name)
    parent = body.get("extends") if isinstance(body, dict) else None
    return parent if isinstance(parent, str) and parent in runs else None


def resolvable(runs: dict[str, Any]) -> set[str]:
    """Runs whose whole ``extends`` chain can be followed: safe names, bodies that are mappings
    (or empty), each parent a run, no cycle. The others' problems are reported already; they
    are left out of expansion so that every other run is still checked."""
    good: set[str] = set()
    for name in runs:
        seen: list[Any] = []
        current: Any = name
        while True:
            body = runs.get(current)
            if not (isinstance(current, str) and SAFE_NAME.match(current)) or not (body is None or isinstance(body, dict)):
                break
            parent = (body or {}).get("extends")
            if parent is None:
                good.add(name)
                break
            if _parent(runs, current) is None or parent in seen or parent == current:
                break
            seen.append(current)
            current = parent
    return good


def baseline_problems(baseline: Any, runs: dict[str, Any]) -> Problems:
    if baseline is None or (isinstance(baseline, str) and baseline in runs):
        return []
    return [("baseline", (f"{shown(baseline)} is not a run{suggest(str(baseline), [str(r) for r in runs])}; "
             f"runs are {', '.join(map(str, runs))}"))]


def extends_chain(runs: dict[str, Any], name: str) -> list[str]:
    """Ancestors first, ``name`` last."""
    chain = [name]
    while _parent(runs, chain[0]) is not None and _parent(runs, chain[0]) not in chain:
        chain.insert(0, str(_parent(runs, chain[0])))
    return chain
