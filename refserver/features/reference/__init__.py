"""The demo features of the MCP reference ("everything") server.

Tools, resources, a resource template, prompts and completions mirror the TypeScript reference
server so that clients and inspectors written against it see the same names, shapes and texts.

This package assembles the catalog and re-exports the public names of its modules:
`media` (the tiny PNG), `resources` (static resources and their template), `completions`,
`arguments` (tool argument checks), `handlers` (what the tools do), `tools` (their definitions),
`prompts`, `log_messages` (the periodic demo log traffic), `apps` (the MCP Apps view of `getWeather`) and
`downstream` (a tool calling another API with an exchanged token).
"""

from __future__ import annotations

from refserver.features.catalog import Catalog
from refserver.features.reference.apps import MCP_APP_MIME_TYPE, WEATHER_CARD_HTML, WEATHER_CARD_URI, app_resources
from refserver.features.reference.completions import MAX_COMPLETIONS
from refserver.features.reference.handlers import (
    ELICITATION_SCHEMA,
    MAX_OPERATION_SECONDS,
    MAX_OPERATION_STEPS,
    MAX_SAMPLING_TOKENS,
    WEATHER_CONDITIONS,
    WEATHER_OUTPUT_SCHEMA,
    describe_sampled_content,
    format_number,
    weather_for,
)
from refserver.features.reference.log_messages import LOG_LEVELS, random_log_message
from refserver.features.reference.media import (
    PNG_MIME_TYPE,
    TINY_IMAGE_BASE64,
    TINY_IMAGE_PNG,
    TINY_IMAGE_SIZE,
    encode_png_rgba,
    tiny_image,
)
from refserver.features.reference.prompts import STYLE_CHOICES, TEMPERATURE_CHOICES, build_prompts
from refserver.features.reference.resources import (
    RESOURCE_COUNT,
    RESOURCE_URI_PREFIX,
    RESOURCE_URI_TEMPLATE,
    parse_resource_id,
    resource_contents,
    resource_template,
    resource_uri,
    static_resources,
)
from refserver.features.reference.tools import build_downstream_tools, build_tools

__all__ = [
    "ELICITATION_SCHEMA",
    "LOG_LEVELS",
    "MAX_COMPLETIONS",
    "MAX_OPERATION_SECONDS",
    "MAX_OPERATION_STEPS",
    "MAX_SAMPLING_TOKENS",
    "MCP_APP_MIME_TYPE",
    "PNG_MIME_TYPE",
    "RESOURCE_COUNT",
    "RESOURCE_URI_PREFIX",
    "RESOURCE_URI_TEMPLATE",
    "STYLE_CHOICES",
    "TEMPERATURE_CHOICES",
    "TINY_IMAGE_BASE64",
    "TINY_IMAGE_PNG",
    "TINY_IMAGE_SIZE",
    "WEATHER_CARD_HTML",
    "WEATHER_CARD_URI",
    "WEATHER_CONDITIONS",
    "WEATHER_OUTPUT_SCHEMA",
    "build_catalog",
    "build_downstream_catalog",
    "describe_sampled_content",
    "encode_png_rgba",
    "format_number",
    "parse_resource_id",
    "random_log_message",
    "resource_contents",
    "resource_uri",
    "tiny_image",
    "weather_for",
]


def build_catalog() -> Catalog:
    return Catalog(
        tools=build_tools(),
        resources=(*static_resources(), *app_resources()),
        templates=(resource_template(),),
        prompts=build_prompts(),
    )


def build_downstream_catalog(api_url: str) -> Catalog:
    """`fetchDownstreamProfile`, served only when a downstream API is configured (REFSERVER_DOWNSTREAM_API_URL)."""
    return Catalog(tools=build_downstream_tools(api_url))
