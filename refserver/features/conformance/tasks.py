"""The conformance suite's fixtures for the tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663).

Names, arguments and texts are the ones the suite's `tasks-*` scenarios call. Whether a tool may or must run as a
task is a property of its registration here (the extension has no per-tool field on the wire); the same tools run
as 2025-11-25 experimental tasks, where `tools/list` shows it as `execution.taskSupport`.
"""

from __future__ import annotations

from typing import Any, Final

import mcp_types as types
import trio

from refserver.errors import ToolCallFailed
from refserver.features.catalog import Tool, ToolOutcome
from refserver.features.conformance.content import text, tool_result
from refserver.features.context import FeatureContext
from refserver.features.inputs import answer, ask, elicitation
from refserver.protocol.core import InputRequest, InputRequired
from refserver.protocol.tasks import OPTIONAL, REQUIRED

FAILING_JOB_DELAY: Final = 1.0
"""Seconds `failing_job` works before its tool error (the suite polls the task meanwhile)."""
MAX_COMPUTE_SECONDS: Final = 3600
CONFIRM_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"confirm": {"type": "boolean", "description": "Delete the file?"}},
    "required": ["confirm"],
}
NAME_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "confirm": {"type": "boolean"}},
    "required": ["name"],
}
USER_NAME_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"name": {"type": "string"}},
    "required": ["name"],
}


def _schema(properties: dict[str, Any] | None = None, required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties or {}}
    if required:
        schema["required"] = required
    return schema


def _tool(
    name: str,
    description: str,
    handler: Any,
    schema: dict[str, Any] | None = None,
    *,
    support: str = OPTIONAL,
    idempotent: bool = True,
    prelude: Any = None,
) -> Tool:
    return Tool(
        definition=types.Tool(name=name, description=description, input_schema=schema or _schema()),
        handler=handler,
        task_support=support,
        idempotent=idempotent,
        task_prelude=prelude,
    )


def _accepted(ctx: FeatureContext, key: str) -> dict[str, Any] | None:
    result = answer(ctx, key, types.ElicitResult)
    if result is None or result.action != "accept":
        return None
    return dict(result.content or {})


async def _greet(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    return tool_result(text(f"Hello, {arguments.get('name')}!"))


async def _slow_compute(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    seconds = float(arguments.get("seconds", 0))
    steps = max(1, int(seconds))
    for step in range(steps):
        await trio.sleep(seconds / steps)
        await ctx.report_progress(step + 1, steps, f"computing {arguments.get('label', '')}".strip())
    return tool_result(text(f"Computed {arguments.get('label', 'result')} in {seconds:g}s"))


async def _side_effect_job(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    seconds = float(arguments.get("seconds", 0))
    await trio.sleep(seconds)
    return tool_result(text(f"Side effect done after {seconds:g}s"))


async def _failing_job(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    await trio.sleep(FAILING_JOB_DELAY)
    return tool_result(text("The job failed: the tool reported an error"), is_error=True)


async def _protocol_error_job(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    raise ToolCallFailed("The job failed with a protocol error", data={"job": "protocol_error_job"})


async def _confirm_delete(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    filename = arguments.get("filename")
    reply = answer(ctx, "confirm", types.ElicitResult)
    if reply is None:
        form = types.ElicitRequestFormParams(message=f"Delete {filename}?", requested_schema=CONFIRM_SCHEMA)
        return ask(ctx, confirm=elicitation(form))
    if reply.action == "accept" and (reply.content or {}).get("confirm") is True:
        return tool_result(text(f"Deleted {filename}"))
    return tool_result(text(f"Kept {filename}"))


async def _multi_input(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    first, second = _accepted(ctx, "first"), _accepted(ctx, "second")
    if first is None or second is None:
        return ask(
            ctx,
            first=elicitation(types.ElicitRequestFormParams(message="First input", requested_schema=NAME_SCHEMA)),
            second=elicitation(types.ElicitRequestFormParams(message="Second input", requested_schema=NAME_SCHEMA)),
        )
    return tool_result(text(f"Received {first.get('name')} and {second.get('name')}"))


async def _ask_name_first(arguments: dict[str, Any], ctx: FeatureContext) -> InputRequired | None:
    """MRTR before the task: the name is asked synchronously, then the task is created (the extension's SHOULD)."""
    if _accepted(ctx, "user_name") is not None:
        return None
    return ask(ctx, user_name=_name_form())


def _name_form() -> InputRequest:
    return elicitation(types.ElicitRequestFormParams(message="What is your name?", requested_schema=USER_NAME_SCHEMA))


async def _tool_with_task(arguments: dict[str, Any], ctx: FeatureContext) -> ToolOutcome:
    content = _accepted(ctx, "user_name")
    if content is None:
        return ask(ctx, user_name=_name_form())
    return tool_result(text(f"Hello, {content.get('name')}! Your task is done."))


def build_tools() -> list[Tool]:
    return [
        _tool(
            "greet",
            "Greets by name, always synchronously",
            _greet,
            _schema({"name": {"type": "string"}}, ["name"]),
            support="forbidden",
        ),
        _tool(
            "slow_compute",
            "Computes for `seconds` seconds; a task when the client takes tasks",
            _slow_compute,
            _schema(
                {
                    "seconds": {"type": "number", "minimum": 0, "maximum": MAX_COMPUTE_SECONDS},
                    "label": {"type": "string"},
                },
                ["seconds"],
            ),
        ),
        _tool(
            "side_effect_job",
            "Works for `seconds`, standing for a call with side effects: never run twice, so a task lost with its "
            "instance fails instead",
            _side_effect_job,
            _schema({"seconds": {"type": "number", "minimum": 0, "maximum": MAX_COMPUTE_SECONDS}}, ["seconds"]),
            idempotent=False,
        ),
        _tool("failing_job", "Runs only as a task, which ends with a tool error", _failing_job, support=REQUIRED),
        _tool("protocol_error_job", "A task that ends with a JSON-RPC error", _protocol_error_job),
        _tool(
            "confirm_delete",
            "Asks for confirmation before it deletes (input inside a task)",
            _confirm_delete,
            _schema({"filename": {"type": "string"}}, ["filename"]),
            idempotent=False,
        ),
        _tool("multi_input", "Asks two questions at once inside a task", _multi_input),
        _tool(
            "test_tool_with_task",
            "Asks for a name synchronously, then runs as a task",
            _tool_with_task,
            support=REQUIRED,
            prelude=_ask_name_first,
        ),
    ]
