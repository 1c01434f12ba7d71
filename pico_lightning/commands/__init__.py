"""One module per `pico` command: each exposes ``add_parser(subparsers)`` and ``run(args)``."""
