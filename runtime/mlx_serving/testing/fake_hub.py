"""A Hugging Face Hub stand-in on localhost, for tests of the downloader (no real hub is
reachable here). Point `HF_ENDPOINT` at `FakeHub.url`.

It serves what `huggingface_hub.snapshot_download` asks for:
- `GET /api/models/{repo}/revision/{rev}`: repo info with the commit `sha` and `siblings`;
- `GET /api/models/{repo}/tree/{rev}?recursive=…`: the file listing with sizes;
- `HEAD|GET /{repo}/resolve/{rev}/{file}`: the file, with `X-Repo-Commit`, `ETag` and
  `Content-Length`, and `Range` requests answered 206 for resumed downloads.
Unknown repos, revisions and files get 404 with the Hub's `X-Error-Code`.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    commit: str
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    range: str | None


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[SeenRequest] = []
        # File name -> bytes its next GET sends before the connection drops.
        self.cut_once: dict[str, int] = {}
        # Seconds to wait before each file body, so that progress can be watched.
        self.delay_s = 0.0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def add_folder(self, repo_id: str, folder: Path, branch: str = "main") -> str:
        """Publish every file under `folder` as `repo_id` at a new commit on `branch`."""
        files = {
            path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*"))
            if path.is_file()
        }
        return self.add_files(repo_id, files, branch)

    def add_files(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        digest = hashlib.sha1(repo_id.encode())
        for name, data in files.items():
            digest.update(name.encode() + hashlib.sha1(data).digest())
        commit = digest.hexdigest()
        self.repos[repo_id] = FakeRepo(files=files, commit=commit, branches={branch: commit})
        return commit

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()


_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<kind>revision|tree)/(?P<rev>[^/]+))?")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def do_HEAD(self) -> None:
            self._route(body=False)

        def do_GET(self) -> None:
            self._route(body=True)

        # -- routes ------------------------------------------------------------------------

        def _route(self, body: bool) -> None:
            path = urlsplit(self.path).path
            hub.requests.append(SeenRequest(self.command, path, self.headers.get("Range")))
            if found := _API.match(path):
                self._api(found.group("repo"), found.group("kind"), found.group("rev"))
            elif found := _RESOLVE.match(path):
                self._file(found.group("repo"), found.group("rev"), found.group("file"), body)
            else:
                self._json(404, {"error": "not found"})

        def _lookup(self, repo_id: str, revision: str | None) -> tuple[FakeRepo, str] | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._json(404, {"error": "Repository not found"}, error_code="RepoNotFound")
                return None
            revision = unquote(revision or "main")
            commit = repo.branches.get(revision) or (revision if revision == repo.commit else "")
            if not commit:
                self._json(404, {"error": "Invalid rev id"}, error_code="RevisionNotFound")
                return None
            return repo, commit

        def _api(self, repo_id: str, kind: str | None, revision: str | None) -> None:
            found = self._lookup(repo_id, revision)
            if found is None:
                return
            repo, commit = found
            if kind == "tree":
                listing = [
                    {
                        "type": "file",
                        "path": name,
                        "size": len(data),
                        "oid": hashlib.sha1(data).hexdigest(),
                    }
                    for name, data in repo.files.items()
                ]
                self._json(200, listing)
                return
            info = {
                "id": repo_id,
                "modelId": repo_id,
                "sha": commit,
                "private": False,
                "siblings": [{"rfilename": name} for name in repo.files],
            }
            self._json(200, info)

        def _file(self, repo_id: str, revision: str, name: str, body: bool) -> None:
            found = self._lookup(repo_id, revision)
            if found is None:
                return
            repo, commit = found
            data = repo.files.get(unquote(name))
            if data is None:
                self._json(404, {"error": "Entry not found"}, "EntryNotFound", commit)
                return
            start = 0
            requested = self.headers.get("Range")
            if requested and (match := re.match(r"bytes=(\d+)-", requested)):
                start = min(int(match.group(1)), len(data))
            self.send_response(206 if start else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", commit)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if not body:
                return
            if hub.delay_s:
                threading.Event().wait(hub.delay_s)
            name = unquote(name)
            if name in hub.cut_once and not start:
                self.wfile.write(data[: hub.cut_once.pop(name)])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(data[start:])

        def _json(
            self,
            status: int,
            payload: Any,
            error_code: str | None = None,
            commit: str | None = None,
        ) -> None:
            encoded = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(encoded)))
            if error_code:
                self.send_header("X-Error-Code", error_code)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(encoded)

    return Handler
