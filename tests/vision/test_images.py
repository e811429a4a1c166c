"""Images are checked before they reach a model: each bad one is a -32602 naming its field,
and the runtime goes on serving text and vision requests."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import pytest

pytest.importorskip("mlx_vlm", reason="the vision tests need the `vision` extra (mlx-vlm)")

from PIL import Image  # noqa: E402
from tests.vision.images import (  # noqa: E402
    b64,
    bomb_png,
    data_uri,
    flat_png,
    noise_png,
    short_png,
    tiled_tiff,
)

from mlx_serving.config import VisionConfig  # noqa: E402
from mlx_serving.engine.vision.images import decode_image  # noqa: E402
from mlx_serving.protocol.errors import InvalidParams  # noqa: E402
from mlx_serving.testing.client import RuntimeClient  # noqa: E402

MiB = 1024 * 1024
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"


def rejected(value: str, limits: VisionConfig | None = None) -> str:
    with pytest.raises(InvalidParams) as caught:
        decode_image(value, "image", limits or VisionConfig())
    assert caught.value.field == "image"
    return caught.value.message


def test_decodes_base64_and_data_uris() -> None:
    png = noise_png()
    for value in (b64(png), data_uri(png), data_uri(png, "IMAGE/PNG")):
        image = decode_image(value, "image", VisionConfig())
        assert image.size == (64, 64) and image.mode == "RGB"
    # base64 wrapped into lines as MIME tools write it
    wrapped = "\n".join(b64(png)[i : i + 76] for i in range(0, len(b64(png)), 76))
    assert decode_image(wrapped, "image", VisionConfig()).size == (64, 64)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_common_formats(fmt: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 10), (1, 2, 3)).save(buffer, format=fmt)
    assert decode_image(b64(buffer.getvalue()), "image", VisionConfig()).size == (20, 10)


def test_exif_orientation_is_applied() -> None:
    pixels = np.zeros((10, 20, 3), dtype=np.uint8)
    pixels[:, :10] = (255, 0, 0)  # left half red: width 20, height 10
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", exif=exif)
    image = decode_image(b64(buffer.getvalue()), "image", VisionConfig())
    assert image.size == (10, 20)
    red, _, _ = image.getpixel((5, 2))  # the red half is now on top
    assert red > 200


def test_bad_images_are_rejected_before_decoding_pixels() -> None:
    png = noise_png()
    assert "base64" in rejected(b64(png)[:-3])  # truncated mid-quantum
    assert "truncated or corrupt" in rejected(b64(png[: len(png) // 2 // 3 * 3]))
    assert "not an image" in rejected(b64(b"just some text, not an image"))
    assert "not an image" in rejected(b64(EPS))  # Pillow could run Ghostscript for it
    assert "base64" in rejected("data:image/png;base64,@@@@")
    assert "not image/*" in rejected("data:text/plain;base64," + b64(png))
    assert "';base64' missing" in rejected("data:image/png," + b64(png))
    assert "no ','" in rejected("data:image/png;base64")
    assert "empty" in rejected("")
    assert "over the size limit" in rejected(b64(png), VisionConfig(max_image_bytes=1024))
    assert "pixels" in rejected(b64(bomb_png()))


def test_png_data_cut_off_fails_but_data_that_ends_early_leaves_rows_black() -> None:
    png = noise_png()
    assert "truncated or corrupt" in rejected(b64(png[:-40]))  # cut inside the zlib stream
    # A zlib stream that ends cleanly after one row: Pillow (like browsers) leaves the rest
    # black. Not caught, but it costs no more than the pixels its header declares.
    image = decode_image(b64(short_png(4096, 512, rows=1)), "image", VisionConfig())
    assert image.size == (4096, 512)
    assert image.getpixel((0, 0)) == (128, 128, 128)
    assert image.getpixel((0, 1)) == (0, 0, 0)


def test_tiff_tiles_larger_than_the_image_are_refused_before_decoding() -> None:
    # libtiff inflates a whole tile at a time: a 16x16 image declaring one 4096x4096 tile
    # (a 16 KB file) would make it allocate and fill 16 MiB; at 32768x32768, 1 GiB.
    assert "tile" in rejected(b64(tiled_tiff(16, 16, (4096, 4096))))
    # TIFF tiles are multiples of 16 in each dimension, so a tile may overhang the image
    # by up to 15 pixels each way, no more.
    assert "tile" in rejected(b64(tiled_tiff(16, 16, (32, 16))))
    # Within the image's pixel count rounded up to whole tiles, but over the pixel limit.
    limits = VisionConfig(max_image_pixels=1024)
    assert "tile" in rejected(b64(tiled_tiff(1, 1024, (16, 1024))), limits)
    image = decode_image(b64(tiled_tiff(20, 10, (32, 16))), "image", VisionConfig())
    assert image.size == (20, 10)


def test_size_limit_counts_base64_characters_not_line_breaks() -> None:
    # Just under the limit as decoded bytes; wrapped at 76 columns as MIME tools write it,
    # the text is 1/76 longer, which must not count towards the limit.
    data = os.urandom(60_000)
    text = b64(data)
    wrapped = "\r\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    limits = VisionConfig(max_image_bytes=60_000)
    for value in (text, wrapped, data_uri(data)[:22] + wrapped):
        message = rejected(value, limits)  # not an image, but not over the limit either
        assert "not an image" in message, message
    assert "over the size limit" in rejected(b64(data + b"x" * 4), limits)


def error_of(client: RuntimeClient, method: str, params: dict[str, Any]) -> dict[str, Any]:
    response = client.request(method, {"model_id": "vlm", "max_tokens": 4, **params})
    assert "error" in response, response
    error: dict[str, Any] = response["error"]
    assert error["code"] == -32602, error
    return error


def test_bad_images_through_the_runtime(vision_runtime: RuntimeClient) -> None:
    png = noise_png()
    over_cap = b64(os.urandom(10 * MiB + 16))  # just over the default 10 MiB
    cases = [
        ({"prompt": "x", "image": b64(png)[:-3]}, "image", "base64"),
        ({"prompt": "x", "image": b64(b"%PDF-1.4 not an image")}, "image", "not an image"),
        ({"prompt": "x", "image": over_cap}, "image", "size limit"),
        ({"prompt": "x", "image": data_uri(bomb_png())}, "image", "pixels"),
        ({"prompt": "x", "images": [b64(png), "!!"]}, "images[1]", "base64"),
        ({"prompt": "x"}, "image", "needs an image"),
        ({"prompt": "x", "images": [b64(png)] * 9}, "images", "limit 8"),
    ]
    for params, field, words in cases:
        error = error_of(vision_runtime, "generate_with_image", params)
        assert error["data"]["field"] == field, error
        assert words in error["message"], error

    messages = [
        {"role": "system", "content": "s"},
        {"role": "assistant", "content": "a"},
        {
            "role": "user",
            "content": [{"type": "image", "image": b64(png)[:100]}, {"type": "text", "text": "t"}],
        },
    ]
    error = error_of(vision_runtime, "generate", {"messages": messages})
    assert error["data"]["field"] == "messages[2].content[0].image"
    messages[2]["content"] = [{"type": "image", "image": b64(b"GIF89a broken")}]
    error = error_of(vision_runtime, "generate", {"messages": messages})
    assert error["data"]["field"] == "messages[2].content[0].image"
    assistant_image = [{"role": "assistant", "content": [{"type": "image", "image": b64(png)}]}]
    error = error_of(vision_runtime, "generate", {"messages": assistant_image})
    assert error["data"]["field"] == "messages[0].content[0].image"

    # Still serving both kinds of model, and no stream was left behind.
    text = vision_runtime.generate(
        {"model_id": "llama", "prompt": "def", "max_tokens": 4, "temperature": 0}
    )
    assert text["event"]["finish_reason"] == "length"
    vision = vision_runtime.collect(
        vision_runtime.call(
            "generate_with_image",
            {"model_id": "vlm", "prompt": "x", "image": data_uri(flat_png()), "max_tokens": 4},
        )["stream_id"]
    )
    assert vision["event"]["event"] == "completed"
    assert vision_runtime.call("runtime/state")["active_streams"] == 0


def test_lower_limits_from_the_config(vision_dir: Any) -> None:
    env = {
        "MLX_SERVING_VISION__MAX_IMAGE_BYTES": "2048",
        "MLX_SERVING_VISION__MAX_IMAGE_PIXELS": "1000",
    }
    with RuntimeClient(env=env) as client:
        client.call("load_vision_model", {"model_id": "vlm", "local_path": str(vision_dir)})
        big = error_of(client, "generate_with_image", {"prompt": "x", "image": b64(noise_png())})
        assert "2048" in big["message"]
        wide = error_of(client, "generate_with_image", {"prompt": "x", "image": b64(flat_png())})
        assert "64x64" in wide["message"]
