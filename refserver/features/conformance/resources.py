"""The conformance suite's resources: three fixed `test://` resources and the `test://template/{id}/data` template."""

from __future__ import annotations

import mcp_types as types

from refserver.features.catalog import Resource, ResourceContents, ResourceReader, ResourceTemplate
from refserver.features.conformance.content import PNG_MIME_TYPE, TEST_IMAGE_BASE64, compact_json
from refserver.features.context import FeatureContext


def _fixed_reader(contents: ResourceContents) -> ResourceReader:
    async def read(ctx: FeatureContext) -> list[ResourceContents]:
        return [contents]

    return read


def _resource(name: str, description: str, contents: ResourceContents) -> Resource:
    definition = types.Resource(uri=contents.uri, name=name, description=description, mime_type=contents.mime_type)
    return Resource(definition=definition, read=_fixed_reader(contents))


def build_resources() -> list[Resource]:
    return [
        _resource(
            "static-text",
            "A static text resource for testing",
            types.TextResourceContents(
                uri="test://static-text",
                mime_type="text/plain",
                text="This is the content of the static text resource.",
            ),
        ),
        _resource(
            "static-binary",
            "A static binary resource (image) for testing",
            types.BlobResourceContents(uri="test://static-binary", mime_type=PNG_MIME_TYPE, blob=TEST_IMAGE_BASE64),
        ),
        _resource(
            "watched-resource",
            "A resource that can be subscribed to for updates",
            types.TextResourceContents(
                uri="test://watched-resource", mime_type="text/plain", text="Watched resource content"
            ),
        ),
    ]


async def _read_template(uri: str, variables: dict[str, str], ctx: FeatureContext) -> list[ResourceContents]:
    item_id = variables["id"]
    data = {"id": item_id, "templateTest": True, "data": f"Data for ID: {item_id}"}
    return [types.TextResourceContents(uri=uri, mime_type="application/json", text=compact_json(data))]


def build_templates() -> list[ResourceTemplate]:
    return [
        ResourceTemplate(
            definition=types.ResourceTemplate(
                uri_template="test://template/{id}/data",
                name="template",
                description="A resource template with parameter substitution",
                mime_type="application/json",
            ),
            read=_read_template,
        )
    ]
