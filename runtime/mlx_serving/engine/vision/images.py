"""Images from requests, checked before any of them reaches a model.

An image arrives as base64 text or a `data:image/…;base64,` URI. What a request can make
the runtime do with it is bounded here: the decoded size is checked from the text's length
before decoding, only common raster formats are opened (Pillow can open many more, some
through external programs), and the pixel count is read from the header before a single
pixel is decoded, so a small file declaring a huge image (a decompression bomb) costs
nothing. Each failure is a -32602 naming the request field that held the image.

Reading the header (`open_image`) and decoding the pixels (`decode`) are separate steps,
so that a request's pixels are known, and leased from the budget of image work in flight
(budget.py), before any of them is decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...config import VisionConfig
from ...protocol.errors import InvalidParams

if TYPE_CHECKING:
    from PIL.Image import Image

# Pillow format ids that are opened; anything else is refused before a plugin parses it.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")

_DATA_URI = re.compile(r"data:(?P<mime>[^;,]*)(?P<params>(;[^;,]*)*),", re.ASCII)
_WHITESPACE = re.compile(rb"\s+")


@dataclass(frozen=True)
class OpenedImage:
    """An image whose header has been read and checked; no pixel is decoded yet."""

    field: str  # the request field that held it
    image: Image
    # What decoding it holds at once: its own pixels, plus a TIFF tile's buffer.
    pixels: int


def open_image(value: str, field: str, limits: VisionConfig) -> OpenedImage:
    data = _decode_base64(_payload(value, field), field, limits.max_image_bytes)
    return _open(data, field, limits.max_image_pixels)


def decode(opened: OpenedImage) -> Image:
    """The RGB image, upright (EXIF orientation applied). Holds one copy of the pixels
    once done: the header's image is turned in place, and closed if converted."""
    from PIL import ImageOps

    image = opened.image
    try:
        # Decodes the pixels: data cut off inside the compressed stream fails here. A PNG
        # whose stream ends cleanly before the last row does not (Pillow, like browsers,
        # leaves the missing rows black); it costs no more than its header's pixels.
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        if image.mode == "RGB":
            return image
        rgb = image.convert("RGB")
    except Exception as exc:
        raise InvalidParams(
            opened.field, f"truncated or corrupt {image.format} image: {exc}"
        ) from exc
    image.close()
    return rgb


def decode_image(value: str, field: str, limits: VisionConfig) -> Image:
    """`open_image`, then `decode`: one image, checked and decoded."""
    return decode(open_image(value, field, limits))


def _payload(value: str, field: str) -> str:
    if not value.startswith("data:"):
        if not value:
            raise InvalidParams(field, "empty image")
        return value
    found = _DATA_URI.match(value)
    if found is None:
        raise InvalidParams(field, "malformed data URI: no ',' before the data")
    mime = found.group("mime").lower()
    if not mime.startswith("image/"):
        raise InvalidParams(field, f"data URI of type '{mime or 'none'}', not image/*")
    if ";base64" not in found.group("params").lower():
        raise InvalidParams(field, "data URI is not base64-encoded (';base64' missing)")
    return value[found.end() :]


def _decode_base64(text: str, field: str, max_bytes: int) -> bytes:
    # Line breaks carry no data, so they come out before the size is estimated (the text
    # itself is bounded by json_rpc.max_frame_bytes).
    raw = text.encode("ascii", errors="replace")
    if _WHITESPACE.search(raw):  # base64 wrapped into lines, as MIME tools write it
        raw = _WHITESPACE.sub(b"", raw)
    # Every 4 characters carry 3 bytes: refuse an over-cap image before decoding any of it.
    if (len(raw) // 4) * 3 > max_bytes + 2:
        raise InvalidParams(
            field,
            f"image is over the size limit: about {len(raw) // 4 * 3} bytes decoded, "
            f"limit {max_bytes} (vision.max_image_bytes)",
            "out_of_range",
        )
    try:
        data = base64.b64decode(raw, validate=True)
    except binascii.Error as exc:
        raise InvalidParams(field, f"invalid base64 ({exc}); truncated?") from exc
    if len(data) > max_bytes:
        raise InvalidParams(
            field,
            f"image is over the size limit: {len(data)} bytes, limit {max_bytes} "
            "(vision.max_image_bytes)",
            "out_of_range",
        )
    if not data:
        raise InvalidParams(field, "empty image")
    return data


def _open(data: bytes, field: str, max_pixels: int) -> OpenedImage:
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        image = PILImage.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError as exc:
        raise InvalidParams(
            field, f"not an image in a supported format ({', '.join(FORMATS)})"
        ) from exc
    except PILImage.DecompressionBombError as exc:
        raise InvalidParams(field, f"image has too many pixels: {exc}", "out_of_range") from exc
    except Exception as exc:  # a header Pillow recognised but could not parse
        raise InvalidParams(field, f"corrupt image: {exc}") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidParams(
            field,
            f"image is {width}x{height} = {width * height} pixels, limit {max_pixels} "
            "(vision.max_image_pixels)",
            "out_of_range",
        )
    if width < 1 or height < 1:
        raise InvalidParams(field, f"image is {width}x{height}")
    tile_pixels = _tile_pixels(image, field, max_pixels)
    return OpenedImage(field=field, image=image, pixels=width * height + tile_pixels)


def _tile_pixels(image: Image, field: str, max_pixels: int) -> int:
    """The pixels of a TIFF's tile (0 if it has none), refused when larger than the image:
    libtiff allocates and inflates a whole tile at a time, so a 16x16 image declaring one
    32768x32768 tile costs 1 GiB. Tiles are multiples of 16 in each dimension and may
    overhang the image by up to 15 pixels each way; more than that is no image a writer
    produces. Strips need no check: libtiff sizes a strip by the image's height whatever
    its RowsPerStrip says."""
    if image.format != "TIFF":
        return 0
    from PIL.TiffImagePlugin import TILELENGTH, TILEWIDTH

    tags = image.tag_v2  # type: ignore[attr-defined]
    tile_width, tile_height = tags.get(TILEWIDTH), tags.get(TILELENGTH)
    if tile_width is None and tile_height is None:
        return 0
    if not isinstance(tile_width, int) or not isinstance(tile_height, int):
        raise InvalidParams(field, "corrupt TIFF image: tile size missing or not a number")
    width, height = image.size
    if (
        tile_width > _whole_tiles(width)
        or tile_height > _whole_tiles(height)
        or tile_width * tile_height > max_pixels
    ):
        raise InvalidParams(
            field,
            f"TIFF tile of {tile_width}x{tile_height} pixels in a {width}x{height} image: "
            f"tiles may not be larger than the image, nor over {max_pixels} pixels "
            "(vision.max_image_pixels)",
            "out_of_range",
        )
    return tile_width * tile_height


def _whole_tiles(size: int) -> int:
    """`size` rounded up to the 16-pixel steps TIFF tile sizes come in."""
    return -(-size // 16) * 16
