"""Download a model snapshot from the Hugging Face Hub: the `download_model` method and the
`mlx-serving-download` command.

`huggingface_hub.snapshot_download` does the work: it resolves the revision to a commit,
fetches only files matching the allow-patterns, resumes partial files, reuses what the
cache holds, and works from the cache alone under `HF_HUB_OFFLINE`. This module adds one
progress figure in bytes (for `runtime.progress` notifications and the terminal bar) and
turns the Hub's exceptions into the protocol's errors with messages a user can act on.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .protocol.errors import InvalidParams, ModelLoadError, RpcError

# done, total, unit ("B", or "file" where the Hub library reports no byte counts).
ProgressCallback = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Snapshot:
    repo_id: str
    revision: str
    commit: str
    local_path: Path
    files: int
    total_bytes: int


class _Progress:
    """Folds the progress bars snapshot_download opens into one done/total figure.

    snapshot_download creates its bars from the `tqdm_class` it is given: a bar counting
    files and, in current versions, byte bars whose totals grow as each file starts. Bytes
    are reported when there are byte bars, files otherwise; updates come from the download
    threads and are passed on at most every `interval` seconds."""

    def __init__(self, callback: ProgressCallback, interval: float) -> None:
        self._callback = callback
        self._interval = interval
        self._lock = threading.Lock()
        self._bars: list[Any] = []
        self._last_sent = 0.0

    def bar_class(self) -> type[Any]:
        progress = self

        class _SilentBar(tqdm):  # type: ignore[misc]  # tqdm ships no types
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs.pop("name", None)  # huggingface_hub's own bars take a group name
                self.counted_unit = kwargs.get("unit", "it")
                kwargs["disable"] = True
                super().__init__(*args, **kwargs)
                with progress._lock:
                    progress._bars.append(self)

            def update(self, n: float | None = 1) -> bool | None:
                # A disabled tqdm does not count; this one must.
                self.n += n or 0
                progress.changed()
                return None

        return _SilentBar

    def figure(self) -> tuple[int, int, str]:
        with self._lock:
            byte_bars = [bar for bar in self._bars if bar.counted_unit == "B"]
            bars = byte_bars or self._bars
            if not bars:
                return 0, 0, "B"
            done = int(max(bar.n for bar in bars))
            totals = [int(bar.total) for bar in bars if bar.total]
            # Of several byte bars (network and disk), the smallest total is the exact sum
            # of file sizes; a transfer bar's total is only an estimate that runs ahead.
            total = max(min(totals), done) if totals else done
            return done, total, "B" if byte_bars else "file"

    def changed(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last_sent < self._interval:
                return
            self._last_sent = now
        self._callback(*self.figure())


def download_snapshot(
    repo_id: str,
    *,
    revision: str | None,
    allow_patterns: list[str] | None,
    cache_dir: str | None,
    max_workers: int = 8,
    on_progress: ProgressCallback | None = None,
    progress_interval_s: float = 0.25,
) -> Snapshot:
    """The local folder of `repo_id` at `revision`, downloading what the cache lacks.
    Raises InvalidParams for a malformed repo id and ModelLoadError for anything else."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.utils import filter_repo_objects  # type: ignore[attr-defined]  # lazy export

    progress = _Progress(on_progress or (lambda *_: None), progress_interval_s)
    if on_progress is not None:
        on_progress(0, 0, "B")
    try:
        local = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=allow_patterns,
            max_workers=max_workers,
            tqdm_class=progress.bar_class(),
        )
    except Exception as exc:
        raise _describe_failure(exc, repo_id, revision, cache_dir) from exc
    folder = Path(local)
    # The snapshot folder is shared by every download of this commit: count what was asked.
    present = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    by_name = {p.relative_to(folder).as_posix(): p for p in present}
    files = [by_name[n] for n in filter_repo_objects(by_name, allow_patterns=allow_patterns)]
    if not files:
        raise ModelLoadError(
            f"no file of '{repo_id}' matches the allow patterns {allow_patterns}",
            model_id=repo_id,
        )
    total_bytes = sum(p.stat().st_size for p in files)
    if on_progress is not None:
        on_progress(total_bytes, total_bytes, "B")
    return Snapshot(
        repo_id=repo_id,
        revision=revision or constants.DEFAULT_REVISION,
        commit=folder.name,
        local_path=folder,
        files=len(files),
        total_bytes=total_bytes,
    )


def _describe_failure(
    exc: Exception, repo_id: str, revision: str | None, cache_dir: str | None
) -> RpcError:
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = constants.ENDPOINT
    wanted = f"'{repo_id}' (revision {revision or constants.DEFAULT_REVISION})"
    if isinstance(exc, HFValidationError):
        return InvalidParams("repo_id", str(exc).splitlines()[0])
    if isinstance(exc, GatedRepoError):
        message = f"'{repo_id}' on {endpoint} is gated: accept its terms and set HF_TOKEN"
    elif isinstance(exc, RepositoryNotFoundError):
        message = (
            f"repository '{repo_id}' was not found on {endpoint} "
            "(or it is private and no token was given)"
        )
    elif isinstance(exc, RevisionNotFoundError):
        message = f"revision '{revision}' of '{repo_id}' was not found on {endpoint}"
    elif constants.HF_HUB_OFFLINE and isinstance(
        exc, (LocalEntryNotFoundError, OfflineModeIsEnabled)
    ):
        cache = cache_dir or constants.HF_HUB_CACHE
        message = (
            f"HF_HUB_OFFLINE is set and {wanted} is not (completely) in the cache {cache}; "
            "unset HF_HUB_OFFLINE to download it"
        )
    elif isinstance(exc, LocalEntryNotFoundError):
        message = f"cannot reach {endpoint} to download {wanted}, and the cache lacks it"
    elif isinstance(exc, HfHubHTTPError):
        message = f"download of {wanted} from {endpoint} failed: {str(exc).splitlines()[0]}"
    else:
        message = f"download of {wanted} failed: {type(exc).__name__}: {exc}"
    return ModelLoadError(message, model_id=repo_id)


# -- mlx-serving-download --------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """`mlx-serving-download REPO_ID`: download a snapshot; print its local folder."""
    from .config import ConfigError, load_settings

    parser = argparse.ArgumentParser(
        prog="mlx-serving-download",
        description="Download a model snapshot from the Hugging Face Hub into the local cache "
        "and print its folder (load it with load_model's local_path).",
    )
    parser.add_argument("repo_id", help="owner/name on the Hub")
    parser.add_argument("--revision", help="branch, tag or commit (default: main)")
    parser.add_argument(
        "--allow-pattern",
        action="append",
        dest="allow_patterns",
        metavar="GLOB",
        help="files to fetch; repeat for several (default: download.allow_patterns)",
    )
    parser.add_argument("--all-files", action="store_true", help="fetch every file")
    parser.add_argument("--cache-dir", help="Hugging Face cache folder (default: HF_HUB_CACHE)")
    parser.add_argument("--config", metavar="FILE", help="runtime.yaml for the defaults")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"mlx-serving-download: invalid configuration: {exc}", file=sys.stderr)
        return 2
    config = settings.download
    patterns = None if args.all_files else (args.allow_patterns or config.allow_patterns)
    bar = tqdm(
        desc=args.repo_id,
        total=0,
        unit="B",
        unit_scale=True,
        file=sys.stderr,
        disable=not sys.stderr.isatty() or bool(os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")),
    )

    def show(done: int, total: int, unit: str) -> None:
        bar.unit = unit
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        snapshot = download_snapshot(
            args.repo_id,
            revision=args.revision,
            allow_patterns=patterns,
            cache_dir=args.cache_dir or config.cache_dir,
            max_workers=config.max_workers,
            on_progress=show,
            progress_interval_s=0.1,
        )
    except RpcError as exc:
        bar.close()
        print(f"mlx-serving-download: {exc.message}", file=sys.stderr)
        return 1
    bar.close()
    print(snapshot.local_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
