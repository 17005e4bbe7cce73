"""``s3-in-flight``: what the bench's S3 server spends per ``PUT`` against how many arrive together.

``ingest-small``'s S3 limit (boto3 ``put_object`` of a 100 KB PNG straight to the bench's
SeaweedFS, ``small.S3Limit``) at 1, 4, 8, 16 and 32 ``PUT``s in flight, the settings in turn
within each round; per setting SeaweedFS's CPU per ``PUT`` (``bench/procstat.py``) and puts/s,
medians of the rounds with min-max beside them. Nothing of ours runs: these rows are for
reference. They are here because the S3 server's share of an upload in ``ingest-small`` moves
with how busy that server is, not only with the bytes it takes: compare ours' share on SQLite and
on PostgreSQL with these rows (docs/benchmarks.md, "an eleventh host").
"""

from __future__ import annotations

import sys

from bench import payloads
from bench.report import Row, median
from bench.servers import BenchStack
from bench.small import Burst, S3Limit

IN_FLIGHT = (1, 4, 8, 16, 32)
SIZE = 100_000


def _log(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def run_in_flight(stack: BenchStack, quick: bool) -> list[Row]:
    total, rounds = (200, 2) if quick else (1000, 3)
    content = payloads.noise_png_of_size(SIZE)
    limits = {count: S3Limit(stack, count) for count in IN_FLIGHT}
    bursts: dict[int, list[Burst]] = {count: [] for count in IN_FLIGHT}
    for round_number in range(rounds):
        _log(f"round {round_number + 1} of {rounds}: {total} PUTs of 100 KB at each of {IN_FLIGHT} in flight")
        for count, limit in limits.items():
            bursts[count].append(limit.burst(content, total))
    rows: list[Row] = []
    for count in IN_FLIGHT:
        runs = bursts[count]
        failed = sum(b.failures for b in runs)
        rows.append(Row.of_runs(
            "S3 server, 100 KB PUTs", f"{count} in flight: S3 server CPU/put", [b.cpu_ms("S3 server") for b in runs],
            "ms", note=f"for reference; {median([b.rate for b in runs]):.0f} puts/s; {total} PUTs per round"
            + (f"; {failed} FAILED" if failed else ""),
        ))
    return rows
