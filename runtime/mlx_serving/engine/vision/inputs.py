"""A vision request's prompt and images → the tensors mlx-vlm generates from.

Runs on the request's thread, before the stream id is handed out, so that every problem
with the request (a bad image, a prompt the processor refuses, a context overflow) is a
-32602 naming its field rather than a stream that fails later. Every check that needs no
pixels comes first; the images are then decoded and processed under a lease of their
pixels from the budget of image work in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...config import VisionConfig
from ...protocol.errors import InvalidParams
from ...protocol.methods import ChatMessage, GenerateParams, GenerateWithImageParams, ImagePart
from ..prompts import require_one_prompt
from ..token_ids import check_token_ids, vocab_size
from .budget import PixelBudget
from .images import OpenedImage, decode, open_image
from .loader import LoadedVisionModel

if TYPE_CHECKING:
    from PIL.Image import Image

# Roles whose image placeholders mlx-vlm's chat formatting leaves out.
_NO_IMAGE_ROLES = ("system", "assistant")


@dataclass
class VisionInputs:
    prompt: str  # the rendered text (empty for prompt_tokens)
    prompt_tokens: list[int]
    # input_ids, pixel_values, mask and the processor's extras (e.g. image_grid_thw),
    # passed to mlx_vlm.stream_generate, which then skips its own preprocessing.
    tensors: dict[str, Any] = field(default_factory=dict)


def prepare_vision_inputs(
    loaded: LoadedVisionModel, params: GenerateParams, limits: VisionConfig, budget: PixelBudget
) -> VisionInputs:
    require_one_prompt(params)
    sources = _image_sources(params, limits)
    opened = [open_image(value, path, limits) for path, value in sources]
    if params.prompt_tokens:
        if opened:
            raise InvalidParams("prompt_tokens", "cannot carry images: send prompt or messages")
        return _from_tokens(loaded, params.prompt_tokens)
    field_name = sources[0][0] if len(sources) == 1 else ("images" if sources else "prompt")
    pixels = _request_pixels(opened, field_name, limits)
    if params.messages:
        text = _render_messages(loaded, params.messages, len(opened))
    elif isinstance(params, GenerateWithImageParams) and not params.raw_prompt:
        text = _render_prompt(loaded, params.prompt, len(opened))
    else:
        text = params.prompt  # generate's prompt is sent as it is, as for text models
    if isinstance(params, GenerateWithImageParams) and params.raw_prompt and not params.messages:
        _check_placeholders(loaded, text, len(opened), field_name)
    if not opened:
        return _process(loaded, text, [], field_name)
    with budget.lease(pixels, loaded.model_id):
        images = [decode(image) for image in opened]
        return _process(loaded, text, images, field_name)


def _request_pixels(opened: list[OpenedImage], field_name: str, limits: VisionConfig) -> int:
    pixels = sum(image.pixels for image in opened)
    if pixels > limits.max_request_pixels:
        raise InvalidParams(
            field_name,
            f"{len(opened)} image(s) of {pixels} pixels in all, limit "
            f"{limits.max_request_pixels} (vision.max_request_pixels)",
            "out_of_range",
        )
    return pixels


def _image_sources(params: GenerateParams, limits: VisionConfig) -> list[tuple[str, str]]:
    """(field path, image text) of every image, in prompt order."""
    from_fields: list[tuple[str, str]] = []
    if isinstance(params, GenerateWithImageParams):
        if params.image:
            from_fields.append(("image", params.image))
        from_fields += [(f"images[{i}]", image) for i, image in enumerate(params.images)]
    from_messages: list[tuple[str, str]] = []
    for index, message in enumerate(params.messages or []):
        if message.content is None or isinstance(message.content, str):
            continue
        for part_index, part in enumerate(message.content):
            if not isinstance(part, ImagePart):
                continue
            path = f"messages[{index}].content[{part_index}].image"
            if message.role in _NO_IMAGE_ROLES:
                raise InvalidParams(path, f"images go in user messages, not '{message.role}'")
            from_messages.append((path, part.image))
    if from_fields and from_messages:
        raise InvalidParams(
            "images", "send images either as image/images or as parts of messages, not both"
        )
    sources = from_fields or from_messages
    if isinstance(params, GenerateWithImageParams) and not sources:
        raise InvalidParams(
            "image", "generate_with_image needs an image (image, images or in messages)", "missing"
        )
    if len(sources) > limits.max_images_per_request:
        raise InvalidParams(
            "images",
            f"{len(sources)} images, limit {limits.max_images_per_request} "
            "(vision.max_images_per_request)",
            "out_of_range",
        )
    return sources


def _check_placeholders(
    loaded: LoadedVisionModel, text: str, num_images: int, field_name: str
) -> None:
    """A raw prompt carries one placeholder per image: the processor silently leaves out
    an image that has none. Only checked where the processor names its placeholder."""
    placeholder = getattr(loaded.processor, "image_token", None)
    if not isinstance(placeholder, str) or not placeholder:
        return
    found = text.count(placeholder)
    if found != num_images:
        raise InvalidParams(
            field_name,
            f"raw_prompt: the prompt holds {found} image placeholder(s) {placeholder!r} "
            f"for {num_images} image(s); put one where each image goes",
        )


def _render_prompt(loaded: LoadedVisionModel, prompt: str, num_images: int) -> str:
    from mlx_vlm.prompt_utils import apply_chat_template

    try:
        text: str = apply_chat_template(
            loaded.processor, loaded.model.config, prompt, num_images=num_images
        )
    except Exception as exc:
        raise InvalidParams("prompt", f"chat template failed: {exc}") from exc
    return text


def _render_messages(
    loaded: LoadedVisionModel, messages: list[ChatMessage], num_images: int
) -> str:
    from mlx_vlm.prompt_utils import apply_chat_template

    rendered: list[dict[str, Any]] = []
    for message in messages:
        content: str | list[dict[str, str]]
        if message.content is None:  # an assistant message that carried tool calls
            content = ""
        elif isinstance(message.content, str):
            content = message.content
        else:
            # The image payload travels beside the text; the template only marks its place.
            content = [
                {"type": "image"}
                if isinstance(part, ImagePart)
                else {"type": "text", "text": part.text}
                for part in message.content
            ]
        rendered.append({"role": message.role, "content": content})
    try:
        text: str = apply_chat_template(
            loaded.processor, loaded.model.config, rendered, num_images=num_images
        )
    except Exception as exc:
        raise InvalidParams("messages", f"chat template failed: {exc}") from exc
    return text


def _from_tokens(loaded: LoadedVisionModel, tokens: list[int]) -> VisionInputs:
    import mlx.core as mx

    check_token_ids("prompt_tokens", tokens, vocab_size(loaded))
    return VisionInputs(
        prompt="", prompt_tokens=list(tokens), tensors={"input_ids": mx.array([tokens])}
    )


def _process(
    loaded: LoadedVisionModel, text: str, images: list[Image], field_name: str
) -> VisionInputs:
    """mlx-vlm's own preprocessing, with the arguments its stream_generate passes."""
    from mlx_vlm.utils import prepare_inputs, should_add_special_tokens

    config = loaded.model.config
    try:
        inputs = prepare_inputs(
            loaded.processor,
            images=images or None,
            prompts=text,
            image_token_index=getattr(config, "image_token_index", None),
            add_special_tokens=should_add_special_tokens(config.model_type, loaded.processor),
        )
    except Exception as exc:
        raise InvalidParams(field_name, f"the model's processor refused the input: {exc}") from exc
    input_ids = inputs.pop("input_ids")
    tokens: list[int] = input_ids[0].tolist()
    if not tokens:
        raise InvalidParams("prompt", "the prompt encodes to no tokens")
    tensors = {
        "input_ids": input_ids,
        "pixel_values": inputs.pop("pixel_values", None),
        "mask": inputs.pop("attention_mask", None),
        **inputs,
    }
    return VisionInputs(prompt=text, prompt_tokens=tokens, tensors=tensors)
