"""Grid axes: which axes a run inherits, which a nearer setting overrides, and setting an
axis's value in a run's config (``lora.r``: a dotted path through the typed sections)."""

from __future__ import annotations

from typing import Any

from jobs.contract import TrainConfig
from orchestrator.matrix.extends import RUN_KEYS
from orchestrator.matrix.problems import Problems, has_path, leaf_paths, nested_model, suggest

EMPTY_GRID = "grid: {} adds no axis and clears nothing: write grid: null to drop the inherited axes, or remove the key"


def _leaf_levels(layers: list[dict[str, Any]]) -> dict[str, int]:
    """dotted path -> index of the last layer that sets it to a value (not a section)."""
    levels: dict[str, int] = {}

    def walk(data: dict[str, Any], path: str, level: int) -> None:
        for key, value in data.items():
            child = f"{path}.{key}" if path else str(key)
            if isinstance(value, dict):
                walk(value, child, level)  # an empty section (lora: {}) switches on, sets nothing
            else:
                levels[child] = level

    for level, data in enumerate(layers):
        walk(data, "", level)
    return levels


def grid_axes(raw: dict[str, Any], chain: list[str]) -> tuple[list[tuple[str, list[Any], str]], Problems]:
    """The grid axes of the last run of ``chain`` (ancestors first), by the inheritance rule:

    * a run inherits the top-level ``grid`` and its ancestors' grids; a nearer grid's axis
      replaces a farther one's; ``grid: null`` on a run clears everything inherited;
    * a setting written on a descendant of the grid's run wins over the inherited axis:
      the axis is dropped for that run. Settings at the grid's own level lose to it
      (``defaults`` to the top-level grid; a run's ``lora: {r: 8}`` to its own
      ``grid: {lora.r: [4, 16]}``, which needs the section switched on);
    * ``grid: {}`` is refused as ambiguous: write ``grid: null`` to clear.
    """
    runs: dict[str, Any] = raw["runs"]
    bodies = [runs[n] or {} for n in chain]
    # Levels: defaults 0, the top-level grid 1, then run i (root ancestor first) 2 + i.
    levels = _leaf_levels([raw.get("defaults") or {}, {}] + [{k: v for k, v in b.items() if k not in RUN_KEYS} for b in bodies])
    axes: dict[str, tuple[list[Any], str, int]] = {}
    problems: Problems = []
    grids = [("grid", raw.get("grid") or {}, 1, False)]
    grids += [(f"runs.{n}.grid", b.get("grid"), 2 + i, "grid" in b) for i, (n, b) in enumerate(zip(chain, bodies))]
    for prefix, grid, level, present in grids:
        if present and grid is None:
            axes.clear()
            continue
        if present and grid == {}:
            problems.append((prefix, EMPTY_GRID))
            continue
        for axis, values in (grid or {}).items():
            where = f"{prefix}.{axis}"
            if not has_path(TrainConfig, str(axis)):
                problems.append((where, f"unknown axis{suggest(str(axis), leaf_paths(TrainConfig))}"))
            elif not isinstance(values, list):
                problems.append((where, f"an axis is a list of values, e.g. {axis}: [1, 2, 3]"))
            elif not values:
                problems.append((where, "empty axis: give at least one value (an empty axis would expand to no runs)"))
            else:
                axes[str(axis)] = (values, where, level)
    kept = [(axis, values, where) for axis, (values, where, level) in axes.items() if not _overridden(axis, level, levels)]
    return kept, problems


def _overridden(axis: str, axis_level: int, levels: dict[str, int]) -> bool:
    """Whether a layer nearer than the axis's sets ``axis`` (or switches off a section above it)."""
    parts = axis.split(".")
    return any(levels.get(".".join(parts[:end]), -1) > axis_level for end in range(1, len(parts) + 1))


def set_path(data: dict[str, Any], dotted: str, value: Any) -> bool:
    """Set ``a.b`` in nested dicts; False if an intermediate section is off (null, or absent
    with a null default such as ``lora``): a grid axis never switches a method on by itself."""
    parts = dotted.split(".")
    current = data
    model: Any = TrainConfig
    for part in parts[:-1]:
        absent_off = part not in current and model is not None and model.model_fields[part].default is None
        if absent_off or (part in current and current[part] is None):
            return False
        current = current.setdefault(part, {})
        if not isinstance(current, dict):
            return False
        model = nested_model(model, part) if model is not None else None
    current[parts[-1]] = value
    return True
