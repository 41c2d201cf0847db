"""MCP method dispatch: validated params in, serialized results out, features called in between.

No transport and no storage here: the dispatcher sees a `Session`'s protocol state and a
`RequestContext`, and returns the wire-shaped result for the session's negotiated protocol version.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import jsonschema
import mcp_types as types
import pydantic
import trio
from mcp_types import methods as wire

from refserver import __version__
from refserver.errors import (
    InvalidParams,
    MethodNotFound,
    RefserverError,
    ResourceNotFound,
)
from refserver.features.catalog import FeatureIndex, ResourceContents, Tool
from refserver.protocol.jsonrpc import Request
from refserver.protocol.lifecycle import LATEST_VERSION, LOG_LEVELS
from refserver.session import RequestContext, Session

logger = logging.getLogger(__name__)

RESOURCES_PAGE_SIZE: Final = 10
"""Resources per `resources/list` page (the seed's page size)."""
MAX_COMPLETION_VALUES: Final = 100
"""The spec caps `completion/complete` at 100 values per response."""
SERVER_NAME: Final = "refserver"
INSTRUCTIONS: Final = (
    "refserver is an MCP feature reference server: tools (echo, add, longRunningOperation, sampleLLM, "
    "getTinyImage, annotatedMessage, getResourceReference, elicitInputs, getWeather), 100 paginated "
    "resources with a template and subscriptions, prompts, completions and logging."
)

Handler = Callable[[Session, Any, RequestContext], Awaitable[types.Result | dict[str, Any]]]


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _decode_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        prefix, _, value = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        offset = int(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidParams("Invalid cursor") from None
    if prefix != "offset" or offset < 0:
        raise InvalidParams("Invalid cursor")
    return offset


class McpDispatcher:
    def __init__(self, features: FeatureIndex) -> None:
        self.features = features
        self._validators = {
            name: jsonschema.Draft202012Validator(tool.definition.input_schema) for name, tool in features.tools.items()
        }
        self._tool_list = [tool.definition for tool in features.catalog.tools]
        self._handlers: dict[str, Handler] = {
            "initialize": self._initialize,
            "ping": self._ping,
            "tools/list": self._list_tools,
            "tools/call": self._call_tool,
            "resources/list": self._list_resources,
            "resources/templates/list": self._list_templates,
            "resources/read": self._read_resource,
            "resources/subscribe": self._subscribe,
            "resources/unsubscribe": self._unsubscribe,
            "prompts/list": self._list_prompts,
            "prompts/get": self._get_prompt,
            "completion/complete": self._complete,
            "logging/setLevel": self._set_level,
        }

    def capabilities(self) -> dict[str, Any]:
        caps: dict[str, Any] = {"logging": {}, "completions": {}}
        if self.features.tools:
            caps["tools"] = {"listChanged": False}
        if self.features.resources or self.features.catalog.templates:
            caps["resources"] = {"subscribe": True, "listChanged": False}
        if self.features.prompts:
            caps["prompts"] = {"listChanged": False}
        return caps

    async def __call__(self, session: Session, request: Request, context: RequestContext) -> dict[str, Any]:
        handler = self._handlers.get(request.method)
        if handler is None:
            raise MethodNotFound(f"Method not found: {request.method}")
        version = session.state.lifecycle.protocol_version or LATEST_VERSION
        if request.method == "initialize":
            version = LATEST_VERSION  # the session's version is what initialize is about to decide
        try:
            typed = wire.parse_client_request(request.method, version, request.params)
        except KeyError:
            raise MethodNotFound(f"Method not found in protocol {version}: {request.method}") from None
        except pydantic.ValidationError as exc:
            raise InvalidParams(f"Invalid params for {request.method}", data=_validation_errors(exc)) from None
        result = await handler(session, typed.params, context)
        version = session.state.lifecycle.protocol_version or version
        data = result if isinstance(result, dict) else result.model_dump(by_alias=True, mode="json", exclude_none=True)
        return wire.serialize_server_result(request.method, version, data)

    # --- lifecycle ---------------------------------------------------------------------------------

    async def _initialize(self, session: Session, params: Any, context: RequestContext) -> dict[str, Any]:
        # The lifecycle keeps the client's own JSON (capabilities may carry extensions the models drop).
        version = session.state.lifecycle.receive_initialize(context.raw_params)
        return {
            "protocolVersion": version,
            "capabilities": self.capabilities(),
            "serverInfo": {
                "name": SERVER_NAME,
                "title": "refserver MCP reference server",
                "version": __version__,
            },
            "instructions": INSTRUCTIONS,
        }

    async def _ping(self, session: Session, params: Any, context: RequestContext) -> dict[str, Any]:
        return {}

    async def _set_level(self, session: Session, params: Any, context: RequestContext) -> dict[str, Any]:
        if params.level not in LOG_LEVELS:
            raise InvalidParams(f"Unknown log level {params.level!r}")
        session.state.log_level = params.level
        return {}

    # --- tools ---------------------------------------------------------------------------------------

    async def _list_tools(self, session: Session, params: Any, context: RequestContext) -> types.Result:
        return types.ListToolsResult(tools=self._tool_list)

    async def _call_tool(self, session: Session, params: Any, context: RequestContext) -> types.Result:
        tool = self.features.tools.get(params.name)
        if tool is None:
            raise InvalidParams(f"Unknown tool: {params.name}")
        arguments = params.arguments or {}
        problems = sorted(self._validators[params.name].iter_errors(arguments), key=lambda e: list(e.path))
        if problems:
            text = "; ".join(_describe_schema_error(e) for e in problems)
            return _tool_error(f"Invalid arguments for tool {params.name}: {text}")
        return await _run_tool(tool, arguments, context)

    # --- resources -----------------------------------------------------------------------------------

    async def _list_resources(self, session: Session, params: Any, context: RequestContext) -> types.Result:
        offset = _decode_cursor(params.cursor if params else None)
        resources = self.features.catalog.resources
        if offset > len(resources):
            raise InvalidParams("Invalid cursor")
        page = resources[offset : offset + RESOURCES_PAGE_SIZE]
        end = offset + len(page)
        return types.ListResourcesResult(
            resources=[r.definition for r in page],
            next_cursor=_encode_cursor(end) if end < len(resources) else None,
        )

    async def _list_templates(self, session: Session, params: Any, context: RequestContext) -> types.Result:
        return types.ListResourceTemplatesResult(
            resource_templates=[t.definition for t in self.features.catalog.templates]
        )

    async def _read_resource(self, session: Session, params: Any, context: RequestContext) -> types.Result:
        contents = await self.read_resource(str(params.uri), context)
        return types.ReadResourceResult(contents=contents)

    async def read_resource(self, uri: str, context: RequestContext) -> list[ResourceContents]:
        resource = self.features.resources.get(uri)
        if resource is not None:
            return await resource.read(context)
        found = self.features.find_template(uri)
        if found is None:
            raise ResourceNotFound(f"Resource not found: {uri}", data={"uri": uri})
        template, variables = found
        return await template.read(uri, variables, context)

    def _known_uri(self, uri: str) -> bool:
        return uri in self.features.resources or self.features.find_template(uri) is not None

    async def _subscribe(self, session: Session, params: Any, context: RequestContext) -> dict[str, Any]:
        uri = str(params.uri)
        if not self._known_uri(uri):
            raise ResourceNotFound(f"Resource not found: {uri}", data={"uri": uri})
        session.state.subscriptions.add(uri)
        return {}

    async def _unsubscribe(self, session: Session, params: Any, context: RequestContext) -> dict[str, Any]:
        session.state.subscriptions.discard(str(params.uri))
        return {}

    # --- prompts and completions ---------------------------------------------------------------------

    async def _list_prompts(self, session: Session, params: Any, context: RequestContext) -> types.Result:
        return types.ListPromptsResult(prompts=[p.definition for p in self.features.catalog.prompts])

    async def _get_prompt(self, session: Session, params: Any, context: RequestContext) -> types.Result:
        prompt = self.features.prompts.get(params.name)
        if prompt is None:
            raise InvalidParams(f"Unknown prompt: {params.name}")
        arguments = dict(params.arguments or {})
        missing = [a.name for a in prompt.definition.arguments or () if a.required and a.name not in arguments]
        if missing:
            raise InvalidParams(f"Missing required argument(s) for prompt {params.name}: {', '.join(missing)}")
        return await prompt.render(arguments, context)

    async def _complete(self, session: Session, params: Any, context: RequestContext) -> types.Result:
        ref = params.ref
        completers = {}
        if ref.type == "ref/prompt":
            prompt = self.features.prompts.get(ref.name)
            if prompt is None:
                raise InvalidParams(f"Unknown prompt: {ref.name}")
            completers = dict(prompt.completions)
        else:
            template = self.features.template_by_uri(ref.uri)
            if template is None and not self._known_uri(ref.uri):
                raise InvalidParams(f"Unknown resource template: {ref.uri}")
            completers = dict(template.completions) if template else {}
        completer = completers.get(params.argument.name)
        chosen = dict(params.context.arguments or {}) if params.context else {}
        values = await completer(params.argument.value, chosen) if completer else []
        return types.CompleteResult(
            completion=types.Completion(
                values=values[:MAX_COMPLETION_VALUES],
                total=len(values),
                has_more=len(values) > MAX_COMPLETION_VALUES,
            )
        )


async def _run_tool(tool: Tool, arguments: dict[str, Any], context: RequestContext) -> types.CallToolResult:
    """Errors inside a tool become an `isError` result the model can read, never a protocol error."""
    try:
        return await tool.handler(arguments, context)
    except trio.Cancelled:
        raise
    except RefserverError as exc:
        return _tool_error(exc.message)
    except Exception:
        logger.exception("tool %s failed", tool.definition.name)
        return _tool_error(f"Tool {tool.definition.name} failed with an internal error")


def _tool_error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)


def _describe_schema_error(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(p) for p in error.path) or "arguments"
    return f"{where}: {error.message}"


def _validation_errors(exc: pydantic.ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(part) for part in e["loc"]], "msg": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]
