"""The ``orchestrator`` command line: run · worker · enqueue · status · emulator · demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from orchestrator import config, errors


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__)
    parser.add_argument("--config", default=None, help="path of config.yaml")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="drive demo jobs against the bundled emulator")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    try:
        config.load(args.config)
    except errors.ConfigError as exc:
        print(f"orchestrator: config error: {exc}", file=sys.stderr)
        return 2
    print("orchestrator: the worker is not built yet; nothing to do.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
