"""What a load_model request may make the runtime read or run.

`trust_remote_code` runs Python that ships with a model, so it is refused unless the
config allows it. When the config names allowed model roots, the model a request points
at is resolved with every symlink followed and must lie under one of them, and so must
every file inside it: neither `..` nor a symlink can reach outside. Errors name the path
the request gave and why it is refused, never what a file holds.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import SecurityConfig
from ..protocol.errors import InvalidParams, ModelLoadError

# A model folder holds a handful of files; a walk this long means something else.
MAX_ENTRIES = 10_000


def check_trust_remote_code(requested: bool, security: SecurityConfig) -> None:
    if requested and not security.allow_trust_remote_code:
        raise InvalidParams(
            "trust_remote_code",
            "refused: running a model's own code is disabled in this runtime "
            "(set security.allow_trust_remote_code in runtime.yaml to allow it)",
            "forbidden",
        )


def confine_model_path(
    model_id: str, local_path: str | None, revision: str | None, security: SecurityConfig
) -> Path | None:
    """The real path of the model to load when allowed roots are configured (None when
    they are not, or when the reference is a repo id not in the local cache: the loader
    then fails without reading anything). Raises ModelLoadError for a path outside."""
    if not security.allowed_model_roots:
        return None
    roots = _roots(security)
    reference = local_path or model_id
    candidate = Path(reference).expanduser()
    if local_path is None and not candidate.exists() and not _path_like(model_id):
        cached = _cached_snapshot(model_id, revision)
        if cached is None:
            return None
        candidate = cached
    real = Path(os.path.realpath(candidate))
    if not _under(real, roots):
        raise ModelLoadError(
            f"model path '{reference}' is outside the allowed model roots "
            "(security.allowed_model_roots)",
            model_id=model_id,
        )
    if real.is_dir():
        _check_contents(real, roots, reference, model_id)
    return real


def within_allowed_roots(path: Path, security: SecurityConfig) -> bool:
    """Whether `path` (symlinks followed) lies under an allowed root; true when none are set."""
    if not security.allowed_model_roots:
        return True
    return _under(Path(os.path.realpath(path.expanduser())), _roots(security))


def _roots(security: SecurityConfig) -> list[Path]:
    return [Path(os.path.realpath(root)) for root in security.allowed_model_roots]


def _path_like(model_id: str) -> bool:
    """A Hub repo id is `name` or `owner/name`; anything else names a path."""
    return model_id.startswith(("/", ".", "~")) or model_id.count("/") > 1 or "\\" in model_id


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _check_contents(folder: Path, roots: list[Path], reference: str, model_id: str) -> None:
    seen = 0
    for directory, subdirs, files in os.walk(folder):
        for name in [*subdirs, *files]:
            seen += 1
            if seen > MAX_ENTRIES:
                raise ModelLoadError(
                    f"model folder '{reference}' holds more than {MAX_ENTRIES} entries",
                    model_id=model_id,
                )
            entry = Path(directory, name)
            if not _under(Path(os.path.realpath(entry)), roots):
                relative = entry.relative_to(folder)
                raise ModelLoadError(
                    f"'{relative}' in model folder '{reference}' links outside the allowed "
                    "model roots (security.allowed_model_roots)",
                    model_id=model_id,
                )


def _cached_snapshot(model_id: str, revision: str | None) -> Path | None:
    """Where the loader would find a repo id: its Hugging Face cache snapshot."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_id, revision=revision, local_files_only=True))
    except Exception:  # not a repo id, or not cached: nothing will be read
        return None
