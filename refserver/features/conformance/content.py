"""The media and content blocks the conformance fixtures share across tools, resources and prompts, and the
way a fixture tool is declared.

Values are the suite's own (a 1x1 PNG, an empty WAV), and JSON is written as JavaScript writes it,
so texts match the reference fixture byte for byte.
"""

from __future__ import annotations

import json
from typing import Any, Final

import mcp_types as types

from refserver.features.catalog import Tool, ToolHandler
from refserver.features.conformance.schemas import EMPTY_SCHEMA

TEST_IMAGE_BASE64: Final = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
"""A 1x1 red PNG."""
TEST_AUDIO_BASE64: Final = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="
"""A minimal WAV file (no samples)."""

PNG_MIME_TYPE: Final = "image/png"
WAV_MIME_TYPE: Final = "audio/wav"  # the suite checks this one exactly


def text(text: str) -> types.TextContent:
    return types.TextContent(text=text)


def image() -> types.ImageContent:
    return types.ImageContent(data=TEST_IMAGE_BASE64, mime_type=PNG_MIME_TYPE)


def compact_json(value: Any) -> str:
    """JSON as JavaScript's JSON.stringify writes it, so texts match the reference fixture."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def tool_result(*content: types.ContentBlock, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=list(content), is_error=is_error)


def fixture_tool(name: str, description: str, handler: ToolHandler, schema: dict[str, Any] | None = None) -> Tool:
    """A fixture tool; without a schema it takes no arguments."""
    return Tool(
        definition=types.Tool(name=name, description=description, input_schema=schema or EMPTY_SCHEMA),
        handler=handler,
    )
