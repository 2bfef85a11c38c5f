"""Writing the outputs: every file atomically, only the formats asked for.

Text goes through the contract's ``write_text_atomic``; binary files (parquet, PNG)
through a temp file in the same directory and ``os.replace``. ``Writer`` remembers
what it wrote so a later collect can remove outputs that no longer exist (a series
that left the matrix).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from jobs.contract import write_bytes_atomic, write_text_atomic
from orchestrator.collect.render import Table

if TYPE_CHECKING:
    import pyarrow as pa
    from matplotlib.figure import Figure

_PLAIN = {str, bool, int, float}
# No timestamps in the files: the same data gives byte-identical plots.
_METADATA: dict[str, dict[str, str | None]] = {"png": {"Software": None}, "svg": {"Date": None}}
PLOT_FORMATS = ("png", "svg")


@dataclass
class Writer:
    """Writes under ``out_dir`` the files whose format is in ``formats``."""

    out_dir: Path
    formats: Collection[str]
    written: list[Path] = field(default_factory=list)

    def text(self, relative: str, text: str) -> None:
        """Write a text file atomically."""
        path = self.out_dir / relative
        write_text_atomic(path, text)
        self.written.append(path)

    def binary(self, relative: str, payload: bytes) -> None:
        """Write a binary file atomically."""
        path = self.out_dir / relative
        write_bytes_atomic(path, payload)
        self.written.append(path)

    def table(self, table: Table) -> None:
        """``tables/<name>.csv|md|tex`` for the asked formats."""
        if "csv" in self.formats:
            self.text(f"tables/{table.name}.csv", table.to_csv())
        if "md" in self.formats:
            self.text(f"tables/{table.name}.md", table.to_markdown(heading_level=1))
        if "tex" in self.formats:
            self.text(f"tables/{table.name}.tex", table.to_latex())

    def runs(self, runs: pd.DataFrame) -> None:
        """``runs.csv`` and ``runs.parquet``: one row a run."""
        if not ({"csv", "parquet"} & set(self.formats)):
            return
        table = arrow_table(runs)
        if "csv" in self.formats:
            import pyarrow.csv as pa_csv

            buffer = io.BytesIO()
            pa_csv.write_csv(table, buffer)
            self.binary("runs.csv", buffer.getvalue())
        if "parquet" in self.formats:
            import pyarrow.parquet as pq

            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            self.binary("runs.parquet", buffer.getvalue())

    def figure(self, name: str, figure: Figure) -> None:
        """``plots/<name>.png|svg`` for the asked formats."""
        import matplotlib

        # SVG text stays text: smaller, searchable, and far faster than glyph paths
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "orchestrate"}):
            for fmt in PLOT_FORMATS:
                if fmt in self.formats:
                    buffer = io.BytesIO()
                    figure.savefig(buffer, format=fmt, dpi=100 if fmt == "png" else None,
                                   metadata=_METADATA[fmt])
                    self.binary(f"plots/{name}.{fmt}", buffer.getvalue())


def arrow_table(runs: pd.DataFrame) -> pa.Table:
    """The runs frame as a pyarrow Table; a column mixing types becomes text."""
    import pyarrow as pa

    frame = runs.copy()
    for name in frame.columns:
        if frame[name].dtype == object:
            kinds = {type(value) for value in frame[name] if not _missing(value)}
            if kinds and not ((len(kinds) == 1 and kinds <= _PLAIN) or kinds == {int, float}):
                frame[name] = frame[name].map(lambda value: None if _missing(value) else str(value))
    return pa.Table.from_pandas(frame, preserve_index=False)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def remove_stale_outputs(out_dir: Path, previous: Collection[str], written: Collection[Path]) -> None:
    """Delete files an earlier collect wrote that this one did not (never anything else)."""
    keep = {str(path.relative_to(out_dir)) for path in written}
    for relative in previous:
        if relative in keep or relative.startswith("/") or ".." in Path(relative).parts:
            continue
        try:
            os.unlink(out_dir / relative)
        except FileNotFoundError:
            pass
