"""embed: vectors for texts from a loaded text model (engine/embeddings.py), and
load_embedding_model: a dedicated encoder through mlx-embeddings (engine/encoders.py)."""

from __future__ import annotations

import msgspec
import numpy as np

from ..dispatch import Method
from ..engine.embeddings import Embedder, embedding_tokens, hidden_size, text_backbone
from ..engine.encoders import encoders_installed, require_mlx_embeddings
from ..protocol.errors import InvalidParams, NotAvailable
from ..protocol.methods import EmbedParams, EmbedResult, LoadModelParams, LoadModelResult
from .context import RuntimeContext
from .model_loads import ModelLoads

# Decimal places kept in each value: float32 holds about 7 significant digits, and a
# float32 printed as a double takes ~20 bytes where 8 decimals take ~11; rounding moves a
# value by at most 5e-9, a cosine similarity by at most ~1e-8 * sqrt(dimensions).
DECIMALS = 8
# The most one value takes in the answer, comma included: `-0.12345678,` is 12 bytes;
# unnormalized states up to 99999 fit 16. The answer's own line check catches the rest.
VALUE_BYTES = 16
# The answer's envelope, id and other fields.
ANSWER_FIXED_BYTES = 1024


def unadvertised_embed_methods(context: RuntimeContext) -> tuple[str, ...]:
    """Answered, with an error naming why, but not advertised: both methods by a
    distributed runtime, load_embedding_model without mlx-embeddings."""
    if _distributed(context):
        return ("embed", "load_embedding_model")
    return () if encoders_installed() else ("load_embedding_model",)


def embed_methods(context: RuntimeContext, loads: ModelLoads) -> dict[str, Method]:
    engine = context.engine
    limits = context.settings.limits
    embedder = Embedder(engine.scheduler, context.settings.scheduler)

    def embed(params: EmbedParams) -> EmbedResult:
        if _distributed(context):
            # The model is split over ranks that must run every forward pass in step, and
            # the ranks replay only what the lockstep scheduler shares (streams, loads).
            raise NotAvailable(
                "embed is not served by a distributed runtime: its ranks run generation in "
                "lockstep only; embed with a single-process runtime",
                model_id=params.model_id,
            )
        if isinstance(params.input, str):
            texts, fields = [params.input], ["input"]
        else:
            texts = params.input
            fields = [f"input[{i}]" for i in range(len(texts))]
        _require_bytes_within(texts, fields, limits.max_prompt_bytes)
        # Resident for the whole request: loaded again first if evicted, never evicted
        # between two pieces.
        with engine.residency.in_use(params.model_id):
            loaded = engine.models.get(params.model_id)
            text_backbone(loaded)  # refuse a model embed cannot use before tokenizing
            width = hidden_size(loaded)
            if width is not None:
                _require_answer_room(len(texts), width, limits.max_output_line_bytes)
            token_lists = embedding_tokens(loaded, texts, fields, params.truncate)
            vectors = embedder.embed(loaded, token_lists, params.pooling)
        if params.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return EmbedResult(
            embeddings=np.round(vectors.astype(np.float64), DECIMALS).tolist(),
            dimensions=int(vectors.shape[1]),
            prompt_tokens=sum(len(tokens) for tokens in token_lists),
        )

    def load_embedding_model(params: LoadModelParams) -> LoadModelResult:
        if _distributed(context):
            raise NotAvailable(
                "load_embedding_model is not served by a distributed runtime",
                model_id=params.model_id,
            )
        require_mlx_embeddings()  # before the load policy: without it, name the extra
        # The one load path: policy, memory budget (evicted and loaded again like any
        # model), progress and events.
        return loads.load(params, "embedding")

    return {
        "embed": Method(EmbedParams, embed),
        "load_embedding_model": Method(LoadModelParams, load_embedding_model),
    }


def _distributed(context: RuntimeContext) -> bool:
    return context.engine.distributed_status() is not msgspec.UNSET


def _require_bytes_within(texts: list[str], fields: list[str], max_bytes: int) -> None:
    """The texts' UTF-8 is at most json_rpc.max_prompt_bytes in all, the bound generate's
    prompt has: tokenizing costs memory in proportion to the text."""
    total = 0
    for text, where in zip(texts, fields, strict=True):
        size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
        total += size
        if size > max_bytes:
            raise InvalidParams(
                where,
                f"{size} bytes; at most {max_bytes} (json_rpc.max_prompt_bytes)",
                "out_of_range",
            )
    if total > max_bytes:
        raise InvalidParams(
            "input",
            f"{len(texts)} texts of {total} bytes in all; at most {max_bytes} "
            "(json_rpc.max_prompt_bytes): send fewer texts per request",
            "out_of_range",
        )


def _require_answer_room(count: int, width: int, max_line_bytes: int) -> None:
    """The vectors must fit one answer line; refuse before computing them."""
    per_vector = width * VALUE_BYTES + 3
    most = max((max_line_bytes - ANSWER_FIXED_BYTES) // per_vector, 1)
    if count > most:
        raise InvalidParams(
            "input",
            f"{count} texts; the answer holds at most {most} vectors of {width} values "
            "(json_rpc.max_output_line_bytes): send fewer texts per request",
            "out_of_range",
        )
