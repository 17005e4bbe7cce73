"""What every benchmark hands back, and the table ``python -m bench`` prints.

A ``Row`` is one figure of ours next to the anchor it is judged against, both measured in the
same run on the same machine. The ratio is always "ours / anchor" for higher-is-better figures
(throughput) and "anchor / ours" for lower-is-better ones (latency, memory), so a ratio above 1
always means "ours is better" and below 1 "ours is behind".
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self


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
    spread: tuple[float, float] | None = None  # min and max over the runs whose median is value
    anchor_spread: tuple[float, float] | None = None

    @classmethod
    def of_runs(
        cls, benchmark: str, figure: str, runs: Sequence[float], unit: str, anchor: str = "",
        anchor_runs: Sequence[float] | None = None, **kwargs: object,
    ) -> Row:
        """A row from every run's value (and the anchor's): medians, with min-max beside them."""
        return cls(
            benchmark, figure, median(runs), unit, anchor,
            median(anchor_runs) if anchor_runs else None,
            spread=(min(runs), max(runs)) if runs else None,
            anchor_spread=(min(anchor_runs), max(anchor_runs)) if anchor_runs else None,
            **kwargs,  # type: ignore[arg-type]
        )

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

    def __enter__(self) -> Self:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _fmt_spread(spread: tuple[float, float] | None) -> str:
    if spread is None:
        return ""
    low, high = spread
    return _fmt(low) if _fmt(low) == _fmt(high) else f"{_fmt(low)}-{_fmt(high)}"


def render_table(rows: Sequence[Row]) -> str:
    """A plain-text table: benchmark, figure, ours (median, min-max), anchor, anchor value
    (median, min-max), ratio of the medians, note."""
    header = ("benchmark", "figure", "ours", "min-max", "unit", "anchor", "anchor value", "min-max", "ratio", "note")
    lines = [
        (
            r.benchmark,
            r.figure,
            _fmt(r.value),
            _fmt_spread(r.spread),
            r.unit,
            r.anchor or "-",
            _fmt(r.anchor_value),
            _fmt_spread(r.anchor_spread),
            f"{r.ratio:.2f}x" if r.ratio is not None else "-",
            r.note,
        )
        for r in rows
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]
    numeric = {2, 3, 6, 7, 8}

    def render(cells: Sequence[str]) -> str:
        return "  ".join(
            str(cell).rjust(width) if i in numeric else str(cell).ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([render(header), rule, *(render(line) for line in lines)])
