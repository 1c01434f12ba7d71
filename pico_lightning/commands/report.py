"""`pico report`: placeholder until its issue lands."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("report", help="(not yet available)")
    parser.set_defaults(run=run)


def run(args) -> int:
    raise SystemExit("pico report: not available yet")
