"""Whether a loaded model can draft for another: speculative decoding proposes tokens by
id, so both must share one vocabulary, token for token."""

from __future__ import annotations

from typing import Any

from ..protocol.methods import (
    CheckDraftResult,
    DraftDetails,
    DraftModelSummary,
    DraftPerformanceEstimate,
)
from .loader import LoadedModel
from .token_ids import vocab_size


def check_draft(primary: LoadedModel, draft: LoadedModel) -> CheckDraftResult:
    errors: list[str] = []
    warnings: list[str] = []
    primary_vocab: dict[str, int] = _vocab(primary.tokenizer)
    draft_vocab: dict[str, int] = _vocab(draft.tokenizer)
    if primary_vocab != draft_vocab:
        differing = len(set(primary_vocab.items()) ^ set(draft_vocab.items()))
        errors.append(
            f"tokenizers differ: '{primary.model_id}' has {len(primary_vocab)} tokens, "
            f"'{draft.model_id}' has {len(draft_vocab)}, {differing} (token, id) pairs differ"
        )
    if vocab_size(draft) < vocab_size(primary):
        # The target's sampled ids are fed to the draft's embedding, which MLX indexes
        # without a bounds check.
        errors.append(
            f"'{draft.model_id}' embeds {vocab_size(draft)} token ids, fewer than the "
            f"{vocab_size(primary)} of '{primary.model_id}'"
        )
    if set(primary.tokenizer.eos_token_ids) != set(draft.tokenizer.eos_token_ids):
        warnings.append("the models name different end-of-sequence tokens")
    if primary is draft or primary.path == draft.path:
        warnings.append("the draft is the primary model itself: no speed-up is possible")
    ratio = draft.parameter_count / max(primary.parameter_count, 1)
    if ratio >= 1:
        warnings.append("the draft is not smaller than the primary model")
    if not draft.draft:
        warnings.append(f"'{draft.model_id}' was not loaded with draft: true")
    return CheckDraftResult(
        compatible=not errors,
        errors=errors,
        warnings=warnings,
        details=DraftDetails(
            primary_model=_summary(primary),
            draft_model=_summary(draft),
            performance_estimate=DraftPerformanceEstimate(
                size_ratio=round(ratio, 4),
                # Fewer proposals when the draft costs a sizeable share of a target step.
                recommended_num_draft_tokens=2 if ratio > 0.25 else 4,
            ),
        ),
    )


def _vocab(tokenizer: Any) -> dict[str, int]:
    vocab: dict[str, int] = tokenizer.get_vocab()
    return vocab


def _summary(loaded: LoadedModel) -> DraftModelSummary:
    return DraftModelSummary(
        model_id=loaded.model_id,
        vocab_size=vocab_size(loaded),
        parameter_count=loaded.parameter_count,
        model_type=str(loaded.config.get("model_type", "unknown")),
    )
