"""The fixtures of the official MCP conformance suite (`@modelcontextprotocol/conformance`).

Names, schemas, texts and values follow the suite's reference fixture server
(`examples/servers/typescript/everything-server.ts`), so that every scenario of the 2025-11-25
requirement set finds exactly what it looks for: the `test_*` tools, the `test://` resources and
template, the `test_*` prompts and a completion for `test_prompt_with_arguments`.

This package assembles the catalog and re-exports the public names of its modules: `content`
(shared media and text helpers), `schemas`, `tools`, `resources` and `prompts`; `stateless` holds the fixtures
of the 2026-07-28 scenarios (multi round-trip requests, the stateless diagnostics, an `x-mcp-header` tool),
`tasks` those of the tasks extension's scenarios.
"""

from __future__ import annotations

from refserver.features.catalog import Catalog
from refserver.features.conformance import stateless, tasks
from refserver.features.conformance.content import (
    PNG_MIME_TYPE,
    TEST_AUDIO_BASE64,
    TEST_IMAGE_BASE64,
    WAV_MIME_TYPE,
)
from refserver.features.conformance.prompts import ARG1_SUGGESTIONS, MAX_COMPLETIONS, build_prompts
from refserver.features.conformance.resources import build_resources, build_templates
from refserver.features.conformance.schemas import (
    ELICITATION_SCHEMA,
    EMPTY_SCHEMA,
    JSON_SCHEMA_2020_12,
    SEP1034_MESSAGE,
    SEP1034_SCHEMA,
    SEP1330_MESSAGE,
    SEP1330_SCHEMA,
)
from refserver.features.conformance.tools import (
    RECONNECTION_DELAY,
    RECONNECTION_TEXT,
    SAMPLING_MAX_TOKENS,
    STEP_DELAY,
    build_tools,
)

__all__ = [
    "ARG1_SUGGESTIONS",
    "ELICITATION_SCHEMA",
    "EMPTY_SCHEMA",
    "JSON_SCHEMA_2020_12",
    "MAX_COMPLETIONS",
    "PNG_MIME_TYPE",
    "RECONNECTION_DELAY",
    "RECONNECTION_TEXT",
    "SAMPLING_MAX_TOKENS",
    "SEP1034_MESSAGE",
    "SEP1034_SCHEMA",
    "SEP1330_MESSAGE",
    "SEP1330_SCHEMA",
    "STEP_DELAY",
    "TEST_AUDIO_BASE64",
    "TEST_IMAGE_BASE64",
    "WAV_MIME_TYPE",
    "build_catalog",
]


def build_catalog() -> Catalog:
    return Catalog(
        tools=[*build_tools(), *stateless.build_tools(), *tasks.build_tools()],
        resources=build_resources(),
        templates=build_templates(),
        prompts=[*build_prompts(), *stateless.build_prompts()],
    )
