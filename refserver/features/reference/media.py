"""The MCP tiny image: a PNG drawn and encoded here, so the server needs no imaging library or asset file.

Tools and prompts both hand it out, so it lives apart from either.
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Sequence
from typing import Final

import mcp_types as types

PNG_MIME_TYPE: Final = "image/png"


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def encode_png_rgba(width: int, height: int, pixels: Sequence[Sequence[tuple[int, int, int, int]]]) -> bytes:
    """A minimal but spec-valid PNG (8-bit RGBA, no interlace), so no imaging library is needed."""
    # Each scanline starts with its filter type; 0 ("None") keeps the encoder trivial.
    raw = b"".join(b"\x00" + b"".join(bytes(pixel) for pixel in row) for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw, 9))
        + _png_chunk(b"IEND", b"")
    )


def _tiny_image_pixels(size: int) -> list[list[tuple[int, int, int, int]]]:
    # Two parallel diagonal strokes on a transparent square: a nod to the MCP logo's linked strokes.
    ink = (20, 20, 20, 255)
    clear = (0, 0, 0, 0)
    rows = []
    for y in range(size):
        row = []
        for x in range(size):
            diagonal = x + y - size // 2
            on_stroke = abs(diagonal - size // 4) <= 1 or abs(diagonal - 3 * size // 4) <= 1
            inside = 1 <= x < size - 1 and 1 <= y < size - 1
            row.append(ink if on_stroke and inside else clear)
        rows.append(row)
    return rows


TINY_IMAGE_SIZE: Final = 16
TINY_IMAGE_PNG: Final = encode_png_rgba(TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, _tiny_image_pixels(TINY_IMAGE_SIZE))
TINY_IMAGE_BASE64: Final = base64.b64encode(TINY_IMAGE_PNG).decode("ascii")


def tiny_image(annotations: types.Annotations | None = None) -> types.ImageContent:
    return types.ImageContent(data=TINY_IMAGE_BASE64, mime_type=PNG_MIME_TYPE, annotations=annotations)
