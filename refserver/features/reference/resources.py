"""The numbered static resources (`test://static/resource/{id}`), their template and its id completion.

The tools and prompts that embed a resource read it through `resource_contents`, so one place decides
what each id holds.
"""

from __future__ import annotations

import base64
import re
from typing import Final

import mcp_types as types

from refserver.errors import ResourceNotFound
from refserver.features.catalog import Resource, ResourceContents, ResourceReader, ResourceTemplate
from refserver.features.context import FeatureContext
from refserver.features.reference.completions import choices_completer
from refserver.protocol.core import CacheHint

RESOURCE_COUNT: Final = 100
RESOURCE_URI_PREFIX: Final = "test://static/resource/"
RESOURCE_URI_TEMPLATE: Final = RESOURCE_URI_PREFIX + "{id}"
STATIC_CONTENT: Final = CacheHint(60_000, "public")
"""The static resources read the same for everyone; an update notification tells a subscriber to read again."""


def resource_uri(resource_id: int) -> str:
    return f"{RESOURCE_URI_PREFIX}{resource_id}"


def resource_contents(resource_id: int) -> list[ResourceContents]:
    """The contents `resources/read` returns for a static resource; odd ids are text, even ids binary."""
    uri = resource_uri(resource_id)
    if not 1 <= resource_id <= RESOURCE_COUNT:
        raise ResourceNotFound(f"Resource not found: {uri}", data={"uri": uri})
    if resource_id % 2 == 1:
        return [
            types.TextResourceContents(
                uri=uri, mime_type="text/plain", text=f"Resource {resource_id}: This is a plaintext resource"
            )
        ]
    payload = f"Resource {resource_id}: This is a base64 blob".encode()
    return [
        types.BlobResourceContents(
            uri=uri,
            mime_type="application/octet-stream",
            blob=base64.b64encode(payload).decode("ascii"),
        )
    ]


def _static_reader(resource_id: int) -> ResourceReader:
    async def read(ctx: FeatureContext) -> list[ResourceContents]:
        return resource_contents(resource_id)

    return read


def static_resources() -> list[Resource]:
    resources = []
    for resource_id in range(1, RESOURCE_COUNT + 1):
        mime_type = "text/plain" if resource_id % 2 == 1 else "application/octet-stream"
        definition = types.Resource(uri=resource_uri(resource_id), name=f"Resource {resource_id}", mime_type=mime_type)
        resources.append(Resource(definition=definition, read=_static_reader(resource_id), cache=STATIC_CONTENT))
    return resources


_CANONICAL_ID: Final = re.compile(r"[1-9][0-9]*")
_DECIMAL: Final = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() would also accept e.g. Arabic digits


def parse_resource_id(value: str) -> int | None:
    """A resource id written in decimal (as prompt arguments arrive), or None if it is not one."""
    text = value.strip()
    if not _DECIMAL.fullmatch(text):
        return None
    resource_id = int(text)
    return resource_id if 1 <= resource_id <= RESOURCE_COUNT else None


async def _read_from_template(uri: str, variables: dict[str, str], ctx: FeatureContext) -> list[ResourceContents]:
    raw_id = variables.get("id", "")
    # Only the canonical spelling names a resource, so one resource never answers to several URIs.
    resource_id = parse_resource_id(raw_id) if _CANONICAL_ID.fullmatch(raw_id) else None
    if resource_id is None:
        raise ResourceNotFound(f"Resource not found: {uri}", data={"uri": uri})
    return resource_contents(resource_id)


complete_resource_id: Final = choices_completer(str(i) for i in range(1, RESOURCE_COUNT + 1))


def resource_template() -> ResourceTemplate:
    return ResourceTemplate(
        definition=types.ResourceTemplate(
            uri_template=RESOURCE_URI_TEMPLATE,
            name="Static Resource",
            description="A static resource with a numeric ID",
        ),
        read=_read_from_template,
        completions={"id": complete_resource_id},
    )
