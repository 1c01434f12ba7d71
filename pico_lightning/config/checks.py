"""The config's error type and its one-line check helper (no torch import)."""

from __future__ import annotations

from pico_lightning.errors import UserError


class ConfigError(UserError):
    """A user-facing configuration problem; its message is one line naming the key and the expectation."""


def check(ok: bool, key: str, expected: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")
