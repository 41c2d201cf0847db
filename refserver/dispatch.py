"""The request core: a parsed request with its metadata in, an `Outcome` out, features called in between.

No transport, no session, no storage and no async library here (h11's style: the adapters do the I/O). A
session's state changes come back as `Complete.changes`; what a handler needs from the client comes back as
`InputRequired`. Results are serialized for the request's protocol version.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import mcp_types as types
import pydantic
from mcp_types import methods as wire

from refserver import __version__
from refserver.argument_validation import ArgumentValidator
from refserver.call_context import CallContext, Emitter
from refserver.errors import (
    ClientCapabilityMissing,
    InternalError,
    InvalidParams,
    MethodNotFound,
    MissingRequiredClientCapability,
    RefserverError,
    ResourceNotFound,
)
from refserver.features.catalog import FeatureIndex, ResourceContents
from refserver.protocol.core import (
    Complete,
    CoreRequest,
    Failed,
    Initialized,
    InputRequired,
    LogLevelSet,
    Outcome,
    StateChange,
    Subscribed,
    TokenExchanger,
    Unsubscribed,
)
from refserver.protocol.envelope import STATELESS_VERSIONS, stateless_result
from refserver.protocol.lifecycle import LATEST_VERSION, LOG_LEVELS, parse_initialize
from refserver.protocol.tasks import TASKS_EXTENSION, TaskBook
from refserver.task_methods import CAPABILITIES_2025, Shaped, TaskMethods, is_task_method
from refserver.tool_calls import describe_schema_error, run_tool, tool_error, with_task_support

logger = logging.getLogger(__name__)

RESOURCES_PAGE_SIZE: Final = 10
"""Resources per `resources/list` page (the seed's page size)."""
MAX_COMPLETION_VALUES: Final = 100
"""The spec caps `completion/complete` at 100 values per response."""
SERVER_NAME: Final = "refserver"
SERVER_DESCRIPTION: Final = (
    "A production-grade remote MCP server: both protocol eras on one endpoint, OAuth 2.1, any number of instances."
)
SERVER_ICON: Final = {
    # Inline, so that the icon needs no route and no request to another origin.
    "src": "data:image/svg+xml;base64,"
    "PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIHZpZXdCb3g9IjAgMCAxNiAxNiI+PHJlY3Qgd2lkdGg9IjE2IiBo"
    "ZWlnaHQ9IjE2IiByeD0iMyIgZmlsbD0iIzI1NjNlYiIvPjwvc3ZnPg==",
    "mimeType": "image/svg+xml",
    "sizes": ["any"],
}
INSTRUCTIONS: Final = (
    "refserver is an MCP feature reference server: tools (echo, add, longRunningOperation, sampleLLM, "
    "getTinyImage, annotatedMessage, getResourceReference, elicitInputs, getWeather), 100 paginated "
    "resources with a template and subscriptions, prompts, completions and logging."
)

HandlerResult = types.Result | dict[str, Any] | Complete | InputRequired | Shaped
Handler = Callable[[Any, CoreRequest, CallContext], Awaitable[HandlerResult]]


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


class RequestSpan:
    """What an adapter tells the request's span at the end: the outcome (nothing, unless tracing is on)."""

    def record(self, outcome: Outcome) -> None:
        pass


_UNTRACED: Final = contextlib.nullcontext(RequestSpan())


class RequestCore:
    def __init__(
        self,
        features: FeatureIndex,
        *,
        website_url: str | None = None,
        tasks: TaskBook | None = None,
        token_exchanger: TokenExchanger | None = None,
    ) -> None:
        self.features = features
        self._token_exchanger = token_exchanger
        self.tasks = TaskMethods(tasks)
        self.server_info: dict[str, Any] = {
            "name": SERVER_NAME,
            "title": "refserver MCP reference server",
            "version": __version__,
            "description": SERVER_DESCRIPTION,
            "icons": [SERVER_ICON],
        }
        if website_url:
            self.server_info["websiteUrl"] = website_url
        self._validators = {
            name: ArgumentValidator(tool.definition.input_schema) for name, tool in features.tools.items()
        }
        self._tool_list = [with_task_support(tool) for tool in features.catalog.tools]
        self._listed_resources = [resource for resource in features.catalog.resources if resource.listed]
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
            "server/discover": self._discover,
        }

    def capabilities(self) -> dict[str, Any]:
        caps: dict[str, Any] = {"logging": {}, "completions": {}}
        # The lists only change when a feature says so (the conformance triggers do), and then every listener is told.
        if self.features.tools:
            caps["tools"] = {"listChanged": True}
        if self.features.resources or self.features.catalog.templates:
            caps["resources"] = {"subscribe": True, "listChanged": False}
        if self.features.prompts:
            caps["prompts"] = {"listChanged": True}
        return caps

    def request_span(self, request: CoreRequest) -> contextlib.AbstractContextManager[RequestSpan]:
        """Where an adapter runs one request to its end (all its rounds, in 2025): traced by `TracedCore`."""
        return _UNTRACED

    async def handle(self, request: CoreRequest, emitter: Emitter) -> Outcome:
        """Run one request; every failure is an outcome (`Failed`), only cancellation propagates."""
        try:
            return await self._handle(request, emitter)
        except RefserverError as exc:
            if request.meta.protocol_version in STATELESS_VERSIONS:
                return Failed(_as_stateless_error(exc))
            return Failed(exc)
        except Exception:
            logger.exception("request %s (%s) failed", request.id, request.method)
            return Failed(InternalError("internal error"))

    async def _handle(self, request: CoreRequest, emitter: Emitter) -> Outcome:
        version = request.meta.protocol_version
        if is_task_method(request):
            answer = await self.tasks.handle(request, emitter)
            return answer if isinstance(answer, InputRequired) else self._shaped(request, answer)
        handler = self._handlers.get(request.method)
        if handler is None:
            raise MethodNotFound(f"Method not found: {request.method}")
        if request.method == "initialize" and version not in STATELESS_VERSIONS:
            version = LATEST_VERSION  # the session's version is what initialize is about to decide
        try:
            typed = wire.parse_client_request(request.method, version, request.params)
        except KeyError:
            raise MethodNotFound(f"Method not found in protocol {version}: {request.method}") from None
        except pydantic.ValidationError as exc:
            raise InvalidParams(f"Invalid params for {request.method}", data=_validation_errors(exc)) from None
        result = await handler(typed.params, request, CallContext(request, emitter, self._token_exchanger))
        if isinstance(result, InputRequired):
            return result
        if isinstance(result, Shaped):
            return self._shaped(request, result)
        changes: tuple[StateChange, ...] = ()
        if isinstance(result, Complete):
            changes = result.changes
            for change in changes:
                if isinstance(change, Initialized):
                    version = change.protocol_version  # initialize answers in the version it negotiated
            data = result.result
        elif isinstance(result, dict):
            data = result
        else:
            data = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        if version in STATELESS_VERSIONS:
            data = stateless_result(
                request.method, data, self.server_info, self.features.cache_hint(request.method, request.params)
            )
        return Complete(wire.serialize_server_result(request.method, version, data), changes)

    def _shaped(self, request: CoreRequest, shaped: Shaped) -> Complete:
        if request.meta.protocol_version in STATELESS_VERSIONS:
            return Complete(stateless_result(request.method, shaped.result, self.server_info, None))
        return Complete(shaped.result)

    async def run_task(self, request: CoreRequest, emitter: Emitter) -> Outcome:
        """One run of a task's `tools/call` (by the task runner): the tool itself, never another task."""
        try:
            params = request.params or {}
            tool = self.features.tools.get(str(params.get("name")))
            if tool is None:
                raise InvalidParams(f"Unknown tool: {params.get('name')}")
            result = await run_tool(
                tool, dict(params.get("arguments") or {}), CallContext(request, emitter, self._token_exchanger)
            )
        except RefserverError as exc:
            return Failed(exc)
        except Exception:
            logger.exception("task %s (%s) failed", request.id, request.method)
            return Failed(InternalError("internal error"))
        if isinstance(result, InputRequired):
            return result
        if not isinstance(result, types.CallToolResult):
            return Failed(InternalError(f"tool {tool.definition.name} gave no tool result"))
        data = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        version = request.meta.protocol_version
        if version in STATELESS_VERSIONS:
            data = stateless_result(request.method, data, self.server_info, None)
        return Complete(wire.serialize_server_result(request.method, version, data))

    # --- lifecycle ---------------------------------------------------------------------------------

    async def _initialize(self, params: Any, request: CoreRequest, context: CallContext) -> Complete:
        initialized = parse_initialize(request.params)
        capabilities = self.capabilities()
        if self.tasks.book is not None:
            capabilities["tasks"] = CAPABILITIES_2025  # only 2025-11-25 has the field; older versions drop it
        result = {
            "protocolVersion": initialized.protocol_version,
            "capabilities": capabilities,
            "serverInfo": {key: self.server_info[key] for key in ("name", "title", "version")},
            "instructions": INSTRUCTIONS,
        }
        return Complete(result, (initialized,))

    async def _discover(self, params: Any, request: CoreRequest, context: CallContext) -> dict[str, Any]:
        return {
            "supportedVersions": list(STATELESS_VERSIONS),
            # Extensions are declared here by name (SEP-2133), each with its (empty) settings.
            "capabilities": {**self.capabilities(), "extensions": self._extensions()},
            "instructions": INSTRUCTIONS,
        }

    def _extensions(self) -> dict[str, Any]:
        return {TASKS_EXTENSION: {}} if self.tasks.book is not None else {}

    async def _ping(self, params: Any, request: CoreRequest, context: CallContext) -> dict[str, Any]:
        return {}

    async def _set_level(self, params: Any, request: CoreRequest, context: CallContext) -> Complete:
        if params.level not in LOG_LEVELS:
            raise InvalidParams(f"Unknown log level {params.level!r}")
        return Complete({}, (LogLevelSet(params.level),))

    # --- tools ---------------------------------------------------------------------------------------

    async def _list_tools(self, params: Any, request: CoreRequest, context: CallContext) -> types.Result:
        return types.ListToolsResult(tools=self._tool_list)

    async def _call_tool(self, params: Any, request: CoreRequest, context: CallContext) -> HandlerResult:
        tool = self.features.tools.get(params.name)
        if tool is None:
            raise InvalidParams(f"Unknown tool: {params.name}")
        arguments = params.arguments or {}
        problems = self._validators[params.name].problems(arguments)
        if problems:
            text = "; ".join(describe_schema_error(e) for e in problems)
            return tool_error(f"Invalid arguments for tool {params.name}: {text}")
        if self.tasks.wants_task(tool, request):
            if tool.task_prelude is not None:
                asked = await tool.task_prelude(arguments, context)
                if asked is not None:
                    return asked
            return await self.tasks.start(tool, request)
        return await run_tool(tool, arguments, context)

    # --- resources -----------------------------------------------------------------------------------

    async def _list_resources(self, params: Any, request: CoreRequest, context: CallContext) -> types.Result:
        offset = _decode_cursor(params.cursor if params else None)
        resources = self._listed_resources
        if offset > len(resources):
            raise InvalidParams("Invalid cursor")
        page = resources[offset : offset + RESOURCES_PAGE_SIZE]
        end = offset + len(page)
        return types.ListResourcesResult(
            resources=[r.definition for r in page],
            next_cursor=_encode_cursor(end) if end < len(resources) else None,
        )

    async def _list_templates(self, params: Any, request: CoreRequest, context: CallContext) -> types.Result:
        return types.ListResourceTemplatesResult(
            resource_templates=[t.definition for t in self.features.catalog.templates]
        )

    async def _read_resource(self, params: Any, request: CoreRequest, context: CallContext) -> types.Result:
        contents = await self.read_resource(str(params.uri), context)
        return types.ReadResourceResult(contents=contents)

    async def read_resource(self, uri: str, context: CallContext) -> list[ResourceContents]:
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

    async def _subscribe(self, params: Any, request: CoreRequest, context: CallContext) -> Complete:
        uri = str(params.uri)
        if not self._known_uri(uri):
            raise ResourceNotFound(f"Resource not found: {uri}", data={"uri": uri})
        return Complete({}, (Subscribed(uri),))

    async def _unsubscribe(self, params: Any, request: CoreRequest, context: CallContext) -> Complete:
        return Complete({}, (Unsubscribed(str(params.uri)),))

    # --- prompts and completions ---------------------------------------------------------------------

    async def _list_prompts(self, params: Any, request: CoreRequest, context: CallContext) -> types.Result:
        return types.ListPromptsResult(prompts=[p.definition for p in self.features.catalog.prompts])

    async def _get_prompt(self, params: Any, request: CoreRequest, context: CallContext) -> HandlerResult:
        prompt = self.features.prompts.get(params.name)
        if prompt is None:
            raise InvalidParams(f"Unknown prompt: {params.name}")
        arguments = dict(params.arguments or {})
        missing = [a.name for a in prompt.definition.arguments or () if a.required and a.name not in arguments]
        if missing:
            raise InvalidParams(f"Missing required argument(s) for prompt {params.name}: {', '.join(missing)}")
        return await prompt.render(arguments, context)

    async def _complete(self, params: Any, request: CoreRequest, context: CallContext) -> types.Result:
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


def _as_stateless_error(error: RefserverError) -> RefserverError:
    """The 2026 revision's code for an error the 2025 era answers otherwise."""
    if isinstance(error, ResourceNotFound):
        return InvalidParams(error.message, data=error.data)  # SEP-2164: an unknown resource is a bad param
    if isinstance(error, ClientCapabilityMissing):
        return MissingRequiredClientCapability(
            error.message, data={"requiredCapabilities": error.required_capabilities}
        )
    return error


def _validation_errors(exc: pydantic.ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(part) for part in e["loc"]], "msg": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]
