"""The reference tools as clients list them: names, descriptions, input/output schemas and annotations.

Each definition is paired with its handler from `handlers.py`, wrapped so a bad argument becomes a tool error.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Final

import mcp_types as types

from refserver.features.catalog import Tool, ToolHandler
from refserver.features.reference import handlers
from refserver.features.reference.apps import WEATHER_TOOL_UI_META
from refserver.features.reference.arguments import guarded
from refserver.features.reference.downstream import profile_fetcher
from refserver.features.reference.handlers import (
    ANNOTATED_MESSAGES,
    MAX_OPERATION_SECONDS,
    MAX_OPERATION_STEPS,
    MAX_SAMPLING_TOKENS,
    WEATHER_OUTPUT_SCHEMA,
)
from refserver.features.reference.resources import RESOURCE_COUNT
from refserver.protocol.tasks import FORBIDDEN, OPTIONAL

ADMIN_SCOPE: Final = "mcp:admin"
"""The scope `whoAmI` needs on top of the endpoint's: what a client steps up to."""


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


def _tool(
    name: str,
    description: str,
    input_schema: dict[str, Any],
    handler: ToolHandler,
    annotations: types.ToolAnnotations,
    output_schema: dict[str, Any] | None = None,
    task_support: str = FORBIDDEN,
    required_scopes: frozenset[str] = frozenset(),
    meta: dict[str, Any] | None = None,
) -> Tool:
    definition = types.Tool(
        name=name,
        description=description,
        input_schema=input_schema,
        output_schema=copy.deepcopy(output_schema),
        annotations=annotations,
        meta=copy.deepcopy(meta),
    )
    # A tool its annotations call idempotent may run again from the start if the instance running its task is lost.
    return Tool(
        definition=definition,
        handler=guarded(handler),
        task_support=task_support,
        idempotent=bool(annotations.idempotent_hint),
        required_scopes=required_scopes,
    )


def build_tools() -> list[Tool]:
    return [
        _tool(
            "echo",
            "Echoes back the input",
            _object_schema({"message": {"type": "string", "description": "Message to echo"}}, ["message"]),
            handlers.echo,
            _annotations("Echo", read_only=True, idempotent=True),
        ),
        _tool(
            "add",
            "Adds two numbers",
            _object_schema(
                {
                    "a": {"type": "number", "description": "First number"},
                    "b": {"type": "number", "description": "Second number"},
                },
                ["a", "b"],
            ),
            handlers.add,
            _annotations("Add Numbers", read_only=True, idempotent=True),
        ),
        _tool(
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
            handlers.long_running_operation,
            _annotations("Long Running Operation", read_only=True, idempotent=True),
            task_support=OPTIONAL,
        ),
        _tool(
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
            handlers.sample_llm,
            # The answer comes from whatever model the client picks, outside this server.
            _annotations("Sample LLM", read_only=True, idempotent=False, open_world=True),
        ),
        _tool(
            "getTinyImage",
            "Returns the MCP_TINY_IMAGE",
            _object_schema({}),
            handlers.get_tiny_image,
            _annotations("Get Tiny Image", read_only=True, idempotent=True),
        ),
        _tool(
            "annotatedMessage",
            "Demonstrates how annotations can be used to provide metadata about content",
            _object_schema(
                {
                    "messageType": {
                        "type": "string",
                        "enum": list(ANNOTATED_MESSAGES),
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
            handlers.annotated_message,
            _annotations("Annotated Message", read_only=True, idempotent=True),
        ),
        _tool(
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
            handlers.get_resource_reference,
            _annotations("Get Resource Reference", read_only=True, idempotent=True),
        ),
        _tool(
            "elicitInputs",
            "Demonstrates elicitation by asking the user for a few inputs of different types (form mode), or, "
            "given a url, to complete a flow at that address (URL mode)",
            _object_schema(
                {
                    "url": {
                        "type": "string",
                        "format": "uri",
                        "description": "Ask the user to open this address instead of filling in a form (URL mode)",
                    }
                }
            ),
            handlers.elicit_inputs,
            _annotations("Elicit Inputs", read_only=True, idempotent=False),
        ),
        _tool(
            "getWeather",
            "Returns made-up weather for a location as structured content validated by an output schema",
            _object_schema(
                {"location": {"type": "string", "minLength": 1, "description": "City name or zip code"}},
                ["location"],
            ),
            handlers.get_weather,
            _annotations("Get Weather", read_only=True, idempotent=True),
            output_schema=WEATHER_OUTPUT_SCHEMA,
            meta=WEATHER_TOOL_UI_META,
        ),
        _tool(
            "whoAmI",
            f"Says which user the server acts for and in which protocol era. Needs the {ADMIN_SCOPE!r} scope: "
            "a token without it gets 403 insufficient_scope (the step-up authorization example)",
            _object_schema({}, []),
            handlers.who_am_i,
            _annotations("Who Am I", read_only=True, idempotent=True),
            required_scopes=frozenset({ADMIN_SCOPE}),
        ),
    ]


def build_downstream_tools(api_url: str) -> list[Tool]:
    """The tools that call the downstream API at `api_url` (REFSERVER_DOWNSTREAM_API_URL) for the user."""
    return [
        _tool(
            "fetchDownstreamProfile",
            "Fetches the user's profile from a downstream API with a token exchanged for that API (RFC 8693): "
            "the caller's own token is never passed on. `scopes` narrows what the exchanged token may do",
            _object_schema(
                {
                    "scopes": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Scopes for the downstream token, at most the caller's (default: the caller's)",
                    }
                }
            ),
            profile_fetcher(api_url),
            _annotations("Fetch Downstream Profile", read_only=True, idempotent=True, open_world=True),
        )
    ]
