"""Images for the vision tests, built in code."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
from PIL import Image


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def noise_png(seed: int = 0, size: int = 64) -> bytes:
    """Random colours."""
    rng = np.random.default_rng(seed)
    return png_bytes(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def flat_png(colour: tuple[int, int, int] = (200, 30, 30), size: int = 64) -> bytes:
    """One colour: unlike noise_png in every respect."""
    return png_bytes(np.full((size, size, 3), colour, dtype=np.uint8))


def bomb_png(side: int = 8000) -> bytes:
    """A small file that declares side x side pixels (one bit each, all zero)."""
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{b64(data)}"


def tiled_tiff(width: int, height: int, tile: tuple[int, int]) -> bytes:
    """An 8-bit grey deflate TIFF of width x height in one tile of tile[0] x tile[1]
    pixels, all zero: the tile's data is a complete zlib stream of that many bytes."""
    compressor = zlib.compressobj(9)
    row = b"\0" * tile[0]
    data = b"".join(compressor.compress(row) for _ in range(tile[1])) + compressor.flush()
    data += b"\0" * (len(data) % 2)  # the IFD starts on a word boundary
    entries = [  # (tag, type: 3 SHORT / 4 LONG, value), in tag order
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),  # bits per sample
        (259, 3, 8),  # compression: deflate
        (262, 3, 1),  # photometric: black is zero
        (277, 3, 1),  # samples per pixel
        (322, 4, tile[0]),
        (323, 4, tile[1]),
        (324, 4, 8),  # the tile's offset: right after the header
        (325, 4, len(data)),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    return struct.pack("<2sHI", b"II", 42, 8 + len(data)) + data + ifd + struct.pack("<I", 0)


def short_png(width: int, height: int, rows: int) -> bytes:
    """An 8-bit grey PNG declaring width x height whose compressed data is a complete zlib
    stream of only `rows` rows (grey 128)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress((b"\0" + b"\x80" * width) * rows, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
