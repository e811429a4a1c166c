"""Vision requests under load, through the runtime: decoded pixels are budgeted per request
(-32602) and across all image work in flight (-32006 with retry_after_ms), and the peak
RSS of the worst case stays within the budget (a figure in docs/RELIABILITY.md)."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mlx_vlm", reason="the vision tests need the `vision` extra (mlx-vlm)")

from PIL import Image  # noqa: E402
from tests.vision.images import b64  # noqa: E402

from mlx_serving.testing.client import RuntimeClient  # noqa: E402

LIMIT = 8192 * 4096  # the default vision.max_image_pixels


def wide_png(width: int = 8192, height: int = 4096) -> str:
    """A PNG of one colour: a ~100 KB file that decodes to width x height RGB pixels."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return b64(buffer.getvalue())


def test_request_and_in_flight_budgets(vision_dir: Path, llama_dir: Path) -> None:
    env = {
        "MLX_SERVING_VISION__MAX_REQUEST_PIXELS": str(LIMIT),
        "MLX_SERVING_VISION__MAX_PIXELS_IN_FLIGHT": str(LIMIT),
        "MLX_SERVING_VISION__PIXEL_WAIT_MS": "0",
    }
    image = wide_png()
    with RuntimeClient(env=env) as client:
        client.call("load_vision_model", {"model_id": "vlm", "local_path": str(vision_dir)})
        base = {"model_id": "vlm", "prompt": "x", "max_tokens": 1}
        over = client.request("generate_with_image", {**base, "images": [image, image]})
        assert over["error"]["code"] == -32602, over
        assert over["error"]["data"]["field"] == "images"
        assert "vision.max_request_pixels" in over["error"]["message"]
        # Two requests that each fit alone, at once: decoding one takes about a second, so
        # the other finds the budget full and, with no wait allowed, is refused at once.
        ids = [client.send("generate_with_image", {**base, "image": image}) for _ in range(2)]
        answers = [client.response(i, timeout=120) for i in ids]
        errors = [a["error"] for a in answers if "error" in a]
        assert len(errors) == 1, answers
        assert errors[0]["code"] == -32006, errors
        assert errors[0]["data"]["retry_after_ms"] >= 100
        assert errors[0]["data"]["model_id"] == "vlm"
        started = next(a["result"] for a in answers if "result" in a)
        assert client.collect(started["stream_id"])["event"]["event"] == "completed"
        # The budget is free again.
        retried = client.call("generate_with_image", {**base, "image": image})
        assert client.collect(retried["stream_id"])["event"]["event"] == "completed"


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


@pytest.mark.soak
@pytest.mark.parametrize(
    ("images", "request_pixels", "bound_mib"),
    [(8, None, 64), (4, None, 1536), (8, 8 * LIMIT, 3072)],
    ids=["8-images-default", "4-images-default", "8-images-allowed"],
)
def test_peak_rss_of_four_requests_at_once_at_the_pixel_limit(
    vision_dir: Path, images: int, request_pixels: int | None, bound_mib: int
) -> None:
    """Prints the runtime's peak RSS while 4 requests of `images` images at the pixel
    limit arrive at once. Default budgets: 8 images are over max_request_pixels, 4 are at
    it and take turns under max_pixels_in_flight. With max_request_pixels raised to allow
    8, each request is larger than max_pixels_in_flight and so runs alone."""
    env = (
        {}
        if request_pixels is None
        else {"MLX_SERVING_VISION__MAX_REQUEST_PIXELS": str(request_pixels)}
    )
    image = wide_png()
    with RuntimeClient(env=env) as client:
        client.call("load_vision_model", {"model_id": "vlm", "local_path": str(vision_dir)})
        pid = client.process.pid
        loaded = peak_rss_mib(pid)
        params = {"model_id": "vlm", "prompt": "x", "max_tokens": 1, "images": [image] * images}
        started = time.monotonic()
        ids = [client.send("generate_with_image", params) for _ in range(4)]
        answers = [client.response(i, timeout=300) for i in ids]
        seconds = time.monotonic() - started
        outcomes: dict[Any, int] = {}
        for answer in answers:
            key = answer["error"]["code"] if "error" in answer else "stream"
            outcomes[key] = outcomes.get(key, 0) + 1
            if "result" in answer:
                client.collect(answer["result"]["stream_id"])
        peak = peak_rss_mib(pid)
    print(
        f"\n4 requests x {images} images of 8192x4096, max_request_pixels "
        f"{request_pixels or 'default'}: answers {outcomes} in {seconds:.1f} s; "
        f"peak RSS {peak:.0f} MiB (after load {loaded:.0f} MiB)"
    )
    assert peak < loaded + bound_mib
