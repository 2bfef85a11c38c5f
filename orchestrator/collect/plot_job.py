"""Drawing the plots, in a forked child while the parent writes the tables when it can.

Matplotlib then never loads in the collecting process, and the two cores of a
small login node both work on a cold collect. If the child cannot be started,
fails, or takes longer than ``CHILD_TIMEOUT_S``, the plots are drawn in-process.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from pathlib import Path

from orchestrator.collect.analysis import Analysis
from orchestrator.collect.curves import EvalCurves
from orchestrator.collect.output import PLOT_FORMATS, Writer
from orchestrator.collect.parallel import ChildFailed, ForkedCall, can_fork

log = logging.getLogger(__name__)
CHILD_TIMEOUT_S = 300.0
Curves = Mapping[str, tuple[list[float], list[float]]]
PlotResult = tuple[list[str], list[Path], list[str]]  # plot names, files written, problems


class PlotJob:
    """Plots being drawn; ``result()`` waits and returns (names, paths, problems)."""

    def __init__(self, analysis: Analysis, curves: Curves, gpu_memory_mib: float | None, out_dir: Path,
                 formats: Collection[str], eval_curves: EvalCurves | None = None) -> None:
        self._args = (analysis, curves, gpu_memory_mib, out_dir, frozenset(formats), eval_curves or {})
        self._wanted = bool(set(PLOT_FORMATS) & set(formats))
        self._child: ForkedCall | None = None
        if self._wanted and can_fork():
            try:
                self._child = ForkedCall(lambda: draw_plots(*self._args))
            except OSError as exc:
                log.warning("cannot fork to draw plots (%s); drawing them in-process", exc)

    def result(self) -> PlotResult:
        """Names of the plots drawn, the files written and any problem."""
        if not self._wanted:
            return [], [], []
        if self._child is not None:
            try:
                names, paths, problems = self._child.result(timeout_s=CHILD_TIMEOUT_S)
                return list(names), list(paths), list(problems)
            except ChildFailed as exc:
                log.warning("plot process failed (%s); drawing the plots in-process", exc)
        try:
            return draw_plots(*self._args)
        except Exception as exc:  # a plot must never cost the tables
            log.exception("plots failed")
            return [], [], [f"plots: not drawn ({type(exc).__name__}: {exc})"]


def start_plots(analysis: Analysis, curves: Curves, gpu_memory_mib: float | None, out_dir: Path,
                formats: Collection[str], eval_curves: EvalCurves | None = None) -> PlotJob:
    """Start drawing the plots asked for by ``formats`` (png, svg); ``eval_curves``: the runs'
    evaluations during training (orchestrator/collect/curves.py), by run id."""
    return PlotJob(analysis, curves, gpu_memory_mib, out_dir, formats, eval_curves)


def draw_plots(analysis: Analysis, curves: Curves, gpu_memory_mib: float | None, out_dir: Path,
               formats: frozenset[str], eval_curves: EvalCurves | None = None) -> PlotResult:
    """Build every figure and write it under ``out_dir/plots`` in the asked formats."""
    from orchestrator.collect.plots import build_figures

    writer = Writer(out_dir, formats)
    figures = build_figures(analysis, curves, gpu_memory_mib, eval_curves)
    for name, figure in figures.items():
        writer.figure(name, figure)
    return list(figures), writer.written, []
