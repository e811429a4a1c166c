"""The one interface between the protocol handlers and everything that touches MLX."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import msgspec

from ..config import Settings
from ..protocol.errors import InvalidParams, ModelLoadError, ModelNotLoaded, TokenizerError
from ..protocol.methods import (
    CheckDraftResult,
    DetokenizeResult,
    DistributedStatus,
    GenerateParams,
    LoadModelParams,
    LoadModelResult,
    TokenizeResult,
)
from ..protocol.notifications import LoadStage
from . import kv_disk
from .chat import ChatPlan, plan_chat
from .drafts import check_draft
from .encoders import load_embedding_model
from .guidance import GuidanceCompiler, StreamGuidance
from .loader import LoadedModel, LoadProgress, load_model, resolve_model_dir
from .lockstep import Lockstep
from .memory import MemoryLedger, Residency, effective_settings, memory_budget
from .memory.budget import apply_mlx_limits
from .memory.release import release_freed_memory
from .prompts import encode_prompt, require_room
from .refusals import Ask, model_kind, refuse
from .registry import ModelRegistry
from .scheduler import Scheduler
from .stream import StreamRequest, StreamSink
from .stream_sampling import stream_sampling
from .token_ids import check_token_ids, vocab_size
from .vision import VisionEngine
from .vision.inputs import VisionInputs

log = logging.getLogger(__name__)

# How long the residency watcher waits for the engine thread to give memory back.
RELEASE_WAIT_S = 5.0


class Engine:
    # A group's ranks replay this engine's steps: some options are refused (refusals.py).
    distributed = False

    def __init__(
        self, settings: Settings, sink: StreamSink, lockstep: Lockstep | None = None
    ) -> None:
        """`lockstep`: what keeps the other ranks of a distributed group in step."""
        self.budget = memory_budget(settings)
        # Each model's prompt cache is held to its share of the budget.
        settings = effective_settings(settings, self.budget)
        apply_mlx_limits(self.budget)
        self.settings = settings
        self.models = ModelRegistry()
        self.guidance = GuidanceCompiler()
        self.scheduler = Scheduler(
            sink,
            settings.limits.max_active_streams,
            settings.scheduler,
            lockstep,
            emit_on_thread=True,
        )
        self.vision = VisionEngine(settings, sink, self.models, self.scheduler)
        self.models.on_retire(self._model_retired)
        self.memory = MemoryLedger(self.budget.bytes, settings.scheduler.admission_timeout_s)
        self.residency = Residency(
            settings,
            self.models,
            self.memory,
            {
                "text": self.load,
                "vision": lambda params, _: self.vision.load(params),
                "embedding": lambda params, _: load_embedding_model(
                    params, self.settings.cache_dir, self.models
                ),
            },
            self.unload,
        )
        self.scheduler.pending.on_release = self.residency.stream_ended
        self.residency.release_memory = self._release_freed_memory
        # The prompt cache's folder is indexed now, in the background, not at first use.
        kv_disk.open_configured_store(settings.scheduler)
        self.scheduler.start_engine_thread()

    # -- models ----------------------------------------------------------------------------

    def load(
        self,
        params: LoadModelParams,
        on_stage: Callable[[LoadStage, int, int], None] | None = None,
    ) -> LoadModelResult:
        """Load (or replace) a model; `on_stage(stage, done, total)` as each stage begins."""
        progress = LoadProgress(params.model_id, params.local_path, on_stage)
        progress.reach("resolving")
        model_dir = resolve_model_dir(
            params.model_id,
            params.local_path,
            params.revision,
            self.settings.cache_dir / "gguf",
            on_import=lambda: progress.reach("converting_gguf"),
        )
        if params.quantization:
            raise ModelLoadError(
                "on-the-fly quantization is not supported; load a quantized model directory",
                model_id=params.model_id,
            )
        progress.reach("loading_weights")
        loaded = load_model(
            params.model_id,
            model_dir,
            context_length=params.context_length,
            trust_remote_code=params.trust_remote_code,
            draft=params.draft,
            dtype=params.dtype,
        )
        self.models.put(loaded)
        log.info("loaded %s from %s", params.model_id, model_dir)
        progress.reach("ready")
        return loaded.load_result()

    def unload(self, model_id: str, reason: str | None = None) -> None:
        """`reason`: what its streams are told (an eviction says so)."""
        self.models.remove(model_id, reason)

    def _release_freed_memory(self) -> None:
        """On the engine thread: mx.clear_cache waits for MLX's streams while holding the
        GIL, so called from another thread during a step that never ends (a distributed
        rank died inside a collective) it froze every thread, the exit timer included."""
        try:
            self.scheduler.run_between_steps(release_freed_memory, timeout=RELEASE_WAIT_S)
        except Exception as exc:  # stopping, or the engine is busy: the next idle tries again
            log.debug("freed memory not released now: %s", exc)

    def _model_retired(self, model: LoadedModel, reason: str) -> None:
        """End the streams of a model the registry let go of, whoever replaced it."""
        self.scheduler.fail_model(model, reason)
        self.vision.fail_model(model, reason)
        # Its tokenizer may differ from the next model's under the same id.
        self.guidance.forget(model.model_id)

    # -- tokenizer -------------------------------------------------------------------------

    def tokenize(self, model_id: str, text: str, add_special_tokens: bool) -> TokenizeResult:
        tokenizer = self.residency.require(model_id).tokenizer
        try:
            tokens: list[int] = tokenizer.encode(text, add_special_tokens=add_special_tokens)
            strings: list[str] = tokenizer.convert_ids_to_tokens(tokens)
        except Exception as exc:
            raise TokenizerError(f"tokenization failed: {exc}", model_id=model_id) from exc
        return TokenizeResult(tokens=tokens, token_strings=strings)

    def detokenize(
        self, model_id: str, tokens: list[int], skip_special_tokens: bool
    ) -> DetokenizeResult:
        loaded = self.residency.require(model_id)
        check_token_ids("tokens", tokens, vocab_size(loaded))
        text: str = loaded.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)
        return DetokenizeResult(text=text)

    # -- generation ------------------------------------------------------------------------

    def prepare_stream(self, params: GenerateParams) -> StreamRequest:
        """Validate and tokenize a request, claim its stream id and reserve its KV cache.
        The caller starts it with `start` once the client has been told the stream id. The
        models it names stay resident meanwhile (loaded again first if evicted)."""
        refuse(Ask(params, self.distributed), "runtime")
        with self.residency.in_use(params.model_id, params.draft_model):
            return self._prepare_stream(params)

    def _prepare_stream(self, params: GenerateParams) -> StreamRequest:
        self._require_within_limits(params)
        refuse(Ask(params, self.distributed), "request")
        loaded = self.models.get(params.model_id)
        ask = Ask(params, self.distributed, model_kind(loaded))
        refuse(ask, "model")
        chat = plan_chat(params, loaded, ask.tools)
        # A vision model's prompt (images included) goes through mlx-vlm's processor.
        vision = self.vision.prepare_inputs(loaded, params)
        draft = self._draft_for(loaded, params.draft_model)
        if vision is not None:
            prompt_tokens = vision.prompt_tokens
        else:
            prompt_tokens = encode_prompt(params, loaded, chat)
        require_room(loaded, len(prompt_tokens), params.max_tokens)
        vocab = vocab_size(loaded)
        check_token_ids("stop_token_ids", params.stop_token_ids, vocab)
        check_token_ids("logit_bias", params.logit_bias or {}, vocab)
        guidance = self._guidance_for(params, loaded, chat, vocab)
        sampling = stream_sampling(params, guidance)
        request = StreamRequest(
            stream_id=params.stream_id or f"stream-{uuid.uuid4().hex}",
            model=loaded,
            prompt_tokens=prompt_tokens,
            max_tokens=params.max_tokens,
            sampler=sampling.sampler,
            logits_processors=sampling.processors,
            stop_sequences=list(params.stop_sequences),
            stop_token_ids=frozenset(params.stop_token_ids),
            logprobs=params.logprobs or params.top_logprobs > 0,
            top_logprobs=params.top_logprobs,
            include_cumulative_text=params.include_cumulative_text
            or self.settings.compat_cumulative_text,
            draft=draft,
            num_draft_tokens=params.num_draft_tokens,
            guidance=guidance,
            sampling=sampling.settings,
            chat_output=chat.output(prompt_tokens),
        )
        self._claim(request, vision)
        return request

    def _require_within_limits(self, params: GenerateParams) -> None:
        limits = self.settings.limits
        if params.max_tokens > limits.max_tokens:
            raise InvalidParams("max_tokens", f"must be <= {limits.max_tokens}", "out_of_range")
        if params.temperature > limits.max_temperature:
            raise InvalidParams(
                "temperature", f"must be <= {limits.max_temperature}", "out_of_range"
            )

    def _guidance_for(
        self, params: GenerateParams, loaded: LoadedModel, chat: ChatPlan, vocab: int
    ) -> StreamGuidance | None:
        """The token mask of the request's guidance, or of the call its tool_choice forces."""
        if params.guidance is not None:
            return self.guidance.compile(params.guidance, loaded, vocab)
        if (forced_call := chat.forced_call()) is not None:
            grammar, field_name = forced_call
            return self.guidance.compile_grammar(grammar, field_name, loaded, vocab)
        return None

    def _claim(self, request: StreamRequest, vision: VisionInputs | None) -> None:
        """Take the stream's id and its KV cache's room; a vision stream's inputs wait
        beside it for `start`."""
        self.scheduler.reserve(request.stream_id)
        self._reserve_kv(request)
        if vision is not None:
            self.vision.hold(request.stream_id, vision)

    def _reserve_kv(self, request: StreamRequest) -> None:
        """Hold the stream's KV cache in the memory budget until it is released (waiting
        for room up to scheduler.admission_timeout_s), or give its stream id back."""
        models = [request.model] + ([request.draft] if request.draft is not None else [])
        tokens = len(request.prompt_tokens) + request.max_tokens
        try:
            self.residency.reserve_kv(request.stream_id, models, tokens)
        except BaseException:
            self.scheduler.release(request.stream_id)
            raise

    def start(self, request: StreamRequest) -> None:
        """Start a prepared stream once its client knows the stream id."""
        if not self.vision.start(request):
            self.scheduler.start(request)

    def release(self, stream_id: str) -> None:
        """A prepared stream that will not start (its client never got the stream id)."""
        self.vision.forget(stream_id)
        self.scheduler.release(stream_id)

    def cancel(self, stream_id: str) -> bool:
        """One cancel for text and vision streams: they share `scheduler.pending`."""
        return self.scheduler.cancel(stream_id)

    def _draft_for(self, primary: LoadedModel, draft_id: str | None) -> LoadedModel | None:
        if draft_id is None:
            return None
        try:
            draft = self.models.get(draft_id)
        except ModelNotLoaded as exc:
            raise InvalidParams("draft_model", f"draft model '{draft_id}' is not loaded") from exc
        verdict = check_draft(primary, draft)
        if not verdict.compatible:
            raise InvalidParams("draft_model", "; ".join(verdict.errors))
        return draft

    def check_draft(self, primary_id: str, draft_id: str) -> CheckDraftResult:
        return check_draft(self.residency.require(primary_id), self.residency.require(draft_id))

    def active_streams(self) -> int:
        """Streams accepted and not yet ended, queued ones included."""
        return self.scheduler.active_count

    def prompt_cache_stats(self) -> dict[str, dict[str, float]]:
        """Each model's prompt cache counters (entries, bytes, hits …), for runtime/metrics."""
        return self.scheduler.prompt_cache_stats()

    def distributed_status(self) -> DistributedStatus | msgspec.UnsetType:
        """The ranks serving with this engine; unset (not sent) in a single process."""
        return msgspec.UNSET

    def shutdown(self) -> None:
        self.residency.stop()
        self.vision.stop()
        self.scheduler.stop()
        # Streams ended by the stop stored their caches: their blocks go to disk now.
        kv_disk.close_stores(kv_disk.SHUTDOWN_WRITE_S)
