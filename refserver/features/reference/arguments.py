"""Reading tool arguments defensively, and turning a bad one into a tool error rather than a protocol one.

The dispatcher validates arguments against each tool's schema first; this is the second line, for
whatever JSON Schema cannot say (finite numbers) or a dispatcher that skipped validation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import mcp_types as types

from refserver.features.catalog import ToolHandler, ToolOutcome
from refserver.features.context import FeatureContext


class BadArgument(ValueError):
    """A tool argument the schema should have rejected; reported as a tool error, not a protocol one."""


def _tool_error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=message)], is_error=True)


def guarded(handler: ToolHandler) -> ToolHandler:
    async def call(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
        try:
            return await handler(arguments, ctx)
        except BadArgument as error:
            return _tool_error(f"Invalid arguments: {error}")

    return call


def number(arguments: Mapping[str, Any], key: str, default: float | None = None) -> float:
    value = arguments.get(key, default)
    # bool is an int subclass in Python but not a JSON number.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadArgument(f"'{key}' must be a finite number")
    return float(value) if not isinstance(value, int) else value


def integer(arguments: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = number(arguments, key, default)
    # JSON Schema counts 5.0 as an integer, so accept it the same way.
    if isinstance(value, float):
        if not value.is_integer():
            raise BadArgument(f"'{key}' must be an integer")
        return int(value)
    return value


def string(arguments: Mapping[str, Any], key: str) -> str:
    value = arguments.get(key)
    if not isinstance(value, str):
        raise BadArgument(f"'{key}' must be a string")
    return value


def boolean(arguments: Mapping[str, Any], key: str, default: bool) -> bool:
    value = arguments.get(key, default)
    if not isinstance(value, bool):
        raise BadArgument(f"'{key}' must be a boolean")
    return value
