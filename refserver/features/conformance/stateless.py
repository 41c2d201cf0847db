"""The conformance suite's fixtures for the 2026-07-28 revision: multi round-trip tools and prompt (SEP-2322),
the stateless diagnostics (SEP-2575) and a tool with an `x-mcp-header` parameter (SEP-2243).

They are written in the multi round-trip shape like every other feature, so they also work in a 2025 session
(where the adapter asks the client over server-to-client requests). Names, keys, messages and schemas are the
ones the suite's scenario descriptions give.
"""

from __future__ import annotations

from typing import Any, Final

import mcp_types as types

from refserver.features.catalog import Prompt, Tool, ToolOutcome
from refserver.features.conformance.content import compact_json, fixture_tool, text, tool_result
from refserver.features.context import FeatureContext
from refserver.features.inputs import answer, ask, elicitation, roots, sampling
from refserver.protocol.core import CAPABILITY_FOR_INPUT, InputRequest, InputRequired

CUSTOM_HEADER_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "region": {"type": "string", "description": "Where to route the call", "x-mcp-header": "Region"},
        "query": {"type": "string", "description": "Free text"},
    },
    "required": ["region"],
}


def _form(message: str, field: str, kind: str = "string") -> InputRequest:
    schema = {"type": "object", "properties": {field: {"type": kind}}, "required": [field]}
    return elicitation(types.ElicitRequestFormParams(message=message, requested_schema=schema))


def _question(prompt: str, max_tokens: int) -> InputRequest:
    return sampling(
        types.CreateMessageRequestParams(
            messages=[types.SamplingMessage(role="user", content=text(prompt))], max_tokens=max_tokens
        )
    )


def _accepted(ctx: FeatureContext, key: str) -> dict[str, Any] | None:
    """The content of an accepted elicitation answer; None when it has not come (or is not an acceptance)."""
    result = answer(ctx, key, types.ElicitResult)
    if result is None or result.action != "accept":
        return None
    return dict(result.content or {})


def _sampled_text(ctx: FeatureContext, key: str) -> str | None:
    result = answer(ctx, key, types.CreateMessageResult)
    if result is None:
        return None
    return result.content.text if isinstance(result.content, types.TextContent) else f"[{result.content.type}]"


# --- SEP-2322: multi round-trip requests ------------------------------------------------------------------


async def _elicitation(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    # A retry without (or with a wrong) `user_name` is asked again, never refused (mrtr.mdx, error handling).
    content = _accepted(ctx, "user_name")
    if content is None:
        return ask(ctx, user_name=_form("What is your name?", "name"))
    return tool_result(text(f"Hello, {content.get('name')}!"))


async def _sampling(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    reply = _sampled_text(ctx, "capital_question")
    if reply is None:
        return ask(ctx, capital_question=_question("What is the capital of France?", 100))
    return tool_result(text(f"Sampling response: {reply}"))


async def _list_roots(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    listed = answer(ctx, "client_roots", types.ListRootsResult)
    if listed is None:
        return ask(ctx, client_roots=roots())
    return tool_result(text("Client roots: " + ", ".join(str(root.uri) for root in listed.roots)))


async def _request_state(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    content = _accepted(ctx, "confirm")
    if content is None or ctx.request_state != {"asked": "confirm"}:
        return ask(ctx, {"asked": "confirm"}, confirm=_form("Please confirm", "ok", "boolean"))
    return tool_result(text(f"state-ok: confirmed={compact_json(content.get('ok'))}"))


async def _multiple_inputs(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    name = _accepted(ctx, "user_name")
    greeting = _sampled_text(ctx, "greeting")
    listed = answer(ctx, "client_roots", types.ListRootsResult)
    if name is None or greeting is None or listed is None or ctx.request_state != {"asked": "all"}:
        return ask(
            ctx,
            {"asked": "all"},
            user_name=_form("What is your name?", "name"),
            greeting=_question("Generate a greeting", 50),
            client_roots=roots(),
        )
    return tool_result(text(f"{greeting} {name.get('name')} (roots: {len(listed.roots)})"))


async def _multi_round(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    state = ctx.request_state or {}
    if state.get("round") == 2:
        color = _accepted(ctx, "step2")
        if color is not None:
            return tool_result(text(f"{state.get('name')}'s favorite color is {color.get('color')}"))
        return ask(ctx, state, step2=_form("Step 2: What is your favorite color?", "color"))
    name = _accepted(ctx, "step1") if state.get("round") == 1 else None
    if name is None:
        return ask(ctx, {"round": 1}, step1=_form("Step 1: What is your name?", "name"))
    return ask(
        ctx, {"round": 2, "name": name.get("name")}, step2=_form("Step 2: What is your favorite color?", "color")
    )


async def _tampered_state(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    # The seal is the adapter's: a state altered in any bit never reaches this handler.
    content = _accepted(ctx, "confirm")
    if content is None or ctx.request_state != {"asked": "confirm"}:
        return ask(ctx, {"asked": "confirm"}, confirm=_form("Please confirm", "ok", "boolean"))
    return tool_result(text("state verified"))


async def _capabilities(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    wanted = {
        "user_name": _form("What is your name?", "name"),
        "greeting": _question("Generate a greeting", 50),
        "client_roots": roots(),
    }
    supported = {
        key: request
        for key, request in wanted.items()
        if ctx.meta.client_supports(CAPABILITY_FOR_INPUT[request.method])
    }
    if not supported:
        return tool_result(text("The client declared none of sampling, elicitation or roots: nothing to ask."))
    if all(ctx.input_responses.get(key) is not None for key in supported):
        return tool_result(text("Received: " + ", ".join(sorted(supported))))
    return ask(ctx, None, **supported)


async def _prompt(arguments: dict[str, str], ctx: FeatureContext) -> types.GetPromptResult | InputRequired:
    content = _accepted(ctx, "user_context")
    if content is None:
        return ask(ctx, user_context=_form("What context should the prompt use?", "context"))
    return types.GetPromptResult(
        description="A prompt built from context the user gave",
        messages=[types.PromptMessage(role="user", content=text(f"Use this context: {content.get('context')}"))],
    )


# --- SEP-2575: the stateless diagnostics ------------------------------------------------------------------


async def _missing_capability(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    # Asking a client that did not declare sampling raises: in the 2026 era that is error -32021.
    reply = _sampled_text(ctx, "question")
    if reply is None:
        return ask(ctx, question=_question("Say something", 20))
    return tool_result(text(f"Sampled: {reply}"))


async def _streaming_elicitation(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    await ctx.report_progress(0, 1, "asking for confirmation")
    content = _accepted(ctx, "user_name")
    if content is None:
        return ask(ctx, user_name=_form("What is your name?", "name"))
    return tool_result(text(f"Hello, {content.get('name')}!"))


async def _logging_tool(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    # Sent only when the request asked for a log level (2026) or the session's level lets it through (2025).
    await ctx.log("info", "test_logging_tool ran")
    return tool_result(text("Logging tool finished."))


async def _trigger_tool_change(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    await ctx.notify_list_changed("tools")
    return tool_result(text("Tool list change published."))


async def _trigger_prompt_change(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    await ctx.notify_list_changed("prompts")
    return tool_result(text("Prompt list change published."))


# --- SEP-2243: a parameter mirrored in a header -------------------------------------------------------------


async def _custom_header(arguments: dict[str, Any], ctx: FeatureContext) -> types.CallToolResult:
    return tool_result(text(f"Routed to region {arguments.get('region')}"))


def build_tools() -> list[Tool]:
    return [
        fixture_tool("test_input_required_result_elicitation", "MRTR: asks for the user's name", _elicitation),
        fixture_tool("test_input_required_result_sampling", "MRTR: asks the client's model a question", _sampling),
        fixture_tool("test_input_required_result_list_roots", "MRTR: asks for the client's roots", _list_roots),
        fixture_tool(
            "test_input_required_result_request_state", "MRTR: keeps sealed state between rounds", _request_state
        ),
        fixture_tool("test_input_required_result_multiple_inputs", "MRTR: three inputs in one round", _multiple_inputs),
        fixture_tool("test_input_required_result_multi_round", "MRTR: two rounds, state evolving", _multi_round),
        fixture_tool("test_input_required_result_tampered_state", "MRTR: refuses altered state", _tampered_state),
        fixture_tool(
            "test_input_required_result_capabilities", "MRTR: asks only what the client can answer", _capabilities
        ),
        fixture_tool("test_missing_capability", "Needs the sampling client capability", _missing_capability),
        fixture_tool(
            "test_streaming_elicitation",
            "Asks for input with an InputRequiredResult, never a request on the stream",
            _streaming_elicitation,
        ),
        fixture_tool("test_logging_tool", "Logs only when the request asked for a log level", _logging_tool),
        fixture_tool(
            "test_trigger_tool_change", "Publishes notifications/tools/list_changed to listeners", _trigger_tool_change
        ),
        fixture_tool(
            "test_trigger_prompt_change",
            "Publishes notifications/prompts/list_changed to listeners",
            _trigger_prompt_change,
        ),
        fixture_tool(
            "test_custom_header",
            "A parameter mirrored in the Mcp-Param-Region header",
            _custom_header,
            CUSTOM_HEADER_SCHEMA,
        ),
    ]


def build_prompts() -> list[Prompt]:
    return [
        Prompt(
            definition=types.Prompt(
                name="test_input_required_result_prompt", description="MRTR: a prompt that asks for context first"
            ),
            render=_prompt,
        )
    ]
