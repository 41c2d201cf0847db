"""What the reference tools do when called: one async handler per tool, and the data they answer with.

The tools' advertised definitions (names, schemas, annotations) are in `tools.py`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any, Final

import mcp_types as types
import trio

from refserver.features.catalog import ToolOutcome
from refserver.features.context import FeatureContext
from refserver.features.inputs import answer, ask, elicitation, sampling
from refserver.features.reference.arguments import BadArgument, boolean, integer, number, string
from refserver.features.reference.media import tiny_image
from refserver.features.reference.resources import RESOURCE_COUNT, resource_contents

# Bounds keep one call from pinning a request (and its stream) open for hours.
MAX_OPERATION_SECONDS: Final = 300
MAX_OPERATION_STEPS: Final = 1000
MAX_SAMPLING_TOKENS: Final = 100_000

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


def format_number(value: float) -> str:
    """Numbers as the TypeScript reference prints them (`3`, not `3.0`), so texts match across servers."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)


def _text(text: str, annotations: types.Annotations | None = None) -> types.TextContent:
    return types.TextContent(text=text, annotations=annotations)


def _result(*content: types.ContentBlock) -> types.CallToolResult:
    return types.CallToolResult(content=list(content))


async def echo(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    return _result(_text(f"Echo: {string(arguments, 'message')}"))


async def who_am_i(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    meta = ctx.meta
    user = meta.subject or "nobody (authentication is off)"
    return _result(_text(f"You are {user}, speaking MCP {meta.protocol_version}."))


async def add(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    a = number(arguments, "a")
    b = number(arguments, "b")
    total = a + b
    if not math.isfinite(total):
        raise BadArgument("the sum is not a finite number")
    return _result(_text(f"The sum of {format_number(a)} and {format_number(b)} is {format_number(total)}."))


async def long_running_operation(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    duration = number(arguments, "duration", 10)
    steps = integer(arguments, "steps", 5)
    if not 0 <= duration <= MAX_OPERATION_SECONDS:
        raise BadArgument(f"'duration' must be between 0 and {MAX_OPERATION_SECONDS} seconds")
    if not 1 <= steps <= MAX_OPERATION_STEPS:
        raise BadArgument(f"'steps' must be between 1 and {MAX_OPERATION_STEPS}")
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


async def sample_llm(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    prompt = string(arguments, "prompt")
    max_tokens = integer(arguments, "maxTokens", 100)
    if not 1 <= max_tokens <= MAX_SAMPLING_TOKENS:
        raise BadArgument(f"'maxTokens' must be between 1 and {MAX_SAMPLING_TOKENS}")
    result = answer(ctx, "sample", types.CreateMessageResult)
    if result is None:
        return ask(
            ctx,
            sample=sampling(
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
            ),
        )
    return _result(_text(f"LLM sampling result: {describe_sampled_content(result.content)}"))


async def get_tiny_image(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    return _result(
        _text("This is a tiny image:"),
        tiny_image(),
        _text("The image above is the MCP tiny image."),
    )


ANNOTATED_MESSAGES: Final[Mapping[str, tuple[str, types.Annotations]]] = {
    "error": ("Error: Operation failed", types.Annotations(priority=1.0, audience=["user", "assistant"])),
    "success": ("Operation completed successfully", types.Annotations(priority=0.7, audience=["user"])),
    "debug": (
        "Debug: Cache hit ratio 0.95, latency 150ms",
        types.Annotations(priority=0.3, audience=["assistant"]),
    ),
}


async def annotated_message(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    message_type = string(arguments, "messageType")
    include_image = boolean(arguments, "includeImage", False)
    if message_type not in ANNOTATED_MESSAGES:
        raise BadArgument(f"'messageType' must be one of {', '.join(ANNOTATED_MESSAGES)}")
    text, annotations = ANNOTATED_MESSAGES[message_type]
    content: list[types.ContentBlock] = [_text(text, annotations)]
    if include_image:
        # An image is for the user to look at; the assistant gains little from it.
        content.append(tiny_image(types.Annotations(priority=0.5, audience=["user"])))
    return types.CallToolResult(content=content)


async def get_resource_reference(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    resource_id = integer(arguments, "resourceId")
    if not 1 <= resource_id <= RESOURCE_COUNT:
        raise BadArgument(f"'resourceId' must be between 1 and {RESOURCE_COUNT}")
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


async def elicit_inputs(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    url = arguments.get("url")
    if isinstance(url, str):
        return _elicit_at_url(url, ctx)
    result = answer(ctx, "inputs", types.ElicitResult)
    if result is None:
        return ask(
            ctx,
            inputs=elicitation(
                types.ElicitRequestFormParams(
                    message="Please provide inputs for the following fields:",
                    # A copy, so that nothing downstream can alter the shared schema.
                    requested_schema=copy.deepcopy(ELICITATION_SCHEMA),
                )
            ),
        )
    if result.action == "accept":
        provided = json.dumps(result.content or {}, indent=2, ensure_ascii=False)
        return _result(_text(f"✅ User provided the requested information:\n{provided}"))
    if result.action == "decline":
        return _result(_text("❌ User declined to provide the requested information."))
    return _result(_text("⚠️ User cancelled the elicitation dialog."))


def _elicit_at_url(url: str, ctx: FeatureContext) -> ToolOutcome:
    result = answer(ctx, "visit", types.ElicitResult)
    if result is None:
        # The id names this flow to the client (and, in a real server, to the page that completes it).
        flow = hashlib.sha256(f"{ctx.request_id}|{url}".encode()).hexdigest()[:16]
        return ask(
            ctx,
            visit=elicitation(
                types.ElicitRequestURLParams(
                    message="Please complete the requested step at this address.", url=url, elicitation_id=flow
                )
            ),
        )
    if result.action == "accept":
        return _result(_text(f"✅ User completed the step at {url}"))
    if result.action == "decline":
        return _result(_text("❌ User declined to open the address."))
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


async def get_weather(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    location = string(arguments, "location")
    if not location.strip():
        raise BadArgument("'location' must not be empty")
    weather = weather_for(location)
    # The text block is for clients that predate structured content.
    return types.CallToolResult(content=[_text(json.dumps(weather))], structured_content=weather)
