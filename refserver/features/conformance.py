"""The fixtures of the official MCP conformance suite (`@modelcontextprotocol/conformance`).

Names, schemas, texts and values follow the suite's reference fixture server
(`examples/servers/typescript/everything-server.ts`), so that every scenario of the 2025-11-25
requirement set finds exactly what it looks for: the `test_*` tools, the `test://` resources and
template, the `test_*` prompts and a completion for `test_prompt_with_arguments`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

import mcp_types as types
import pydantic
import trio

from refserver.errors import ClientCapabilityMissing, ClientRequestFailed, InvalidParams
from refserver.features.catalog import (
    Catalog,
    Prompt,
    PromptRenderer,
    Resource,
    ResourceContents,
    ResourceReader,
    ResourceTemplate,
    Tool,
    ToolHandler,
)
from refserver.features.context import FeatureContext

TEST_IMAGE_BASE64: Final = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
"""A 1x1 red PNG."""
TEST_AUDIO_BASE64: Final = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="
"""A minimal WAV file (no samples)."""

PNG_MIME_TYPE: Final = "image/png"
WAV_MIME_TYPE: Final = "audio/wav"  # the suite checks this one exactly

STEP_DELAY: Final = 0.05
"""Seconds between the log and progress notifications of one call."""
RECONNECTION_DELAY: Final = 0.1
"""How long test_reconnection works after closing its stream (as the reference fixture does)."""
SAMPLING_MAX_TOKENS: Final = 100
MAX_COMPLETIONS: Final = 100

EMPTY_SCHEMA: Final[dict[str, Any]] = {"type": "object", "properties": {}}

JSON_SCHEMA_2020_12: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}
"""The inputSchema of json_schema_2020_12_tool, served verbatim (SEP-1613 / SEP-2106 checks)."""

ELICITATION_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"},
    },
    "required": ["username", "email"],
}

SEP1034_MESSAGE: Final = "Please review and update the form fields with defaults"
SEP1034_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
    "required": [],
}

SEP1330_MESSAGE: Final = "Please select options from the enum fields"
SEP1330_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "untitledSingle": {
            "type": "string",
            "description": "Select one option",
            "enum": ["option1", "option2", "option3"],
        },
        "titledSingle": {
            "type": "string",
            "description": "Select one option with titles",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "description": "Select one option (legacy)",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "description": "Select multiple options",
            "minItems": 1,
            "maxItems": 3,
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "description": "Select multiple options with titles",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
    "required": [],
}

ARG1_SUGGESTIONS: Final = ("testValue1", "testValue2", "testValue3", "sample", "example")

RECONNECTION_TEXT: Final = (
    "Reconnection test completed successfully. If you received this, the client properly reconnected "
    "after stream closure."
)

# --- helpers ------------------------------------------------------------------------------------------


def _text(text: str) -> types.TextContent:
    return types.TextContent(text=text)


def _image() -> types.ImageContent:
    return types.ImageContent(data=TEST_IMAGE_BASE64, mime_type=PNG_MIME_TYPE)


def _result(*content: types.ContentBlock, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=list(content), is_error=is_error)


def _compact_json(value: Any) -> str:
    """JSON as JavaScript's JSON.stringify writes it, so texts match the reference fixture."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


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


# --- tools --------------------------------------------------------------------------------------------


async def _simple_text(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    return _result(_text("This is a simple text response for testing."))


async def _image_content(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    return _result(_image())


async def _audio_content(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    return _result(types.AudioContent(data=TEST_AUDIO_BASE64, mime_type=WAV_MIME_TYPE))


async def _embedded_resource(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    return _result(
        types.EmbeddedResource(
            resource=types.TextResourceContents(
                uri="test://embedded-resource",
                mime_type="text/plain",
                text="This is an embedded resource content.",
            )
        )
    )


async def _multiple_content_types(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    return _result(
        _text("Multiple content types test:"),
        _image(),
        types.EmbeddedResource(
            resource=types.TextResourceContents(
                uri="test://mixed-content-resource",
                mime_type="application/json",
                text=_compact_json({"test": "data", "value": 123}),
            )
        ),
    )


async def _tool_with_logging(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    await ctx.log("info", "Tool execution started")
    await trio.sleep(STEP_DELAY)
    await ctx.log("info", "Tool processing data")
    await trio.sleep(STEP_DELAY)
    await ctx.log("info", "Tool execution completed")
    return _result(_text("Tool with logging executed successfully"))


async def _tool_with_progress(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    total = 100
    for index, step in enumerate((0, 50, 100)):
        if index:
            await trio.sleep(STEP_DELAY)
        await ctx.report_progress(step, total, f"Completed step {step} of {total}")
    # String(progressToken) in the reference fixture: "undefined" when the call carried none.
    token = ctx.progress_token
    return _result(_text("undefined" if token is None else str(token)))


async def _error_handling(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    return _result(_text("This tool intentionally returns an error for testing"), is_error=True)


async def _sampling(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    prompt = _string_argument(arguments, "prompt")
    try:
        result = await ctx.sample(
            types.CreateMessageRequestParams(
                messages=[types.SamplingMessage(role="user", content=_text(prompt))],
                max_tokens=SAMPLING_MAX_TOKENS,
            )
        )
    except (ClientCapabilityMissing, ClientRequestFailed, pydantic.ValidationError) as error:
        return _result(_text(f"Sampling not supported or error: {_describe_failure(error)}"))
    content = result.content
    if isinstance(content, types.TextContent):
        answer = content.text
    else:
        answer = f"[{content.type} content ({content.mime_type})]"
    return _result(_text(f"LLM response: {answer}"))


async def _elicit(ctx: FeatureContext, message: str, schema: dict[str, Any], label: str) -> types.CallToolResult:
    try:
        result = await ctx.elicit(types.ElicitRequestFormParams(message=message, requested_schema=schema))
    except (ClientCapabilityMissing, ClientRequestFailed, pydantic.ValidationError) as error:
        return _result(_text(f"Elicitation not supported or error: {_describe_failure(error)}"))
    return _result(_text(f"{label}: action={result.action}, content={_compact_json(result.content)}"))


async def _elicitation(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    message = _string_argument(arguments, "message")
    return await _elicit(ctx, message, ELICITATION_SCHEMA, "User response")


async def _elicitation_sep1034_defaults(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    return await _elicit(ctx, SEP1034_MESSAGE, SEP1034_SCHEMA, "Elicitation completed")


async def _elicitation_sep1330_enums(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    return await _elicit(ctx, SEP1330_MESSAGE, SEP1330_SCHEMA, "Elicitation completed")


async def _reconnection(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    # SEP-1699: end the client's connection now; the result goes to the stream's event log and
    # reaches the client when it resumes with Last-Event-ID.
    await ctx.close_sse_stream()
    await trio.sleep(RECONNECTION_DELAY)
    return _result(_text(RECONNECTION_TEXT))


async def _json_schema_2020_12(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    return _result(_text(f"JSON Schema 2020-12 tool called with: {_compact_json(arguments)}"))


def _tool(name: str, description: str, handler: ToolHandler, schema: dict[str, Any] | None = None) -> Tool:
    return Tool(
        definition=types.Tool(name=name, description=description, input_schema=schema or EMPTY_SCHEMA),
        handler=handler,
    )


def _tools() -> list[Tool]:
    return [
        _tool("test_simple_text", "Tests simple text content response", _simple_text),
        _tool("test_image_content", "Tests image content response", _image_content),
        _tool("test_audio_content", "Tests audio content response", _audio_content),
        _tool("test_embedded_resource", "Tests embedded resource content response", _embedded_resource),
        _tool(
            "test_multiple_content_types",
            "Tests response with multiple content types (text, image, resource)",
            _multiple_content_types,
        ),
        _tool("test_tool_with_logging", "Tests tool that emits log messages during execution", _tool_with_logging),
        _tool("test_tool_with_progress", "Tests tool that reports progress notifications", _tool_with_progress),
        _tool("test_error_handling", "Tests error response handling", _error_handling),
        _tool(
            "test_sampling",
            "Tests server-initiated sampling (LLM completion request)",
            _sampling,
            {
                "type": "object",
                "properties": {"prompt": {"type": "string", "description": "The prompt to send to the LLM"}},
                "required": ["prompt"],
            },
        ),
        _tool(
            "test_elicitation",
            "Tests server-initiated elicitation (user input request)",
            _elicitation,
            {
                "type": "object",
                "properties": {"message": {"type": "string", "description": "The message to show the user"}},
                "required": ["message"],
            },
        ),
        _tool(
            "test_elicitation_sep1034_defaults",
            "Tests elicitation with default values per SEP-1034",
            _elicitation_sep1034_defaults,
        ),
        _tool(
            "test_elicitation_sep1330_enums",
            "Tests elicitation with enum schema improvements per SEP-1330",
            _elicitation_sep1330_enums,
        ),
        _tool(
            "test_reconnection",
            "Tests SSE stream disconnection and client reconnection (SEP-1699). The server closes the "
            "stream mid-call and the result arrives after the client reconnects.",
            _reconnection,
        ),
        _tool(
            "json_schema_2020_12_tool",
            "Tool with JSON Schema 2020-12 features",
            _json_schema_2020_12,
            JSON_SCHEMA_2020_12,
        ),
    ]


# --- resources ----------------------------------------------------------------------------------------


def _fixed_reader(contents: ResourceContents) -> ResourceReader:
    async def read(ctx: FeatureContext) -> list[ResourceContents]:
        return [contents]

    return read


def _resource(name: str, description: str, contents: ResourceContents) -> Resource:
    definition = types.Resource(uri=contents.uri, name=name, description=description, mime_type=contents.mime_type)
    return Resource(definition=definition, read=_fixed_reader(contents))


def _resources() -> list[Resource]:
    return [
        _resource(
            "static-text",
            "A static text resource for testing",
            types.TextResourceContents(
                uri="test://static-text",
                mime_type="text/plain",
                text="This is the content of the static text resource.",
            ),
        ),
        _resource(
            "static-binary",
            "A static binary resource (image) for testing",
            types.BlobResourceContents(uri="test://static-binary", mime_type=PNG_MIME_TYPE, blob=TEST_IMAGE_BASE64),
        ),
        _resource(
            "watched-resource",
            "A resource that can be subscribed to for updates",
            types.TextResourceContents(
                uri="test://watched-resource", mime_type="text/plain", text="Watched resource content"
            ),
        ),
    ]


async def _read_template(uri: str, variables: dict[str, str], ctx: FeatureContext) -> list[ResourceContents]:
    item_id = variables["id"]
    data = {"id": item_id, "templateTest": True, "data": f"Data for ID: {item_id}"}
    return [types.TextResourceContents(uri=uri, mime_type="application/json", text=_compact_json(data))]


def _templates() -> list[ResourceTemplate]:
    return [
        ResourceTemplate(
            definition=types.ResourceTemplate(
                uri_template="test://template/{id}/data",
                name="template",
                description="A resource template with parameter substitution",
                mime_type="application/json",
            ),
            read=_read_template,
        )
    ]


# --- prompts and completions --------------------------------------------------------------------------


async def _complete_arg1(partial: str, chosen: Mapping[str, str]) -> list[str]:
    prefix = partial.casefold()
    return [value for value in ARG1_SUGGESTIONS if value.casefold().startswith(prefix)][:MAX_COMPLETIONS]


def _required(arguments: Mapping[str, str], name: str) -> str:
    value = arguments.get(name)
    if value is None:  # the dispatcher checks required arguments; this is the second line
        raise InvalidParams(f"Missing required argument: {name}")
    return value


async def _simple_prompt(arguments: dict[str, str], ctx: FeatureContext) -> types.GetPromptResult:
    return types.GetPromptResult(
        messages=[types.PromptMessage(role="user", content=_text("This is a simple prompt for testing."))]
    )


async def _prompt_with_arguments(arguments: dict[str, str], ctx: FeatureContext) -> types.GetPromptResult:
    arg1 = _required(arguments, "arg1")
    arg2 = _required(arguments, "arg2")
    return types.GetPromptResult(
        messages=[
            types.PromptMessage(role="user", content=_text(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"))
        ]
    )


_ABSOLUTE_URI: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s<>\"{}|\\^`]+")


async def _prompt_with_embedded_resource(arguments: dict[str, str], ctx: FeatureContext) -> types.GetPromptResult:
    uri = _required(arguments, "resourceUri")
    if not _ABSOLUTE_URI.fullmatch(uri):
        # Embedded resource contents must carry an absolute URI (the schema's `uri` format).
        raise InvalidParams(f"resourceUri is not an absolute URI: {uri!r}", data={"argument": "resourceUri"})
    return types.GetPromptResult(
        messages=[
            types.PromptMessage(
                role="user",
                content=types.EmbeddedResource(
                    resource=types.TextResourceContents(
                        uri=uri, mime_type="text/plain", text="Embedded resource content for testing."
                    )
                ),
            ),
            types.PromptMessage(role="user", content=_text("Please process the embedded resource above.")),
        ]
    )


async def _prompt_with_image(arguments: dict[str, str], ctx: FeatureContext) -> types.GetPromptResult:
    return types.GetPromptResult(
        messages=[
            types.PromptMessage(role="user", content=_image()),
            types.PromptMessage(role="user", content=_text("Please analyze the image above.")),
        ]
    )


def _prompt(
    name: str, description: str, render: PromptRenderer, arguments: list[types.PromptArgument] | None = None
) -> Prompt:
    return Prompt(definition=types.Prompt(name=name, description=description, arguments=arguments), render=render)


def _prompts() -> list[Prompt]:
    return [
        _prompt("test_simple_prompt", "A simple prompt without arguments", _simple_prompt),
        Prompt(
            definition=types.Prompt(
                name="test_prompt_with_arguments",
                description="A prompt with required arguments",
                arguments=[
                    types.PromptArgument(name="arg1", description="First test argument", required=True),
                    types.PromptArgument(name="arg2", description="Second test argument", required=True),
                ],
            ),
            render=_prompt_with_arguments,
            completions={"arg1": _complete_arg1},
        ),
        _prompt(
            "test_prompt_with_embedded_resource",
            "A prompt that includes an embedded resource",
            _prompt_with_embedded_resource,
            [types.PromptArgument(name="resourceUri", description="URI of the resource to embed", required=True)],
        ),
        _prompt("test_prompt_with_image", "A prompt that includes image content", _prompt_with_image),
    ]


# --- the catalog --------------------------------------------------------------------------------------


def build_catalog() -> Catalog:
    return Catalog(tools=_tools(), resources=_resources(), templates=_templates(), prompts=_prompts())
