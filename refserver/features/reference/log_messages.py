"""The demo log messages the server sends unprompted (see `refserver.features.periodic`)."""

from __future__ import annotations

import random
from typing import Final

import mcp_types as types

LOG_LEVELS: Final[tuple[types.LoggingLevel, ...]] = (
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
)


def random_log_message() -> tuple[types.LoggingLevel, str]:
    """A demo `notifications/message` payload; the server filters it by the session's log level."""
    # Not for anything secret, so the module-level PRNG is fine.
    level = random.choice(LOG_LEVELS)
    return level, f"{level.capitalize()}-level message"
