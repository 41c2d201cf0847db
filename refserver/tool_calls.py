"""Calling one tool: its failures become an `isError` result the model can read (never a protocol error), except
the two that must end the call as JSON-RPC errors; and a tool's task support as the 2025-11-25 wire shows it.

Part of the request core: no async library here (a contract).
"""

from __future__ import annotations

import logging
from typing import Any

import jsonschema
import mcp_types as types

from refserver.call_context import CallContext
from refserver.errors import ClientCapabilityMissing, RefserverError, ToolCallFailed
from refserver.features.catalog import Tool, ToolOutcome
from refserver.protocol.envelope import STATELESS_VERSIONS
from refserver.protocol.tasks import FORBIDDEN

logger = logging.getLogger(__name__)


async def run_tool(tool: Tool, arguments: dict[str, Any], context: CallContext) -> ToolOutcome:
    """Errors inside a tool become an `isError` result the model can read, never a protocol error, except that
    in the 2026 era a missing client capability is the request's error (-32021), as the revision requires, and a
    tool may end its call with a JSON-RPC error on purpose (`ToolCallFailed`: a task then ends `failed`)."""
    try:
        return await tool.handler(arguments, context)
    except ClientCapabilityMissing as exc:
        if context.meta.protocol_version in STATELESS_VERSIONS:
            raise
        return tool_error(exc.message)
    except ToolCallFailed:
        raise
    except RefserverError as exc:
        return tool_error(exc.message)
    except Exception:
        logger.exception("tool %s failed", tool.definition.name)
        return tool_error(f"Tool {tool.definition.name} failed with an internal error")


def tool_error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)


def describe_schema_error(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(p) for p in error.path) or "arguments"
    return f"{where}: {error.message}"


def with_task_support(tool: Tool) -> types.Tool:
    """The 2025-11-25 `execution.taskSupport` of a tool that may run as a task (2026 has no such field: the
    serializer drops it there)."""
    if tool.task_support == FORBIDDEN:
        return tool.definition
    return tool.definition.model_copy(update={"execution": types.ToolExecution(task_support=tool.task_support)})
