"""The `orchestrator` console command.

Every error a user can cause ends as one line `error: <message>` on stderr and exit status 2: a
`UserError` from a command, or a flag argparse refuses. Anything else is a bug: one line naming it
and exit status 1 (ORCHESTRATOR_DEBUG=1 shows the traceback instead).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from orchestrator.errors import UserError

# Subcommand modules in orchestrator/commands/, in the order `--help` lists them.
COMMANDS = ["export", "cluster", "profile", "trace", "solve", "bench", "simulate", "serve", "gateway", "demo", "compile"]


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are a one-line UserError (subcommand parsers are of this class too)."""

    def error(self, message: str):
        raise UserError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="orchestrator", description="Accuracy-scaling orchestrator for Triton.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"orchestrator.commands.{name}").register(sub)
    return parser


def _debug() -> bool:
    return os.environ.get("ORCHESTRATOR_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
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
    except Exception as e:  # a bug: one line, not a traceback (unless asked for)
        if _debug():
            raise
        detail = " ".join(str(e).split())
        print(f"error: internal error ({type(e).__name__}: {detail}); set ORCHESTRATOR_DEBUG=1 for the traceback",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
