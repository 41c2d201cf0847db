"""The catalog of features a server offers: tools, resources, templates, prompts and completions.

Feature modules build a `Catalog`; the server merges the enabled ones. Handlers are plain async
functions of their arguments and a `FeatureContext`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, TypeAlias

import attrs
import mcp_types as types

from refserver.features.context import FeatureContext
from refserver.protocol.core import CacheHint, InputRequired
from refserver.protocol.tasks import FORBIDDEN

ToolOutcome: TypeAlias = types.CallToolResult | InputRequired
"""A tool's answer, or what it needs from the client first (it is called again with the answers)."""
ToolHandler: TypeAlias = Callable[[dict[str, Any], FeatureContext], Awaitable[ToolOutcome]]
ResourceContents: TypeAlias = types.TextResourceContents | types.BlobResourceContents
ResourceReader: TypeAlias = Callable[[FeatureContext], Awaitable[list[ResourceContents]]]
TemplateReader: TypeAlias = Callable[[str, dict[str, str], FeatureContext], Awaitable[list[ResourceContents]]]
PromptRenderer: TypeAlias = Callable[[dict[str, str], FeatureContext], Awaitable[types.GetPromptResult | InputRequired]]
Completer: TypeAlias = Callable[[str, Mapping[str, str]], Awaitable[list[str]]]
"""(partial value, other arguments already chosen) -> candidate values."""


TaskPrelude: TypeAlias = Callable[[dict[str, Any], FeatureContext], Awaitable[InputRequired | None]]
"""What a task-running tool asks the client before its task is created (None: ready, create the task)."""


@attrs.frozen
class Tool:
    definition: types.Tool
    handler: ToolHandler
    task_support: str = FORBIDDEN
    """`forbidden`, `optional` or `required` (protocol/tasks.py): whether a call may, or must, run as a task."""
    idempotent: bool = False
    """Safe to run again from the start when the instance running its task is lost (else the task fails)."""
    task_prelude: TaskPrelude | None = None
    required_scopes: frozenset[str] = frozenset()
    """OAuth scopes a call needs beyond the MCP endpoints' own (step-up: a token without them gets 403)."""


NO_CACHE: Final = CacheHint(0, "private")
"""For what may change at any time or differ per user: read it again every time."""
LISTING_CACHE: Final = CacheHint(60_000, "public")
"""The lists are the same for every user and change rarely (and a `list_changed` notification says when)."""
DISCOVERY_CACHE: Final = CacheHint(300_000, "public")


@attrs.frozen
class Resource:
    definition: types.Resource
    read: ResourceReader
    cache: CacheHint = NO_CACHE
    listed: bool = True
    """False for a resource reached only through a tool's metadata (an MCP Apps view): readable, not listed."""


@attrs.frozen
class ResourceTemplate:
    definition: types.ResourceTemplate
    read: TemplateReader
    completions: Mapping[str, Completer] = attrs.field(factory=dict)
    cache: CacheHint = NO_CACHE
    _pattern: re.Pattern[str] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_pattern", compile_uri_template(self.definition.uri_template))

    def match(self, uri: str) -> dict[str, str] | None:
        found = self._pattern.fullmatch(uri)
        return found.groupdict() if found else None


@attrs.frozen
class Prompt:
    definition: types.Prompt
    render: PromptRenderer
    completions: Mapping[str, Completer] = attrs.field(factory=dict)


def compile_uri_template(template: str) -> re.Pattern[str]:
    """RFC 6570 level-1 templates (`{name}` segments), which is all the catalogs here use."""
    pattern = ""
    position = 0
    for found in re.finditer(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", template):
        pattern += re.escape(template[position : found.start()]) + f"(?P<{found.group(1)}>[^/?#]+)"
        position = found.end()
    return re.compile(pattern + re.escape(template[position:]))


@attrs.frozen
class Catalog:
    tools: Sequence[Tool] = ()
    resources: Sequence[Resource] = ()
    templates: Sequence[ResourceTemplate] = ()
    prompts: Sequence[Prompt] = ()
    listing_cache: CacheHint = LISTING_CACHE
    """How long the lists of this catalog may be reused; merged catalogs take the stricter of their hints."""

    def merged_with(self, other: Catalog) -> Catalog:
        return Catalog(
            tools=(*self.tools, *other.tools),
            resources=(*self.resources, *other.resources),
            templates=(*self.templates, *other.templates),
            prompts=(*self.prompts, *other.prompts),
            listing_cache=self.listing_cache.combined(other.listing_cache),
        )


@attrs.frozen
class FeatureIndex:
    """A merged catalog with the lookups the dispatcher needs, built once at start-up."""

    catalog: Catalog
    tools: Mapping[str, Tool]
    resources: Mapping[str, Resource]
    prompts: Mapping[str, Prompt]

    @classmethod
    def build(cls, catalogs: Sequence[Catalog]) -> FeatureIndex:
        merged = Catalog()
        for catalog in catalogs:
            merged = merged.merged_with(catalog)
        tools = {t.definition.name: t for t in merged.tools}
        resources = {r.definition.uri: r for r in merged.resources}
        prompts = {p.definition.name: p for p in merged.prompts}
        for kind, index, items in (
            ("tool", tools, merged.tools),
            ("resource", resources, merged.resources),
            ("prompt", prompts, merged.prompts),
        ):
            if len(index) != len(items):
                raise ValueError(f"duplicate {kind} names across feature modules")
        return cls(merged, tools, resources, prompts)

    def scopes_for_call(self, method: str, params: Mapping[str, Any] | None) -> frozenset[str]:
        """The scopes a request needs beyond the endpoint's own: a `tools/call` of a tool that declares some.
        (An unknown tool needs none here: the call itself answers that it is unknown.)"""
        if method != "tools/call" or not isinstance(params, Mapping):
            return frozenset()
        name = params.get("name")
        tool = self.tools.get(name) if isinstance(name, str) else None
        return tool.required_scopes if tool is not None else frozenset()

    def find_template(self, uri: str) -> tuple[ResourceTemplate, dict[str, str]] | None:
        for template in self.catalog.templates:
            variables = template.match(uri)
            if variables is not None:
                return template, variables
        return None

    def cache_hint(self, method: str, params: Mapping[str, Any] | None) -> CacheHint | None:
        """The caching hint of a cacheable method's result, from the features' own metadata; None otherwise."""
        if method == "server/discover":
            return DISCOVERY_CACHE
        if method in ("tools/list", "prompts/list", "resources/list", "resources/templates/list"):
            return self.catalog.listing_cache
        if method == "resources/read":
            uri = str((params or {}).get("uri", ""))
            resource = self.resources.get(uri)
            if resource is not None:
                return resource.cache
            found = self.find_template(uri)
            return found[0].cache if found else NO_CACHE
        return None

    def template_by_uri(self, uri_template: str) -> ResourceTemplate | None:
        for template in self.catalog.templates:
            if template.definition.uri_template == uri_template:
                return template
        return None
