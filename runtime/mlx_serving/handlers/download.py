"""download_model: a Hub snapshot into the local cache, with runtime.progress notifications.

It runs on the request worker pool like load_model, so a long download never holds up
the reader thread or the other requests."""

from __future__ import annotations

from pathlib import Path

from ..dispatch import Method
from ..download import download_snapshot
from ..engine.model_paths import within_allowed_roots
from ..protocol.errors import InvalidParams
from ..protocol.methods import DownloadModelParams, DownloadModelResult
from ..protocol.notifications import RuntimeProgress
from .context import RuntimeContext


def download_methods(context: RuntimeContext) -> dict[str, Method]:
    config = context.settings.download

    def download_model(params: DownloadModelParams) -> DownloadModelResult:
        cache_dir = params.cache_dir or config.cache_dir
        if params.cache_dir is not None and not within_allowed_roots(
            Path(params.cache_dir), context.settings.security
        ):
            raise InvalidParams(
                "cache_dir", "outside the allowed model roots (security.allowed_model_roots)"
            )
        patterns = config.allow_patterns if params.allow_patterns is None else params.allow_patterns

        def report(done: int, total: int, unit: str) -> None:
            progress = RuntimeProgress(
                task="download", model_id=params.repo_id, done=done, total=total, unit=unit
            )
            context.notify([("runtime.progress", progress)])

        snapshot = download_snapshot(
            params.repo_id,
            revision=params.revision,
            allow_patterns=patterns or None,  # [] asks for every file
            cache_dir=cache_dir,
            max_workers=config.max_workers,
            on_progress=report,
            progress_interval_s=config.progress_interval_s,
        )
        return DownloadModelResult(
            repo_id=snapshot.repo_id,
            revision=snapshot.revision,
            commit=snapshot.commit,
            local_path=str(snapshot.local_path),
            files=snapshot.files,
            total_bytes=snapshot.total_bytes,
        )

    return {"download_model": Method(DownloadModelParams, download_model)}
