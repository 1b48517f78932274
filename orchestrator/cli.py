"""The `orchestrator` console command."""

from __future__ import annotations

import argparse
import importlib
import sys

from orchestrator.errors import UserError

# Subcommand modules in orchestrator/commands/, in the order `--help` lists them.
COMMANDS = ["export", "profile", "trace", "solve", "bench", "simulate", "serve", "demo", "compile"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description="Accuracy-scaling orchestrator for Triton.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"orchestrator.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
