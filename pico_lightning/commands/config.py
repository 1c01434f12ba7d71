"""`pico config keys [SECTION]`: every experiment key with its type, default and what it does.

pico config keys            # all sections
pico config keys train      # train.* only (or a single key: pico config keys train.lr)
"""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "config",
        help="list the experiment keys (type, default, docstring)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("what", choices=["keys"], help="keys: list the config keys")
    parser.add_argument("section", nargs="?", help="a section (model, lora, data, train, eval, logging, run) or key")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pico_lightning.config.keys import config_keys
    from pico_lightning.errors import UserError

    keys = config_keys()
    if args.section:
        keys = [key for key in keys if key.name == args.section or key.name.startswith(f"{args.section}.")]
        if not keys:
            sections = sorted({key.name.split(".")[0] for key in config_keys()})
            raise UserError(f"{args.section}: no such section or key; sections are {', '.join(sections)}")
    for key in keys:
        print(f"{key.name}: {key.type} = {json.dumps(key.default)}")
        for line in key.doc.splitlines():
            print(f"    {line}")
    return 0
