"""The config's error type, its one-line check helper and OmegaConf's errors in one line (no torch import)."""

from __future__ import annotations

from omegaconf.errors import OmegaConfBaseException

from pico_lightning.errors import UserError


class ConfigError(UserError):
    """A user-facing configuration problem; its message is one line naming the key and the expectation."""


def check(ok: bool, key: str, expected: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")


def describe(err: OmegaConfBaseException) -> str:
    """``key: message`` of an OmegaConf error (unknown key, wrong type, ...), in one line."""
    key = getattr(err, "full_key", None) or "?"
    message = str(getattr(err, "msg", None) or err).splitlines()[0]
    if "is not a ListConfig" in message:  # a scalar where a list goes: say how to write one
        message = f"expected a list like [{getattr(err, 'value', None) or 'a, b'}]"
    return f"{key}: {message}"
