"""The slow path of a collect: from the refreshed index to every output file.

Imported only when something changed, so a collect with nothing new never loads
pandas or matplotlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.collect.adapters import adapter_tables
from orchestrator.collect.analysis import analyse
from orchestrator.collect.curves import EvalPoint
from orchestrator.collect.frame import build_runs_frame, ordered
from orchestrator.collect.manifest import read_manifest
from orchestrator.collect.output import PLOT_FORMATS, Writer
from orchestrator.collect.plot_job import start_plots
from orchestrator.collect.reader import Index
from orchestrator.collect.recipes import find_recipes, recipes_markdown, recipes_table
from orchestrator.collect.report import COMPLETED, CORRUPT, FAILED, PENDING, RUNNING, CollectReport
from orchestrator.collect.report_html import configurations_html, report_html
from orchestrator.collect.roots import Root, merge_roots
from orchestrator.collect.summary import collected_stamp, counts_line, summary_markdown, summary_tables
from orchestrator.collect.tables import build_tables
from orchestrator.collect.transfer import transfer_tables


def analyse_and_write(roots: Sequence[Root], indexes: Sequence[Index], out_dir: Path, formats: frozenset[str],
                      gpu_memory_mib: float | None, problems: list[str]) -> CollectReport:
    """Build the runs table of every root, analyse it, write every output asked for; the report.
    The first root is the experiment's: its manifest names the experiment and baseline."""
    frames: list[tuple[Root, pd.DataFrame]] = []
    curves: dict[str, tuple[list[float], list[float]]] = {}
    eval_curves: dict[str, list[EvalPoint]] = {}
    manifest = None
    for position, (root, index) in enumerate(zip(roots, indexes)):
        root_manifest, manifest_problems = read_manifest(root.path)
        frame = build_runs_frame((record for _, record in index.values()), root_manifest)
        where = f"{root.path} ({root.owner}): " if root.read_only else ""
        problems += [where + problem for problem in manifest_problems + frame.problems]
        frames.append((root, frame.runs))
        curves = {**frame.curves, **curves}  # an earlier root's copy of a run wins
        eval_curves = {**frame.eval_curves, **eval_curves}
        manifest = root_manifest if position == 0 else manifest
    runs, merge_problems = merge_roots(frames)
    problems += merge_problems
    analysis = analyse(ordered(runs), manifest)
    problems += analysis.problems
    # drawn meanwhile, in a forked child if it can: as early as the plots' input (the analysis) is known
    plots = start_plots(analysis, curves, gpu_memory_mib, out_dir, formats, eval_curves)
    experiment_dir = roots[0].path
    experiment = (manifest.experiment if manifest and manifest.experiment else None) or experiment_dir.name
    counts = _counts(analysis.runs)
    tables = build_tables(analysis) + adapter_tables(analysis.runs, experiment_dir, problems)
    tables += transfer_tables(analysis.runs, experiment_dir, problems)
    recipes, reference_text = find_recipes(analysis, gpu_memory_mib)
    recipe_table = recipes_table(recipes, analysis.primary) if recipes else None
    writer = Writer(out_dir, formats)
    writer.runs(analysis.runs)
    for table in tables + ([recipe_table] if recipe_table is not None else []):
        writer.table(table)
    # the configurations section of report.html, its heaviest part, while the plots are drawn
    configurations = configurations_html(analysis, curves, experiment_dir, out_dir) if "html" in formats else ""
    figures, plot_paths, plot_problems = plots.result()
    writer.written += plot_paths
    problems += plot_problems
    stamp = collected_stamp()
    summary = summary_markdown(experiment, analysis, counts, problems, tables, recipe_table, figures, stamp)
    if "md" in formats:
        writer.text("recipes.md", recipes_markdown(recipes, reference_text, analysis.primary, experiment))
        writer.text("summary.md", summary)
    if "html" in formats:
        pngs = {name: (out_dir / "plots" / f"{name}.png").read_bytes() for name in figures
                if out_dir / "plots" / f"{name}.png" in plot_paths}
        shown = summary_tables(tables) + ([recipe_table] if recipe_table is not None else [])
        writer.text("report.html", report_html(experiment, stamp, counts_line(counts), analysis, problems, shown,
                                               pngs, configurations))
    return CollectReport(
        experiment=experiment, experiment_dir=experiment_dir, out_dir=out_dir, problems=tuple(problems),
        anomalies=tuple(anomaly.text() for anomaly in analysis.anomalies), written=tuple(writer.written),
        summary_markdown=summary, **counts,
    )


def preload(formats: frozenset[str]) -> None:
    """Import now what the outputs of ``formats`` will need (a cold collect calls this while its forked
    workers read the run directories, so the imports are off the critical path)."""
    import scipy.special  # noqa: F401 - the t intervals and tests (orchestrator/collect/stats.py)

    if {"csv", "parquet"} & formats:
        import pyarrow.csv
        import pyarrow.parquet  # noqa: F401
    if "html" in formats:
        import jinja2  # noqa: F401
    if set(PLOT_FORMATS) & formats:
        _preload_matplotlib()


def _preload_matplotlib() -> None:
    """matplotlib, its Agg and SVG backends and the default font, loaded in this process: the plot child
    is forked from it and starts drawing at once (importing them and loading the font there took
    about 0.4 s of a cold collect's second half, when both CPUs are busy; here it overlaps the reads)."""
    from matplotlib import font_manager
    from matplotlib.backends import backend_agg, backend_svg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401

    font_manager.get_font(font_manager.findfont(font_manager.FontProperties()))


def _counts(runs: pd.DataFrame) -> dict[str, Any]:
    statuses = runs["status"].value_counts().to_dict() if not runs.empty else {}
    return {"runs_found": len(runs), "completed": int(statuses.get(COMPLETED, 0)),
            "failed": int(statuses.get(FAILED, 0)), "corrupt": int(statuses.get(CORRUPT, 0)),
            "running": int(statuses.get(RUNNING, 0)), "pending": int(statuses.get(PENDING, 0))}
