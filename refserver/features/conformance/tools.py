"""The conformance suite's `test_*` tools (and `json_schema_2020_12_tool`): handlers and definitions.

Each handler produces what one scenario of the suite checks for: content types, logging and progress
notifications, sampling and elicitation round trips, an error result, and SSE stream resumption.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import mcp_types as types
import pydantic
import trio

from refserver.errors import ClientCapabilityMissing, ClientRequestFailed, InvalidParams
from refserver.features.catalog import Tool, ToolOutcome
from refserver.features.conformance.content import (
    TEST_AUDIO_BASE64,
    WAV_MIME_TYPE,
    compact_json,
    fixture_tool,
    image,
    text,
    tool_result,
)
from refserver.features.conformance.schemas import (
    ELICITATION_SCHEMA,
    JSON_SCHEMA_2020_12,
    SEP1034_MESSAGE,
    SEP1034_SCHEMA,
    SEP1330_MESSAGE,
    SEP1330_SCHEMA,
)
from refserver.features.context import FeatureContext
from refserver.features.inputs import answer, ask, elicitation, sampling

STEP_DELAY: Final = 0.05
"""Seconds between the log and progress notifications of one call."""
RECONNECTION_DELAY: Final = 0.1
"""How long test_reconnection works after closing its stream (as the reference fixture does)."""
SAMPLING_MAX_TOKENS: Final = 100

RECONNECTION_TEXT: Final = (
    "Reconnection test completed successfully. If you received this, the client properly reconnected "
    "after stream closure."
)


def _string_argument(arguments: Mapping[str, Any], key: str) -> str:
    # The dispatcher has validated `arguments` against the tool's schema already.
    value = arguments.get(key)
    if not isinstance(value, str):
        raise InvalidParams(f"'{key}' must be a string")
    return value


def _describe_failure(error: Exception) -> str:
    if isinstance(error, ClientCapabilityMissing | ClientRequestFailed):
        return error.message
    if isinstance(error, pydantic.ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'result'}: {problem['msg']}"
            for problem in error.errors(include_url=False, include_input=False)
        )
        return f"the client's answer is not a valid {error.title}: {problems}"
    return str(error)


# --- handlers -----------------------------------------------------------------------------------------


async def _simple_text(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    return tool_result(text("This is a simple text response for testing."))


async def _image_content(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    return tool_result(image())


async def _audio_content(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    return tool_result(types.AudioContent(data=TEST_AUDIO_BASE64, mime_type=WAV_MIME_TYPE))


async def _embedded_resource(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    return tool_result(
        types.EmbeddedResource(
            resource=types.TextResourceContents(
                uri="test://embedded-resource",
                mime_type="text/plain",
                text="This is an embedded resource content.",
            )
        )
    )


async def _multiple_content_types(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    return tool_result(
        text("Multiple content types test:"),
        image(),
        types.EmbeddedResource(
            resource=types.TextResourceContents(
                uri="test://mixed-content-resource",
                mime_type="application/json",
                text=compact_json({"test": "data", "value": 123}),
            )
        ),
    )


async def _tool_with_logging(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    await ctx.log("info", "Tool execution started")
    await trio.sleep(STEP_DELAY)
    await ctx.log("info", "Tool processing data")
    await trio.sleep(STEP_DELAY)
    await ctx.log("info", "Tool execution completed")
    return tool_result(text("Tool with logging executed successfully"))


async def _tool_with_progress(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    total = 100
    for index, step in enumerate((0, 50, 100)):
        if index:
            await trio.sleep(STEP_DELAY)
        await ctx.report_progress(step, total, f"Completed step {step} of {total}")
    # String(progressToken) in the reference fixture: "undefined" when the call carried none.
    token = ctx.progress_token
    return tool_result(text("undefined" if token is None else str(token)))


async def _error_handling(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    return tool_result(text("This tool intentionally returns an error for testing"), is_error=True)


async def _sampling(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    prompt = _string_argument(arguments, "prompt")
    try:
        result = answer(ctx, "sample", types.CreateMessageResult)
        if result is None:
            return ask(
                ctx,
                sample=sampling(
                    types.CreateMessageRequestParams(
                        messages=[types.SamplingMessage(role="user", content=text(prompt))],
                        max_tokens=SAMPLING_MAX_TOKENS,
                    )
                ),
            )
    except (ClientCapabilityMissing, ClientRequestFailed, pydantic.ValidationError) as error:
        return tool_result(text(f"Sampling not supported or error: {_describe_failure(error)}"))
    content = result.content
    if isinstance(content, types.TextContent):
        reply = content.text
    else:
        reply = f"[{content.type} content ({content.mime_type})]"
    return tool_result(text(f"LLM response: {reply}"))


async def _elicit(ctx: FeatureContext, message: str, schema: dict[str, Any], label: str) -> ToolOutcome:
    try:
        result = answer(ctx, "elicit", types.ElicitResult)
        if result is None:
            return ask(ctx, elicit=elicitation(types.ElicitRequestFormParams(message=message, requested_schema=schema)))
    except (ClientCapabilityMissing, ClientRequestFailed, pydantic.ValidationError) as error:
        return tool_result(text(f"Elicitation not supported or error: {_describe_failure(error)}"))
    return tool_result(text(f"{label}: action={result.action}, content={compact_json(result.content)}"))


async def _elicitation(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    message = _string_argument(arguments, "message")
    return await _elicit(ctx, message, ELICITATION_SCHEMA, "User response")


async def _elicitation_sep1034_defaults(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    return await _elicit(ctx, SEP1034_MESSAGE, SEP1034_SCHEMA, "Elicitation completed")


async def _elicitation_sep1330_enums(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    return await _elicit(ctx, SEP1330_MESSAGE, SEP1330_SCHEMA, "Elicitation completed")


async def _reconnection(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    # SEP-1699: end the client's connection now; the result goes to the stream's event log and
    # reaches the client when it resumes with Last-Event-ID.
    await ctx.close_sse_stream()
    await trio.sleep(RECONNECTION_DELAY)
    return tool_result(text(RECONNECTION_TEXT))


async def _json_schema_2020_12(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    return tool_result(text(f"JSON Schema 2020-12 tool called with: {compact_json(arguments)}"))


# --- definitions ---------------------------------------------------------------------------------


def build_tools() -> list[Tool]:
    return [
        fixture_tool("test_simple_text", "Tests simple text content response", _simple_text),
        fixture_tool("test_image_content", "Tests image content response", _image_content),
        fixture_tool("test_audio_content", "Tests audio content response", _audio_content),
        fixture_tool("test_embedded_resource", "Tests embedded resource content response", _embedded_resource),
        fixture_tool(
            "test_multiple_content_types",
            "Tests response with multiple content types (text, image, resource)",
            _multiple_content_types,
        ),
        fixture_tool(
            "test_tool_with_logging", "Tests tool that emits log messages during execution", _tool_with_logging
        ),
        fixture_tool("test_tool_with_progress", "Tests tool that reports progress notifications", _tool_with_progress),
        fixture_tool("test_error_handling", "Tests error response handling", _error_handling),
        fixture_tool(
            "test_sampling",
            "Tests server-initiated sampling (LLM completion request)",
            _sampling,
            {
                "type": "object",
                "properties": {"prompt": {"type": "string", "description": "The prompt to send to the LLM"}},
                "required": ["prompt"],
            },
        ),
        fixture_tool(
            "test_elicitation",
            "Tests server-initiated elicitation (user input request)",
            _elicitation,
            {
                "type": "object",
                "properties": {"message": {"type": "string", "description": "The message to show the user"}},
                "required": ["message"],
            },
        ),
        fixture_tool(
            "test_elicitation_sep1034_defaults",
            "Tests elicitation with default values per SEP-1034",
            _elicitation_sep1034_defaults,
        ),
        fixture_tool(
            "test_elicitation_sep1330_enums",
            "Tests elicitation with enum schema improvements per SEP-1330",
            _elicitation_sep1330_enums,
        ),
        fixture_tool(
            "test_reconnection",
            "Tests SSE stream disconnection and client reconnection (SEP-1699). The server closes the "
            "stream mid-call and the result arrives after the client reconnects.",
            _reconnection,
        ),
        fixture_tool(
            "json_schema_2020_12_tool",
            "Tool with JSON Schema 2020-12 features",
            _json_schema_2020_12,
            JSON_SCHEMA_2020_12,
        ),
    ]
