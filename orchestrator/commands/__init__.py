"""One module per `orchestrator` subcommand; each has `register(subparsers)` and a `run(args)` it sets.

`flags.py` is not a command: it holds the flag parsing the commands share (numbers, `--slo`, output paths).
"""
