"""`pico sweep`: placeholder until its issue lands."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("sweep", help="(not yet available)")
    parser.set_defaults(run=run)


def run(args) -> int:
    raise SystemExit("pico sweep: not available yet")
