"""The conformance suite's `test_*` prompts and the completion for `test_prompt_with_arguments`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

import mcp_types as types

from refserver.errors import InvalidParams
from refserver.features.catalog import Prompt, PromptRenderer
from refserver.features.conformance.content import image, text
from refserver.features.context import FeatureContext

MAX_COMPLETIONS: Final = 100
ARG1_SUGGESTIONS: Final = ("testValue1", "testValue2", "testValue3", "sample", "example")


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
        messages=[types.PromptMessage(role="user", content=text("This is a simple prompt for testing."))]
    )


async def _prompt_with_arguments(arguments: dict[str, str], ctx: FeatureContext) -> types.GetPromptResult:
    arg1 = _required(arguments, "arg1")
    arg2 = _required(arguments, "arg2")
    return types.GetPromptResult(
        messages=[
            types.PromptMessage(role="user", content=text(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"))
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
            types.PromptMessage(role="user", content=text("Please process the embedded resource above.")),
        ]
    )


async def _prompt_with_image(arguments: dict[str, str], ctx: FeatureContext) -> types.GetPromptResult:
    return types.GetPromptResult(
        messages=[
            types.PromptMessage(role="user", content=image()),
            types.PromptMessage(role="user", content=text("Please analyze the image above.")),
        ]
    )


def _prompt(
    name: str, description: str, render: PromptRenderer, arguments: list[types.PromptArgument] | None = None
) -> Prompt:
    return Prompt(definition=types.Prompt(name=name, description=description, arguments=arguments), render=render)


def build_prompts() -> list[Prompt]:
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
