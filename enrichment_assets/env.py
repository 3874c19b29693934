"""Settings read from the environment, with a one-line error naming the variable."""

from __future__ import annotations

import os


def env_int(name: str, default: int, minimum: int = 1) -> int:
    """A whole number from the environment (ValueError naming the variable when bad)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a whole number") from None
    if value < minimum:
        raise ValueError(f"{name}={raw!r}: expected at least {minimum}")
    return value
