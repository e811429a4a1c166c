"""Images for the vision tests, built in code."""

from __future__ import annotations

import base64
import io

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
