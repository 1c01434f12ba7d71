"""omegaconf calls with Python's cyclic garbage collector paused, on the Pythons that need it.

Before 3.12, CPython can lose or free a context's variables when the cyclic collector runs inside
``ContextVar.set`` (the HAMT allocates a node) and a weakref callback or finaliser it fires sets a ContextVar
itself: the HAMT being read is freed (CPython gh-148891, open; 3.12's collector no longer triggers it).
omegaconf 2.4 sets and resets its ``conversion_warning_mode`` ContextVar around every container operation, so a
process that builds configs among a fit's garbage can see ``LookupError: <ContextVar
name='conversion_warning_mode'>`` on every config it builds for a while, or a segmentation fault
(bench/omegaconf_gc.py reproduces it). The config layer's omegaconf work is short and allocates little:
it runs with the collector paused, which removes the collection from inside those ``set`` calls.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

AFFECTED = sys.version_info < (3, 12)


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic collector off inside the block where the interpreter is affected and the collector is on (nested
    blocks and a collector the caller turned off are left as they are); a decorator too."""
    if not AFFECTED or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
