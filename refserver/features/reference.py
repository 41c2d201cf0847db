"""The demo features of the MCP reference ("everything") server.

Tools, resources, a resource template, prompts and completions mirror the TypeScript reference
server so that clients and inspectors written against it see the same names, shapes and texts.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import math
import random
import re
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import mcp_types as types
import trio

from refserver.errors import InvalidParams, ResourceNotFound
from refserver.features.catalog import (
    Catalog,
    Completer,
    Prompt,
    Resource,
    ResourceContents,
    ResourceReader,
    ResourceTemplate,
    Tool,
    ToolHandler,
)
from refserver.features.context import FeatureContext

RESOURCE_COUNT: Final = 100
RESOURCE_URI_PREFIX: Final = "test://static/resource/"
RESOURCE_URI_TEMPLATE: Final = RESOURCE_URI_PREFIX + "{id}"

PNG_MIME_TYPE: Final = "image/png"
MAX_COMPLETIONS: Final = 100  # the most values a completion/complete result may carry

# Bounds keep one call from pinning a request (and its stream) open for hours.
MAX_OPERATION_SECONDS: Final = 300
MAX_OPERATION_STEPS: Final = 1000
MAX_SAMPLING_TOKENS: Final = 100_000

TEMPERATURE_CHOICES: Final = ("0", "0.5", "0.7", "1.0")
STYLE_CHOICES: Final = ("casual", "formal", "technical", "friendly")
WEATHER_CONDITIONS: Final = (
    "Sunny",
    "Partly cloudy",
    "Cloudy",
    "Overcast",
    "Light rain",
    "Heavy rain",
    "Thunderstorms",
    "Snow",
    "Fog",
    "Windy",
)
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

# --- the tiny image ---------------------------------------------------------------------------------


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def encode_png_rgba(width: int, height: int, pixels: Sequence[Sequence[tuple[int, int, int, int]]]) -> bytes:
    """A minimal but spec-valid PNG (8-bit RGBA, no interlace), so no imaging library is needed."""
    # Each scanline starts with its filter type; 0 ("None") keeps the encoder trivial.
    raw = b"".join(b"\x00" + b"".join(bytes(pixel) for pixel in row) for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw, 9))
        + _png_chunk(b"IEND", b"")
    )


def _tiny_image_pixels(size: int) -> list[list[tuple[int, int, int, int]]]:
    # Two parallel diagonal strokes on a transparent square: a nod to the MCP logo's linked strokes.
    ink = (20, 20, 20, 255)
    clear = (0, 0, 0, 0)
    rows = []
    for y in range(size):
        row = []
        for x in range(size):
            diagonal = x + y - size // 2
            on_stroke = abs(diagonal - size // 4) <= 1 or abs(diagonal - 3 * size // 4) <= 1
            inside = 1 <= x < size - 1 and 1 <= y < size - 1
            row.append(ink if on_stroke and inside else clear)
        rows.append(row)
    return rows


TINY_IMAGE_SIZE: Final = 16
TINY_IMAGE_PNG: Final = encode_png_rgba(TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, _tiny_image_pixels(TINY_IMAGE_SIZE))
TINY_IMAGE_BASE64: Final = base64.b64encode(TINY_IMAGE_PNG).decode("ascii")


def tiny_image(annotations: types.Annotations | None = None) -> types.ImageContent:
    return types.ImageContent(data=TINY_IMAGE_BASE64, mime_type=PNG_MIME_TYPE, annotations=annotations)


# --- resources ----------------------------------------------------------------------------------------


def resource_uri(resource_id: int) -> str:
    return f"{RESOURCE_URI_PREFIX}{resource_id}"


def resource_contents(resource_id: int) -> list[ResourceContents]:
    """The contents `resources/read` returns for a static resource; odd ids are text, even ids binary."""
    uri = resource_uri(resource_id)
    if not 1 <= resource_id <= RESOURCE_COUNT:
        raise ResourceNotFound(f"Resource not found: {uri}", data={"uri": uri})
    if resource_id % 2 == 1:
        return [
            types.TextResourceContents(
                uri=uri, mime_type="text/plain", text=f"Resource {resource_id}: This is a plaintext resource"
            )
        ]
    payload = f"Resource {resource_id}: This is a base64 blob".encode()
    return [
        types.BlobResourceContents(
            uri=uri,
            mime_type="application/octet-stream",
            blob=base64.b64encode(payload).decode("ascii"),
        )
    ]


def _static_reader(resource_id: int) -> ResourceReader:
    async def read(ctx: FeatureContext) -> list[ResourceContents]:
        return resource_contents(resource_id)

    return read


def _static_resources() -> list[Resource]:
    resources = []
    for resource_id in range(1, RESOURCE_COUNT + 1):
        mime_type = "text/plain" if resource_id % 2 == 1 else "application/octet-stream"
        definition = types.Resource(uri=resource_uri(resource_id), name=f"Resource {resource_id}", mime_type=mime_type)
        resources.append(Resource(definition=definition, read=_static_reader(resource_id)))
    return resources


_CANONICAL_ID: Final = re.compile(r"[1-9][0-9]*")
_DECIMAL: Final = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() would also accept e.g. Arabic digits


def parse_resource_id(value: str) -> int | None:
    """A resource id written in decimal (as prompt arguments arrive), or None if it is not one."""
    text = value.strip()
    if not _DECIMAL.fullmatch(text):
        return None
    resource_id = int(text)
    return resource_id if 1 <= resource_id <= RESOURCE_COUNT else None


async def _read_from_template(uri: str, variables: dict[str, str], ctx: FeatureContext) -> list[ResourceContents]:
    raw_id = variables.get("id", "")
    # Only the canonical spelling names a resource, so one resource never answers to several URIs.
    resource_id = parse_resource_id(raw_id) if _CANONICAL_ID.fullmatch(raw_id) else None
    if resource_id is None:
        raise ResourceNotFound(f"Resource not found: {uri}", data={"uri": uri})
    return resource_contents(resource_id)


# --- completions --------------------------------------------------------------------------------------


def _choices_completer(choices: Iterable[str]) -> Completer:
    frozen = tuple(choices)

    async def complete(partial: str, _chosen: Mapping[str, str]) -> list[str]:
        prefix = partial.casefold()
        return [choice for choice in frozen if choice.casefold().startswith(prefix)][:MAX_COMPLETIONS]

    return complete


_complete_resource_id: Final = _choices_completer(str(i) for i in range(1, RESOURCE_COUNT + 1))


# --- tools --------------------------------------------------------------------------------------------


class _BadArgument(ValueError):
    """A tool argument the schema should have rejected; reported as a tool error, not a protocol one."""


def _tool_error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=message)], is_error=True)


def _guarded(handler: ToolHandler) -> ToolHandler:
    # The dispatcher validates arguments against the schema first; this is the second line, for
    # whatever JSON Schema cannot say (finite numbers) or a dispatcher that skipped validation.
    async def call(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
        try:
            return await handler(arguments, ctx)
        except _BadArgument as error:
            return _tool_error(f"Invalid arguments: {error}")

    return call


def _number(arguments: Mapping[str, Any], key: str, default: float | None = None) -> float:
    value = arguments.get(key, default)
    # bool is an int subclass in Python but not a JSON number.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _BadArgument(f"'{key}' must be a finite number")
    return float(value) if not isinstance(value, int) else value


def _integer(arguments: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = _number(arguments, key, default)
    # JSON Schema counts 5.0 as an integer, so accept it the same way.
    if isinstance(value, float):
        if not value.is_integer():
            raise _BadArgument(f"'{key}' must be an integer")
        return int(value)
    return value


def _string(arguments: Mapping[str, Any], key: str) -> str:
    value = arguments.get(key)
    if not isinstance(value, str):
        raise _BadArgument(f"'{key}' must be a string")
    return value


def _boolean(arguments: Mapping[str, Any], key: str, default: bool) -> bool:
    value = arguments.get(key, default)
    if not isinstance(value, bool):
        raise _BadArgument(f"'{key}' must be a boolean")
    return value


def format_number(value: float) -> str:
    """Numbers as the TypeScript reference prints them (`3`, not `3.0`), so texts match across servers."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)


def _text(text: str, annotations: types.Annotations | None = None) -> types.TextContent:
    return types.TextContent(text=text, annotations=annotations)


def _result(*content: types.ContentBlock) -> types.CallToolResult:
    return types.CallToolResult(content=list(content))


def _object_schema(properties: dict[str, Any], required: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def _annotations(title: str, *, read_only: bool, idempotent: bool, open_world: bool = False) -> types.ToolAnnotations:
    return types.ToolAnnotations(
        title=title,
        read_only_hint=read_only,
        destructive_hint=False,
        idempotent_hint=idempotent,
        open_world_hint=open_world,
    )


async def _echo(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    return _result(_text(f"Echo: {_string(arguments, 'message')}"))


async def _add(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    a = _number(arguments, "a")
    b = _number(arguments, "b")
    total = a + b
    if not math.isfinite(total):
        raise _BadArgument("the sum is not a finite number")
    return _result(_text(f"The sum of {format_number(a)} and {format_number(b)} is {format_number(total)}."))


async def _long_running_operation(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    duration = _number(arguments, "duration", 10)
    steps = _integer(arguments, "steps", 5)
    if not 0 <= duration <= MAX_OPERATION_SECONDS:
        raise _BadArgument(f"'duration' must be between 0 and {MAX_OPERATION_SECONDS} seconds")
    if not 1 <= steps <= MAX_OPERATION_STEPS:
        raise _BadArgument(f"'steps' must be between 1 and {MAX_OPERATION_STEPS}")
    for step in range(1, steps + 1):
        await trio.sleep(duration / steps)
        await ctx.report_progress(step, steps, f"Step {step} of {steps}")
    return _result(
        _text(f"Long running operation completed. Duration: {format_number(duration)} seconds, Steps: {steps}.")
    )


def describe_sampled_content(content: types.SamplingContent) -> str:
    if isinstance(content, types.TextContent):
        return content.text
    return f"[{content.type} content ({content.mime_type}), {len(content.data)} base64 characters]"


async def _sample_llm(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    prompt = _string(arguments, "prompt")
    max_tokens = _integer(arguments, "maxTokens", 100)
    if not 1 <= max_tokens <= MAX_SAMPLING_TOKENS:
        raise _BadArgument(f"'maxTokens' must be between 1 and {MAX_SAMPLING_TOKENS}")
    result = await ctx.sample(
        types.CreateMessageRequestParams(
            messages=[
                types.SamplingMessage(
                    role="user", content=types.TextContent(text=f"Resource sampleLLM context: {prompt}")
                )
            ],
            system_prompt="You are a helpful test server.",
            max_tokens=max_tokens,
            temperature=0.7,
            include_context="thisServer",
        )
    )
    return _result(_text(f"LLM sampling result: {describe_sampled_content(result.content)}"))


async def _get_tiny_image(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    return _result(
        _text("This is a tiny image:"),
        tiny_image(),
        _text("The image above is the MCP tiny image."),
    )


_ANNOTATED_MESSAGES: Final[Mapping[str, tuple[str, types.Annotations]]] = {
    "error": ("Error: Operation failed", types.Annotations(priority=1.0, audience=["user", "assistant"])),
    "success": ("Operation completed successfully", types.Annotations(priority=0.7, audience=["user"])),
    "debug": (
        "Debug: Cache hit ratio 0.95, latency 150ms",
        types.Annotations(priority=0.3, audience=["assistant"]),
    ),
}


async def _annotated_message(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    message_type = _string(arguments, "messageType")
    include_image = _boolean(arguments, "includeImage", False)
    if message_type not in _ANNOTATED_MESSAGES:
        raise _BadArgument(f"'messageType' must be one of {', '.join(_ANNOTATED_MESSAGES)}")
    text, annotations = _ANNOTATED_MESSAGES[message_type]
    content: list[types.ContentBlock] = [_text(text, annotations)]
    if include_image:
        # An image is for the user to look at; the assistant gains little from it.
        content.append(tiny_image(types.Annotations(priority=0.5, audience=["user"])))
    return types.CallToolResult(content=content)


async def _get_resource_reference(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    resource_id = _integer(arguments, "resourceId")
    if not 1 <= resource_id <= RESOURCE_COUNT:
        raise _BadArgument(f"'resourceId' must be between 1 and {RESOURCE_COUNT}")
    (contents,) = resource_contents(resource_id)
    return _result(
        _text(f"Returning resource reference for Resource {resource_id}:"),
        types.EmbeddedResource(resource=contents),
        _text(f"You can access this resource using the URI: {contents.uri}"),
    )


ELICITATION_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "title": "Full Name", "description": "Your full, legal name"},
        "check": {
            "type": "boolean",
            "title": "Terms",
            "description": "Agree to the terms and conditions",
        },
        "email": {
            "type": "string",
            "format": "email",
            "title": "Email Address",
            "description": "Your primary email address",
        },
        "age": {
            "type": "integer",
            "title": "Age",
            "description": "Your age in years",
            "minimum": 0,
            "maximum": 150,
        },
        "color": {
            "type": "string",
            "title": "Favorite Color",
            "description": "Your favorite color",
            "enum": ["red", "green", "blue"],
            "enumNames": ["Red", "Green", "Blue"],
        },
    },
    "required": ["name"],
}


async def _elicit_inputs(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    result = await ctx.elicit(
        types.ElicitRequestFormParams(
            message="Please provide inputs for the following fields:",
            # A copy, so that nothing downstream can alter the shared schema.
            requested_schema=copy.deepcopy(ELICITATION_SCHEMA),
        )
    )
    if result.action == "accept":
        provided = json.dumps(result.content or {}, indent=2, ensure_ascii=False)
        return _result(_text(f"✅ User provided the requested information:\n{provided}"))
    if result.action == "decline":
        return _result(_text("❌ User declined to provide the requested information."))
    return _result(_text("⚠️ User cancelled the elicitation dialog."))


WEATHER_OUTPUT_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "temperature": {"type": "number", "description": "Temperature in celsius"},
        "conditions": {"type": "string", "description": "Weather conditions description"},
        "humidity": {"type": "number", "description": "Humidity percentage"},
    },
    "required": ["temperature", "conditions", "humidity"],
}


def weather_for(location: str) -> dict[str, Any]:
    """Made-up but stable weather: the same place always gets the same report, on every instance."""
    # hash() is salted per process, which would give different answers behind a load balancer.
    digest = hashlib.sha256(location.strip().casefold().encode()).digest()
    temperature = round(-10.0 + int.from_bytes(digest[0:2], "big") % 451 / 10, 1)  # -10.0 .. 35.0
    conditions = WEATHER_CONDITIONS[digest[2] % len(WEATHER_CONDITIONS)]
    humidity = 20 + digest[3] % 81  # 20 .. 100
    return {"temperature": temperature, "conditions": conditions, "humidity": humidity}


async def _get_weather(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    location = _string(arguments, "location")
    if not location.strip():
        raise _BadArgument("'location' must not be empty")
    weather = weather_for(location)
    # The text block is for clients that predate structured content.
    return types.CallToolResult(content=[_text(json.dumps(weather))], structured_content=weather)


def _tools() -> list[Tool]:
    def tool(
        name: str,
        description: str,
        input_schema: dict[str, Any],
        handler: ToolHandler,
        annotations: types.ToolAnnotations,
        output_schema: dict[str, Any] | None = None,
    ) -> Tool:
        definition = types.Tool(
            name=name,
            description=description,
            input_schema=input_schema,
            output_schema=copy.deepcopy(output_schema),
            annotations=annotations,
        )
        return Tool(definition=definition, handler=_guarded(handler))

    return [
        tool(
            "echo",
            "Echoes back the input",
            _object_schema({"message": {"type": "string", "description": "Message to echo"}}, ["message"]),
            _echo,
            _annotations("Echo", read_only=True, idempotent=True),
        ),
        tool(
            "add",
            "Adds two numbers",
            _object_schema(
                {
                    "a": {"type": "number", "description": "First number"},
                    "b": {"type": "number", "description": "Second number"},
                },
                ["a", "b"],
            ),
            _add,
            _annotations("Add Numbers", read_only=True, idempotent=True),
        ),
        tool(
            "longRunningOperation",
            "Demonstrates a long running operation with progress updates",
            _object_schema(
                {
                    "duration": {
                        "type": "number",
                        "description": "Duration of the operation in seconds",
                        "default": 10,
                        "minimum": 0,
                        "maximum": MAX_OPERATION_SECONDS,
                    },
                    "steps": {
                        "type": "integer",
                        "description": "Number of steps in the operation",
                        "default": 5,
                        "minimum": 1,
                        "maximum": MAX_OPERATION_STEPS,
                    },
                }
            ),
            _long_running_operation,
            _annotations("Long Running Operation", read_only=True, idempotent=True),
        ),
        tool(
            "sampleLLM",
            "Samples from an LLM using MCP's sampling feature",
            _object_schema(
                {
                    "prompt": {"type": "string", "description": "The prompt to send to the LLM"},
                    "maxTokens": {
                        "type": "integer",
                        "description": "Maximum number of tokens to generate",
                        "default": 100,
                        "minimum": 1,
                        "maximum": MAX_SAMPLING_TOKENS,
                    },
                },
                ["prompt"],
            ),
            _sample_llm,
            # The answer comes from whatever model the client picks, outside this server.
            _annotations("Sample LLM", read_only=True, idempotent=False, open_world=True),
        ),
        tool(
            "getTinyImage",
            "Returns the MCP_TINY_IMAGE",
            _object_schema({}),
            _get_tiny_image,
            _annotations("Get Tiny Image", read_only=True, idempotent=True),
        ),
        tool(
            "annotatedMessage",
            "Demonstrates how annotations can be used to provide metadata about content",
            _object_schema(
                {
                    "messageType": {
                        "type": "string",
                        "enum": list(_ANNOTATED_MESSAGES),
                        "description": "Type of message to demonstrate different annotation patterns",
                    },
                    "includeImage": {
                        "type": "boolean",
                        "default": False,
                        "description": "Whether to include an example image",
                    },
                },
                ["messageType"],
            ),
            _annotated_message,
            _annotations("Annotated Message", read_only=True, idempotent=True),
        ),
        tool(
            "getResourceReference",
            "Returns a resource reference that can be used by MCP clients",
            _object_schema(
                {
                    "resourceId": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": RESOURCE_COUNT,
                        "description": f"ID of the resource to reference (1-{RESOURCE_COUNT})",
                    }
                },
                ["resourceId"],
            ),
            _get_resource_reference,
            _annotations("Get Resource Reference", read_only=True, idempotent=True),
        ),
        tool(
            "elicitInputs",
            "Demonstrates elicitation by asking the user for a few inputs of different types",
            _object_schema({}),
            _elicit_inputs,
            _annotations("Elicit Inputs", read_only=True, idempotent=False),
        ),
        tool(
            "getWeather",
            "Returns made-up weather for a location as structured content validated by an output schema",
            _object_schema(
                {"location": {"type": "string", "minLength": 1, "description": "City name or zip code"}},
                ["location"],
            ),
            _get_weather,
            _annotations("Get Weather", read_only=True, idempotent=True),
            output_schema=WEATHER_OUTPUT_SCHEMA,
        ),
    ]


# --- prompts ------------------------------------------------------------------------------------------


async def _simple_prompt(arguments: dict[str, str], ctx: FeatureContext) -> types.GetPromptResult:
    return types.GetPromptResult(
        description="A prompt without arguments",
        messages=[types.PromptMessage(role="user", content=_text("This is a simple prompt without arguments."))],
    )


async def _complex_prompt(arguments: dict[str, str], ctx: FeatureContext) -> types.GetPromptResult:
    temperature = arguments.get("temperature")
    if temperature is None:
        raise InvalidParams("Missing required argument: temperature")
    style = arguments.get("style")
    # An absent optional argument is left out rather than rendered as a placeholder word.
    settings = f"temperature={temperature}" + (f", style={style}" if style is not None else "")
    return types.GetPromptResult(
        description="A prompt with arguments",
        messages=[
            types.PromptMessage(role="user", content=_text(f"This is a complex prompt with arguments: {settings}")),
            types.PromptMessage(
                role="assistant",
                content=_text(
                    "I understand. You've provided a complex prompt with temperature and style arguments. "
                    "How would you like me to proceed?"
                ),
            ),
            types.PromptMessage(role="user", content=tiny_image()),
        ],
    )


async def _resource_prompt(arguments: dict[str, str], ctx: FeatureContext) -> types.GetPromptResult:
    raw_id = arguments.get("resourceId")
    if raw_id is None:
        raise InvalidParams("Missing required argument: resourceId")
    resource_id = parse_resource_id(raw_id)
    if resource_id is None:
        raise InvalidParams(
            f"Invalid resourceId: {raw_id}. Must be a number between 1 and {RESOURCE_COUNT}.",
            data={"argument": "resourceId"},
        )
    (contents,) = resource_contents(resource_id)
    return types.GetPromptResult(
        description=f"A prompt that includes Resource {resource_id}",
        messages=[
            types.PromptMessage(
                role="user",
                content=_text(f"This prompt includes Resource {resource_id}. Please analyze the following resource:"),
            ),
            types.PromptMessage(role="user", content=types.EmbeddedResource(resource=contents)),
        ],
    )


def _prompts() -> list[Prompt]:
    return [
        Prompt(
            definition=types.Prompt(name="simple_prompt", description="A prompt without arguments"),
            render=_simple_prompt,
        ),
        Prompt(
            definition=types.Prompt(
                name="complex_prompt",
                description="A prompt with arguments",
                arguments=[
                    types.PromptArgument(name="temperature", description="Temperature setting", required=True),
                    types.PromptArgument(name="style", description="Output style", required=False),
                ],
            ),
            render=_complex_prompt,
            completions={
                "temperature": _choices_completer(TEMPERATURE_CHOICES),
                "style": _choices_completer(STYLE_CHOICES),
            },
        ),
        Prompt(
            definition=types.Prompt(
                name="resource_prompt",
                description="A prompt that includes an embedded resource reference",
                arguments=[
                    types.PromptArgument(
                        name="resourceId",
                        description=f"Resource ID to include (1-{RESOURCE_COUNT})",
                        required=True,
                    )
                ],
            ),
            render=_resource_prompt,
            completions={"resourceId": _complete_resource_id},
        ),
    ]


# --- periodic notifications ---------------------------------------------------------------------------


def random_log_message() -> tuple[types.LoggingLevel, str]:
    """A demo `notifications/message` payload; the server filters it by the session's log level."""
    # Not for anything secret, so the module-level PRNG is fine.
    level = random.choice(LOG_LEVELS)
    return level, f"{level.capitalize()}-level message"


# --- the catalog --------------------------------------------------------------------------------------


def build_catalog() -> Catalog:
    template = ResourceTemplate(
        definition=types.ResourceTemplate(
            uri_template=RESOURCE_URI_TEMPLATE,
            name="Static Resource",
            description="A static resource with a numeric ID",
        ),
        read=_read_from_template,
        completions={"id": _complete_resource_id},
    )
    return Catalog(
        tools=_tools(),
        resources=_static_resources(),
        templates=(template,),
        prompts=_prompts(),
    )
