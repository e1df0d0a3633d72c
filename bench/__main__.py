"""``python -m bench [--only NAME] [--quick] [--output PATH]``: run benchmarks, write the report.

With ``--only``, the other benchmarks' sections already in the report are kept as they were.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import shlex
import sys
from pathlib import Path
from typing import Protocol, cast

from bench import Section, report

REPORT = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"

#: Benchmark name -> module exposing ``run(quick: bool) -> Section``, in report order.
BENCHMARKS: dict[str, str] = {
    "decode": "bench.decode",
    "drive": "bench.drive",
    "drive_responses": "bench.drive_responses",
    "scale": "bench.scale",
    "dispatch_overhead": "bench.dispatch_overhead",
    "emulator_throughput": "bench.emulator_throughput",
    "worker_store": "bench.worker_store",
}


class _Benchmark(Protocol):
    def run(self, quick: bool) -> Section: ...


def _command(argv: list[str]) -> str:
    exe = Path(sys.executable)
    if exe.is_relative_to(Path.cwd()):
        exe = exe.relative_to(Path.cwd())
    return shlex.join([str(exe), "-m", "bench", *argv])


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks and write the report."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", choices=list(BENCHMARKS), action="append", metavar="NAME")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--output", type=Path, default=REPORT, help=f"default: {REPORT.name}")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    names = args.only or list(BENCHMARKS)

    blocks = report.previous_blocks(args.output) if args.only else {}
    for name in names:
        print(f"bench: running {name}{' (quick)' if args.quick else ''}", flush=True)
        module = cast(_Benchmark, importlib.import_module(BENCHMARKS[name]))
        section = module.run(args.quick)
        if not section.command:
            section.command = _command(["--only", name, *(["--quick"] if args.quick else [])])
        when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        blocks[name] = report.render(name, section, when)
        print(blocks[name], flush=True)

    ordered = [blocks[n] for n in BENCHMARKS if n in blocks]
    args.output.write_text(report.header(_command(argv)) + "\n" + "\n".join(ordered))
    print(f"bench: wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
