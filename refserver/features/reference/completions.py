"""Prefix completion over a fixed list of choices, shared by the resource template and the prompts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from refserver.features.catalog import Completer

MAX_COMPLETIONS: Final = 100  # the most values a completion/complete result may carry


def choices_completer(choices: Iterable[str]) -> Completer:
    frozen = tuple(choices)

    async def complete(partial: str, _chosen: Mapping[str, str]) -> list[str]:
        prefix = partial.casefold()
        return [choice for choice in frozen if choice.casefold().startswith(prefix)][:MAX_COMPLETIONS]

    return complete
