"""`pico export`: placeholder until its issue lands."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("export", help="(not yet available)")
    parser.set_defaults(run=run)


def run(args) -> int:
    raise SystemExit("pico export: not available yet")
