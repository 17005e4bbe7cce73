"""``python -m bench [--quick] [--only NAME]``: run the benchmarks, print one table.

Each benchmark measures ours and its anchors in the same run on the same machine and returns
``Row``s; the table shows the figure, the anchor's figure and the ratio (>1: ours is better).
The ingest benchmarks and ``s3-in-flight`` share one set of services (redis-server, SeaweedFS,
SQLite), started once.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

from bench.report import Row, load_average, render_table
from upload_service.server import default_worker_count

BENCHMARKS = ("ingest-large", "ingest-small", "s3-in-flight", "processing")
#: The benchmarks that share one set of services (redis-server, SeaweedFS), started once.
ON_THE_STACK = ("ingest-large", "ingest-small", "s3-in-flight")
#: Seconds each benchmark took (start-up of its servers included), printed under the table.
DURATIONS: dict[str, float] = {}


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _run_on_stack(names: list[str], args: argparse.Namespace) -> list[Row]:
    from bench import ingest, s3load, small
    from bench.servers import BenchStack

    workers = args.workers or default_worker_count()
    databases = tuple(args.db or small.DATABASES)
    steps: dict[str, Callable[[BenchStack, bool], list[Row]]] = {
        "ingest-large": ingest.run_large,
        "ingest-small": lambda stack, quick: small.run_small(stack, quick, workers=workers, databases=databases),
        "s3-in-flight": s3load.run_in_flight,
    }
    rows: list[Row] = []
    _log("starting redis-server and SeaweedFS ...")
    with BenchStack() as stack:
        for name in names:
            _log(f"running {name} ({load_average()}) ...")
            started = time.perf_counter()
            rows += steps[name](stack, args.quick)
            DURATIONS[name] = time.perf_counter() - started
    return rows


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwind through the context managers: every process is stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Run the benchmarks next to their anchors; print one table."
    )
    parser.add_argument("--quick", action="store_true", help="fewer runs and smaller counts (under a minute)")
    parser.add_argument("--only", choices=BENCHMARKS, action="append", help="run only this benchmark (repeatable)")
    parser.add_argument("--workers", type=int, default=None,
                        help="API processes of ours and of the durable template in ingest-small (default: cores)")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), action="append",
                        help="ingest-small on this database kind only (repeatable; default: both)")
    args = parser.parse_args(argv)
    selected = args.only or list(BENCHMARKS)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where started with SIGINT ignored
    started, load_before = time.perf_counter(), load_average()
    rows: list[Row] = []
    on_stack = [name for name in selected if name in ON_THE_STACK]
    try:
        if on_stack:
            rows += _run_on_stack(on_stack, args)
        if "processing" in selected:
            from bench import processing

            _log(f"running processing ({load_average()}) ...")
            processing_started = time.perf_counter()
            rows += processing.run(args.quick)
            DURATIONS["processing"] = time.perf_counter() - processing_started
    except KeyboardInterrupt:
        _log("interrupted; every process started was stopped")
        return 130
    print(render_table(rows))
    mode = "quick" if args.quick else "full"
    each = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in DURATIONS.items())
    print(f"\n{mode} run, {time.perf_counter() - started:.0f} s ({each}); {load_before} at start, {load_average()} at end")
    print("ratio: ours / anchor for rates, anchor / ours for times and memory (>1: ours is better)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
