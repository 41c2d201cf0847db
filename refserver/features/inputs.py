"""Asking the client for something within a request, in the multi-round-trip shape.

A handler asks with `ask(ctx, key=request, ...)`, which returns the `InputRequired` to return; on the next
round `answer(ctx, key, Model)` gives the client's answer, validated, or None when it has not come yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import mcp_types as types
import pydantic

from refserver.errors import ClientCapabilityMissing, ClientRequestFailed
from refserver.features.context import FeatureContext
from refserver.protocol.core import (
    CAPABILITY_FOR_INPUT,
    ELICITATION,
    ROOTS,
    SAMPLING,
    InputFailure,
    InputRequest,
    InputRequired,
)

AnswerModel = TypeVar("AnswerModel", bound=pydantic.BaseModel)


def sampling(params: types.CreateMessageRequestParams) -> InputRequest:
    return InputRequest(SAMPLING, params.model_dump(by_alias=True, exclude_none=True, mode="json"))


def elicitation(params: types.ElicitRequestFormParams | types.ElicitRequestURLParams) -> InputRequest:
    return InputRequest(ELICITATION, params.model_dump(by_alias=True, exclude_none=True, mode="json"))


def roots() -> InputRequest:
    return InputRequest(ROOTS, {})


def ask(ctx: FeatureContext, state: Mapping[str, Any] | None = None, **requests: InputRequest) -> InputRequired:
    """What to return to ask the client for `requests`; raises ClientCapabilityMissing if it cannot answer."""
    for request in requests.values():
        capability = CAPABILITY_FOR_INPUT[request.method]
        if not ctx.meta.client_supports(capability):
            raise ClientCapabilityMissing(
                f"the client did not declare the {capability} capability", capability=capability
            )
        mode = request.params.get("mode") if request.method == ELICITATION else None
        if mode == "url" and not ctx.meta.client_supports_elicitation_mode("url"):
            raise ClientCapabilityMissing(
                "the client did not declare URL mode elicitation", capability=capability, mode="url"
            )
    return InputRequired(requests, dict(state or {}))


def answer(ctx: FeatureContext, key: str, model: type[AnswerModel]) -> AnswerModel | None:
    """The client's answer to the input request `key`, validated (pydantic.ValidationError if malformed).

    Raises ClientRequestFailed when the client answered with an error or not in time.
    """
    response = ctx.input_responses.get(key)
    if response is None:
        return None
    if isinstance(response, InputFailure):
        raise ClientRequestFailed(response.message)
    return model.model_validate(response)
