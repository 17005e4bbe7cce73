"""What every benchmark hands back, and the table ``python -m bench`` prints.

A ``Row`` is one figure of ours next to the anchor it is judged against, both measured in the
same run on the same machine. The ratio is always "ours / anchor" for higher-is-better figures
(throughput) and "anchor / ours" for lower-is-better ones (latency, memory), so a ratio above 1
always means "ours is better" and below 1 "ours is behind".
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    benchmark: str
    figure: str
    value: float
    unit: str
    anchor: str = ""
    anchor_value: float | None = None
    higher_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """>1: ours is better than the anchor; <1: behind it (see the module docstring)."""
        if self.anchor_value is None or min(self.anchor_value, self.value) < 0.01:
            return None  # a zero (e.g. no memory growth at all) makes a ratio meaningless
        return self.value / self.anchor_value if self.higher_is_better else self.anchor_value / self.value


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def load_average() -> str:
    """The 1-minute load average and the CPU count, for the record next to the figures."""
    try:
        one = Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        one = "?"
    return f"load {one} on {os.cpu_count()} CPUs"


class Stopwatch:
    """Wall and this process's CPU time over a block (``with Stopwatch() as sw: ...``)."""

    wall = 0.0
    cpu = 0.0

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value != value:  # NaN
        return "nan"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render_table(rows: Sequence[Row]) -> str:
    """A plain-text table: benchmark, figure, ours, anchor, anchor value, ratio, note."""
    header = ("benchmark", "figure", "ours", "unit", "anchor", "anchor value", "ratio", "note")
    lines = [
        (
            r.benchmark,
            r.figure,
            _fmt(r.value),
            r.unit,
            r.anchor or "-",
            _fmt(r.anchor_value),
            f"{r.ratio:.2f}x" if r.ratio is not None else "-",
            r.note,
        )
        for r in rows
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]
    numeric = {2, 5, 6}

    def render(cells: Sequence[str]) -> str:
        return "  ".join(
            str(cell).rjust(width) if i in numeric else str(cell).ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([render(header), rule, *(render(line) for line in lines)])
