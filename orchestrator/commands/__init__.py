"""One module per `orchestrator` subcommand; each has `register(subparsers)` and a `run(args)` it sets."""
