"""`orchestrator compile`: build the per-request code with mypyc (orchestrator/native.py), or remove the build."""

from __future__ import annotations

import argparse

from orchestrator import native


def register(sub) -> None:
    p = sub.add_parser("compile", help="compile the routing, batching and simulator code with mypyc (2x faster)",
                       description=__doc__ + "\n\nNeeds mypy (the dev extra) and a C compiler; run it from a "
                       "source checkout. Without a build the same code runs from its sources.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--clean", action="store_true", help="remove the build (the sources run)")
    what.add_argument("--status", action="store_true", help="say whether the compiled code or the sources run")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.clean:
        removed = native.clean()
        print(f"removed {len(removed)} built files: the sources run" if removed else "nothing to remove")
        return 0
    if args.status:
        stale = native.stale_sources()
        if stale:
            print(f"stale build: {', '.join(stale)} changed since it was compiled; the sources run")
        elif native.built_files():
            print(f"compiled: {', '.join(native.MODULES)} run from their mypyc build")
        else:
            print("not compiled: the sources run (`orchestrator compile` builds them)")
        return 0
    return native.build()
