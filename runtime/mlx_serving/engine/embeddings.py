"""Text embeddings from an mlx-lm model: its final hidden states (after the last norm,
without the output head), pooled over each text's own tokens. Dedicated encoders
(encoders.py) are served the same way with their attention mask.

Texts of a group are padded on the right to the longest one. A causal model's state at a
token depends on that token and the ones before it only, so padding after a text changes
none of its states: a text gives the same vector alone and in a batch, and no attention
mask is needed; pooling counts the text's own tokens only.

All the MLX work runs on the engine thread between batch steps, in pieces of about one
prefill chunk (`StepBudget`, measured like the batch's own prefill): texts sorted by length
and grouped while a group's padded tokens fit the budget, so little is spent on padding; a
text longer than the budget runs alone, a chunk per piece, through a KV cache (an encoder's
runs whole). A running stream therefore waits for at most one piece per step, however
large the request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import make_prompt_cache

from ..config import SchedulerConfig
from ..protocol.errors import (
    GenerationError,
    InvalidParams,
    ModelNotLoaded,
    NotAvailable,
    RpcError,
)
from .encoders import LoadedEncoder
from .loader import LoadedModel
from .scheduler import Scheduler
from .step_budget import StepBudget
from .token_ids import vocab_size

log = logging.getLogger(__name__)

Pooling = Literal["mean", "last", "cls"]

# Where mlx-lm keeps the transformer without its output head: most models' `model`; a
# multimodal wrapper's text model under `language_model`; older ports say `transformer`,
# state-space models `backbone`. Each returns the hidden states after the final norm.
_BACKBONE_ATTRIBUTES = ("model", "transformer", "backbone")


@dataclass(frozen=True)
class Backbone:
    """How a model turns right-padded rows of tokens (with each row's length) into its
    final hidden states, (rows, tokens, width)."""

    run: Callable[[mx.array, mx.array, list[Any] | None], Any]
    # Causal: a text's states do not depend on what follows it, so a long text may run a
    # chunk at a time through a KV cache (passed as the third argument).
    causal: bool


def text_backbone(loaded: LoadedModel) -> Backbone:
    """The model's transformer without the output head, or -32602 naming the model."""
    from .vision.loader import LoadedVisionModel

    if isinstance(loaded, LoadedVisionModel):
        raise InvalidParams(
            "model_id", f"'{loaded.model_id}' is a vision model; embed takes a text model"
        )
    if isinstance(loaded, LoadedEncoder):
        encoder = loaded.model

        def encode(inputs: mx.array, lengths: mx.array, cache: list[Any] | None) -> Any:
            # Attention goes both ways: padding must be masked out of every text's states.
            mask = mx.arange(inputs.shape[1])[None, :] < lengths[:, None]
            return encoder(inputs, attention_mask=mask.astype(mx.float32)).last_hidden_state

        return Backbone(encode, causal=False)
    outer = getattr(loaded.model, "language_model", loaded.model)
    decoder = next(
        (part for name in _BACKBONE_ATTRIBUTES if callable(part := getattr(outer, name, None))),
        None,
    )
    if decoder is None:
        raise InvalidParams(
            "model_id",
            f"model '{loaded.model_id}' ({loaded.config.get('model_type')}) has no text "
            "backbone that embed knows how to call",
        )
    return Backbone(lambda inputs, _, cache: decoder(inputs, cache=cache), causal=True)


def hidden_size(loaded: LoadedModel) -> int | None:
    """The width of the final hidden states as the config states it, where it does."""
    for config in (loaded.config, loaded.config.get("text_config") or {}):
        for key in ("hidden_size", "d_model", "n_embd"):
            value = config.get(key)
            if isinstance(value, int) and value > 0:
                return value
    return None


def embedding_tokens(
    loaded: LoadedModel, texts: Sequence[str], fields: Sequence[str], truncate: bool
) -> list[list[int]]:
    """Each text's tokens (with the tokenizer's special tokens, as its model was trained),
    at most the context length: longer is -32602 naming the text's field, or cut to fit
    when `truncate`."""
    tokenizer = loaded.tokenizer
    limit = loaded.context_length
    vocab = vocab_size(loaded)
    token_lists = []
    for text, where in zip(texts, fields, strict=True):
        tokens: list[int] = tokenizer.encode(text, add_special_tokens=True)
        if not tokens:
            raise InvalidParams(where, "the text encodes to no tokens")
        if len(tokens) > limit:
            if not truncate:
                raise InvalidParams(
                    where,
                    f"{len(tokens)} tokens; the model's context length is {limit} "
                    "(send truncate: true to embed the first tokens only)",
                    "out_of_range",
                )
            tokens = tokens[:limit]
        # A tokenizer can know more ids (added tokens) than the model embeds; MLX would
        # index past the embedding table.
        if max(tokens) >= vocab:
            raise InvalidParams(
                where, f"encodes to token id {max(tokens)}, outside the model's vocabulary"
            )
        token_lists.append(tokens)
    return token_lists


def pool(hidden: mx.array, lengths: mx.array, pooling: Pooling) -> mx.array:
    """(batch, tokens, width) right-padded hidden states -> (batch, width), counting the
    first `lengths[i]` tokens of row i only."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        return hidden[mx.arange(hidden.shape[0]), lengths - 1]
    own = (mx.arange(hidden.shape[1])[None, :] < lengths[:, None]).astype(hidden.dtype)
    return (hidden * own[:, :, None]).sum(axis=1) / lengths[:, None].astype(hidden.dtype)


@dataclass
class _LongText:
    """A text too long for one piece, prefilled a chunk per piece through a KV cache."""

    index: int
    tokens: list[int]
    cache: list[Any]
    done: int = 0  # tokens already run
    total: mx.array | None = None  # mean: the sum of the states so far
    first: mx.array | None = None  # cls: the first token's state


@dataclass
class EmbeddingJob:
    """One request's texts, worked off piece by piece. Its pieces run on the engine thread
    only, one at a time (the request thread waits for each): nothing here needs a lock."""

    model: LoadedModel
    backbone: Backbone
    token_lists: list[list[int]]
    pooling: Pooling
    vectors: list[np.ndarray | None] = field(init=False)
    _waiting: list[int] = field(init=False)  # indexes, longest first (taken from the end)
    _long: _LongText | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.vectors = [None] * len(self.token_lists)
        self._waiting = sorted(
            range(len(self.token_lists)), key=lambda i: len(self.token_lists[i]), reverse=True
        )

    @property
    def finished(self) -> bool:
        return not self._waiting and self._long is None

    def run_piece(self, budget: int) -> int:
        """Embed the next texts, or the next chunk of a long one, within `budget` padded
        tokens; return the padded tokens run."""
        if self._long is None:
            shortest = self._waiting[-1]
            if len(self.token_lists[shortest]) > budget and self.backbone.causal:
                self._waiting.pop()
                tokens = self.token_lists[shortest]
                self._long = _LongText(shortest, tokens, make_prompt_cache(self.model.model))
            else:
                return self._run_group(budget)
        return self._run_chunk(self._long, budget)

    def _run_group(self, budget: int) -> int:
        group: list[int] = []
        # Sorted by length, so each text taken is the group's longest so far.
        while self._waiting:
            length = len(self.token_lists[self._waiting[-1]])
            if group and (len(group) + 1) * length > budget:
                break
            group.append(self._waiting.pop())
        width = len(self.token_lists[group[-1]])
        rows = [self.token_lists[i] + [0] * (width - len(self.token_lists[i])) for i in group]
        lengths = mx.array([len(self.token_lists[i]) for i in group])
        hidden = self._hidden(mx.array(rows), lengths, cache=None)
        pooled = np.array(pool(hidden, lengths, self.pooling))
        for row, index in enumerate(group):
            self.vectors[index] = pooled[row]
        return len(group) * width

    def _run_chunk(self, text: _LongText, budget: int) -> int:
        chunk = text.tokens[text.done : text.done + budget]
        hidden = self._hidden(mx.array([chunk]), mx.array([len(chunk)]), cache=text.cache)[0]
        if text.done == 0:
            text.first = hidden[0]
        if self.pooling == "mean":
            chunk_sum = hidden.sum(axis=0)
            text.total = chunk_sum if text.total is None else text.total + chunk_sum
        text.done += len(chunk)
        # Run the chunk now, in this piece, not whenever the result is first read.
        mx.eval([c.state for c in text.cache], text.first, text.total)
        if text.done < len(text.tokens):
            return len(chunk)
        if self.pooling == "mean":
            assert text.total is not None
            vector = text.total / len(text.tokens)
        elif self.pooling == "cls":
            assert text.first is not None
            vector = text.first
        else:
            vector = hidden[-1]
        self.vectors[text.index] = np.array(vector)
        self._long = None
        return len(chunk)

    def _hidden(self, inputs: mx.array, lengths: mx.array, cache: list[Any] | None) -> mx.array:
        hidden = self.backbone.run(inputs, lengths, cache)
        if not isinstance(hidden, mx.array) or hidden.ndim != 3:
            raise InvalidParams(
                "model_id",
                f"model '{self.model.model_id}' does not return hidden states embed can pool",
            )
        # Pool in float32 whatever the model computes in: a bf16 sum over many tokens
        # would lose the digits that tell two texts apart.
        return hidden.astype(mx.float32)

    def result(self) -> np.ndarray:
        return np.stack([v for v in self.vectors if v is not None])


class Embedder:
    """Runs embedding jobs on the scheduler's engine thread, sized by a prefill budget
    per model (read and written by the engine thread only)."""

    def __init__(self, scheduler: Scheduler, settings: SchedulerConfig) -> None:
        self._scheduler = scheduler
        self._settings = settings
        self._budgets: dict[str, StepBudget] = {}  # model_id -> its measured budget

    def embed(
        self, loaded: LoadedModel, token_lists: list[list[int]], pooling: Pooling
    ) -> np.ndarray:
        """(texts, width) float32 vectors, not normalized, in the order of `token_lists`."""
        job = EmbeddingJob(loaded, text_backbone(loaded), token_lists, pooling)
        while not job.finished:
            try:
                self._scheduler.run_between_steps(lambda: self._run_piece(job))
            except RpcError:
                raise
            except RuntimeError as exc:  # the piece's own errors are RpcErrors by now
                raise NotAvailable(str(exc), model_id=loaded.model_id) from exc
        return job.result()

    def _run_piece(self, job: EmbeddingJob) -> None:
        model = job.model
        if model.retirement.reason is not None:  # unloaded or replaced since the request
            raise ModelNotLoaded(model.retirement.reason, model_id=model.model_id)
        budget = self._budgets.get(model.model_id)
        if budget is None:
            settings = self._settings
            budget = self._budgets[model.model_id] = StepBudget(
                max_step_s=settings.max_step_ms / 1000,
                max_chunk_tokens=settings.prefill_chunk_tokens,
                fixed_tokens=settings.prefill_token_budget,
            )
        started = time.perf_counter()
        try:
            tokens = job.run_piece(budget.tokens(decoding=self._scheduler.active_count > 0))
        except RpcError:
            raise
        except Exception as exc:  # MLX's own (out of memory, say): the client's -32002
            log.exception("embedding with %s failed", model.model_id)
            raise GenerationError(
                f"embedding failed: {type(exc).__name__}: {exc}", model_id=model.model_id
            ) from exc
        budget.record_prefill(tokens, time.perf_counter() - started)
