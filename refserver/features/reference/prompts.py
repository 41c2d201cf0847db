"""The reference prompts (`simple_prompt`, `complex_prompt`, `resource_prompt`) and their argument completions."""

from __future__ import annotations

from typing import Final

import mcp_types as types

from refserver.errors import InvalidParams
from refserver.features.catalog import Prompt
from refserver.features.context import FeatureContext
from refserver.features.reference.completions import choices_completer
from refserver.features.reference.media import tiny_image
from refserver.features.reference.resources import (
    RESOURCE_COUNT,
    complete_resource_id,
    parse_resource_id,
    resource_contents,
)

TEMPERATURE_CHOICES: Final = ("0", "0.5", "0.7", "1.0")
STYLE_CHOICES: Final = ("casual", "formal", "technical", "friendly")


def _text(text: str) -> types.TextContent:
    return types.TextContent(text=text)


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


def build_prompts() -> list[Prompt]:
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
                "temperature": choices_completer(TEMPERATURE_CHOICES),
                "style": choices_completer(STYLE_CHOICES),
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
            completions={"resourceId": complete_resource_id},
        ),
    ]
