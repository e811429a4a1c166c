"""Vision-language models through mlx-vlm (the `vision` extra): loading, image checks,
prompts with images, and the lane their streams run on. Nothing here imports mlx-vlm until
a vision model is loaded, so the runtime starts as fast without it."""

from .engine import VisionEngine, vision_installed
from .loader import EXTRA_HINT, LoadedVisionModel, require_mlx_vlm

__all__ = [
    "EXTRA_HINT",
    "LoadedVisionModel",
    "VisionEngine",
    "require_mlx_vlm",
    "vision_installed",
]
