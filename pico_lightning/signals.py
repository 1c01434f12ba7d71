"""The process's stop signals: SIGUSR1 (SLURM's warning before a time limit) and SIGTERM, latched, not obeyed at once.

A job's processes get these signals at any moment, also while Python is still importing torch or loading a model.
`pico train` and `pico embed` arm :data:`LATCH` first thing, so a signal only records itself; the training loop reads
it between steps and evaluation episodes (training/preemption.py) and `pico embed` after its prompts are cached. No
heavy import here.

A process that keeps its latch to the end (``armed(keep=True)``) ignores stop signals from its interpreter's shutdown
on: Python resets its handlers to the default action before it tears its modules down (seconds, with torch and CUDA
loaded), and a signal in that window, the time-limit warning included, would kill the process after its work was
done: the job ends FAILED with 138 (or 143) and nothing requeues it.
"""

from __future__ import annotations

import atexit
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class StopLatch:
    """The first stop signal received while armed (``received``, a signal number, or None)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._depth = 0

    def note(self, signum: int, frame=None) -> None:
        if self.received is None:
            self.received = signum

    def install(self) -> None:
        """(Re)install the latch as the handler of every stop signal, e.g. after a library replaced it."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self.note)

    @contextmanager
    def armed(self, keep: bool = False) -> Iterator[StopLatch]:
        """The latch handles stop signals inside the block, the previous handlers after it (``keep``: the latch
        stays, for a process about to exit, and the signals are ignored once the interpreter shuts down); the
        outermost block starts with nothing received."""
        previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        if self._depth == 0:
            self.received = None
        self._depth += 1
        self.install()
        if keep:
            atexit.unregister(ignore_stop_signals)  # once per process, however many commands it runs
            atexit.register(ignore_stop_signals)  # atexit runs before the interpreter resets its signal handlers
        try:
            yield self
        finally:
            self._depth -= 1
            for signum, handler in previous.items():
                if not keep:
                    signal.signal(signum, handler)


def ignore_stop_signals() -> None:
    """Stop signals do nothing from here on (an ignored signal stays ignored through interpreter shutdown)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def in_slurm_job() -> bool:
    """Inside a SLURM job a signal can come after the work is done (the time-limit warning of a run that just
    finished, the SIGTERM of its own requeue): a command's process keeps its latch to the end and exits with its
    own code, where the default action would end it as killed, and the job as failed."""
    return "SLURM_JOB_ID" in os.environ


LATCH = StopLatch()
