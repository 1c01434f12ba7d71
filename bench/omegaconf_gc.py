"""How often omegaconf 2.4 crashes Python < 3.12 when the cyclic collector fires ContextVar-setting weakref callbacks
inside its ContextVar.set calls (CPython gh-148891), with and without pico_lightning.config.collector's pause.

    python -m bench.omegaconf_gc [--processes 8] [--configs 300]

Each process builds ``OmegaConf.structured(ExperimentConfig)`` ``--configs`` times among cyclic garbage whose weakref
callbacks set a ContextVar, in a context holding 20 other variables; the HAMT's shape follows the variables'
addresses, so a crash is a matter of chance per process. A process that exits non-zero (a segmentation fault, or a
LookupError from omegaconf's conversion_warning_mode) counts as failed. The modes: ``plain`` (the garbage and no
config), ``bare`` (configs, collector on), ``paused`` (configs inside ``collector_paused``)."""

from __future__ import annotations

import argparse
import contextvars
import gc
import subprocess
import sys
import weakref

MODES = ("plain", "bare", "paused")


def child(mode: str, configs: int) -> None:
    from omegaconf import OmegaConf

    from pico_lightning.config import ExperimentConfig
    from pico_lightning.config.collector import collector_paused

    for pad in [contextvars.ContextVar(f"pad_{i}") for i in range(20)]:
        pad.set(object())  # several HAMT levels: setting a variable allocates nodes, and may start a collection
    storage = contextvars.ContextVar("storage")
    refs = []

    class Node:
        pass

    def callback(_ref) -> None:
        storage.set({})  # re-enters contextvar_set from inside the collection

    gc.set_threshold(101, 1, 1)
    for _ in range(configs):
        for _ in range(50):
            a, b = Node(), Node()
            a.b, b.a = b, a
            refs.append(weakref.ref(a, callback))
        if len(refs) > 10000:
            del refs[:5000]
        if mode == "bare":
            OmegaConf.structured(ExperimentConfig)
        elif mode == "paused":
            with collector_paused():
                OmegaConf.structured(ExperimentConfig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=8, help="processes per mode")
    parser.add_argument("--configs", type=int, default=300, help="configs built per process")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.configs)
    print(f"python {sys.version.split()[0]}, {args.processes} processes per mode, {args.configs} configs each")
    print("| mode | processes | failed | exit codes |\n|---|---|---|---|")
    for mode in MODES:
        command = [sys.executable, "-m", "bench.omegaconf_gc", "--child", mode, "--configs", str(args.configs)]
        codes = [subprocess.run(command, capture_output=True).returncode for _ in range(args.processes)]
        failed = sum(code != 0 for code in codes)
        print(f"| {mode} | {args.processes} | {failed} | {' '.join(map(str, codes))} |", flush=True)


if __name__ == "__main__":
    main()
