"""A TEST DOUBLE of the Hugging Face Hub HTTP endpoints that huggingface_hub calls. It is NOT a Hub.

No upload-capable Hub server can be installed from a package registry, so the upload tests of
``resfields.zoo.hub`` talk to this in-memory stand-in instead: a ``http.server`` on 127.0.0.1 in a
daemon thread, answering only the requests that huggingface_hub 2.4 sends for
``HfApi.create_repo`` / ``create_branch`` / ``upload_folder`` and ``snapshot_download``, with the
JSON shapes and headers that client reads:

=======================================================  ======================================
``POST /api/repos/create``                               create_repo (409 if it exists)
``POST /api/models/{ns}/{name}/branch/{branch}``         create_branch (409 if it exists)
``POST /api/validate-yaml``                              README.md check (legacy commit path)
``POST /api/models/{ns}/{name}/preupload/{rev}``         upload mode per file: regular or lfs
``POST /{ns}/{name}.git/info/lfs/objects/batch``         git-LFS batch API, "basic" transfer
``PUT  /lfs/{sha256}`` and ``POST /lfs/verify``          the upload and verify actions it hands out
``POST /api/models/{ns}/{name}/commit/{rev}``            NDJSON commit: file, lfsFile, deletedFile
``GET  /api/models/{ns}/{name}/revision/{rev}``          repo_info: sha and siblings
``GET  /api/models/{ns}/{name}/tree/{rev}``              list_repo_tree (one page)
``HEAD|GET /{ns}/{name}/resolve/{rev}/{path}``           file: ETag, X-Repo-Commit, Content-Length,
                                                         and X-Linked-Etag/X-Linked-Size for LFS
=======================================================  ======================================

Files matching ``lfs_patterns`` are answered ``"lfs"`` at preupload. With hf_xet installed,
huggingface_hub uploads "lfs" files through a Xet storage service, which this double does not
emulate; a test that wants the git-LFS batch path disables Xet (``constants.HF_HUB_DISABLE_XET``).
By default every file is "regular" (inlined, base64, in the commit), which the real Hub does for
small text files.

Errors carry the ``X-Error-Code`` header huggingface_hub maps to its exceptions (RepoNotFound,
RevisionNotFound, EntryNotFound). Every request is recorded in :attr:`HubDouble.requests`.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob, as git and the Hub compute it."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    """The git-LFS pointer file stored in git in place of ``data``."""
    oid = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n".encode()


@dataclass(frozen=True)
class StoredFile:
    """A file of a commit: its content and whether git stores it through LFS."""

    data: bytes
    lfs: bool = False

    @property
    def oid(self) -> str:
        """The git blob id (of the pointer file for LFS), as in a tree listing."""
        return git_blob_sha1(lfs_pointer(self.data) if self.lfs else self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Repo:
    """A model repo: branches pointing at commits, each commit a full ``{path: StoredFile}`` tree."""

    private: bool = False
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, StoredFile]] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        """Commit id of a branch name or of a commit id; None if unknown."""
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


class HubError(Exception):
    """An HTTP error answer: status, X-Error-Code and message."""

    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class HubDouble:
    """In-memory Hub double on ``http://127.0.0.1:<free port>``; use as a context manager.

    Attributes:
        url: the endpoint to hand to huggingface_hub.
        repos: ``{repo_id: Repo}``.
        lfs_objects: ``{sha256: bytes}`` uploaded through the LFS batch API.
        requests: ``(method, path, has_authorization)`` of every request, in arrival order.
    """

    def __init__(self, lfs_patterns: tuple[str, ...] = ()) -> None:
        self.lfs_patterns = lfs_patterns
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()
        self._counter = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.double = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="hub-double", daemon=True)

    def __enter__(self) -> HubDouble:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ state

    def _commit(self, repo: Repo, branch: str, files: dict[str, StoredFile], message: str) -> str:
        self._counter += 1
        parent = repo.branches.get(branch, "")
        listing = "".join(f"{path}\0{stored.oid}\n" for path, stored in sorted(files.items()))
        oid = hashlib.sha1(f"{parent}\n{message}\n{self._counter}\n{listing}".encode()).hexdigest()
        repo.commits[oid] = files
        repo.branches[branch] = oid
        return oid

    def _repo(self, repo_id: str, authorized: bool) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authorized):
            # the Hub hides private repos from anonymous callers behind the same answer
            raise HubError(404 if repo is None else 401, "RepoNotFound", f"Repository {repo_id} not found")
        return repo

    def _revision(self, repo: Repo, revision: str) -> str:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    # ------------------------------------------------------------------ endpoints

    def handle(self, method: str, url: str, body: bytes, authorized: bool) -> tuple[int, dict[str, str], bytes]:
        """Route one request; returns (status, headers, body)."""
        split = urlsplit(url)
        segments = [unquote(s) for s in split.path.strip("/").split("/")]
        query = parse_qs(split.query)
        with self._lock:
            self.requests.append((method, split.path, authorized))
            try:
                return self._route(method, segments, query, body, authorized)
            except HubError as e:
                headers = {"X-Error-Message": e.message}
                if e.code is not None:
                    headers["X-Error-Code"] = e.code
                return e.status, headers, json.dumps({"error": e.message}).encode()

    def _route(
        self, method: str, seg: list[str], query: dict[str, list[str]], body: bytes, authorized: bool
    ) -> tuple[int, dict[str, str], bytes]:
        if method == "POST" and seg == ["api", "repos", "create"]:
            return self._create_repo(json.loads(body))
        if method == "POST" and seg == ["api", "validate-yaml"]:
            return _json({"errors": [], "warnings": []})
        if seg[:2] == ["api", "models"] and len(seg) >= 6:
            repo = self._repo(f"{seg[2]}/{seg[3]}", authorized)
            action, revision, rest = seg[4], seg[5], seg[6:]
            if method == "POST" and action == "branch":
                return self._create_branch(repo, revision, json.loads(body or b"{}"))
            if method == "POST" and action == "preupload":
                return self._preupload(repo, revision, json.loads(body))
            if method == "POST" and action == "commit":
                return self._commit_endpoint(f"{seg[2]}/{seg[3]}", repo, revision, body)
            if method == "GET" and action == "revision":
                return self._info(f"{seg[2]}/{seg[3]}", repo, revision)
            if method == "GET" and action == "tree":
                recursive = query.get("recursive", ["false"])[0].lower() == "true"
                return self._tree(repo, revision, "/".join(rest), recursive)
        if (
            method == "POST"
            and len(seg) == 6
            and seg[1].endswith(".git")
            and seg[2:] == ["info", "lfs", "objects", "batch"]
        ):
            return self._lfs_batch(json.loads(body))
        if seg[:1] == ["lfs"] and len(seg) == 2:
            return self._lfs_transfer(method, seg[1], body)
        if method in ("GET", "HEAD") and len(seg) >= 5 and seg[2] == "resolve":
            repo = self._repo(f"{seg[0]}/{seg[1]}", authorized)
            return self._resolve(repo, seg[3], "/".join(seg[4:]))
        raise HubError(404, None, f"the Hub double does not serve {method} /{'/'.join(seg)}")

    def _create_repo(self, payload: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        repo_id = f"{payload['organization']}/{payload['name']}"
        if repo_id in self.repos:  # the Hub's 409 still carries the url, which create_repo(exist_ok=True) reads
            return (
                409,
                {"Content-Type": "application/json"},
                json.dumps({"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}).encode(),
            )
        repo = Repo(private=payload.get("visibility") == "private")
        self.repos[repo_id] = repo
        # like the Hub: a new repo starts with one commit holding .gitattributes
        self._commit(repo, "main", {".gitattributes": StoredFile(GITATTRIBUTES)}, "initial commit")
        return _json({"url": f"{self.url}/{repo_id}", "name": repo_id})

    def _create_branch(self, repo: Repo, branch: str, payload: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        if branch in repo.branches:
            raise HubError(409, None, f"Reference refs/heads/{branch} already exists")
        repo.branches[branch] = self._revision(repo, payload.get("startingPoint", "main"))
        return _json({})

    def _preupload(self, repo: Repo, revision: str, payload: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        current = repo.commits[self._revision(repo, revision)]
        files = []
        for item in payload["files"]:
            lfs = any(fnmatch.fnmatch(item["path"], pattern) for pattern in self.lfs_patterns)
            remote = current.get(item["path"])
            # the oid lets the client skip unchanged files: sha256 for LFS, git blob id otherwise
            oid = None if remote is None else (remote.sha256 if remote.lfs else git_blob_sha1(remote.data))
            files.append(
                {"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        return _json({"files": files})

    def _lfs_batch(self, payload: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        objects = []
        for obj in payload["objects"]:
            answer: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs_objects:  # no "actions": already stored, nothing to send
                answer["actions"] = {
                    "upload": {"href": f"{self.url}/lfs/{obj['oid']}"},
                    "verify": {"href": f"{self.url}/lfs/verify"},
                }
            objects.append(answer)
        return (
            200,
            {"Content-Type": "application/vnd.git-lfs+json"},
            json.dumps({"transfer": "basic", "objects": objects}).encode(),
        )

    def _lfs_transfer(self, method: str, oid: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if method == "PUT":
            if hashlib.sha256(body).hexdigest() != oid:
                raise HubError(400, None, f"LFS upload does not hash to {oid}")
            self.lfs_objects[oid] = body
            return 200, {}, b""
        if method == "POST" and oid == "verify":
            payload = json.loads(body)
            stored = self.lfs_objects.get(payload["oid"])
            if stored is None or len(stored) != payload["size"]:
                raise HubError(404, None, f"LFS object {payload['oid']} not uploaded")
            return _json({})
        raise HubError(405, None, f"{method} not allowed on LFS objects")

    def _commit_endpoint(
        self, repo_id: str, repo: Repo, revision: str, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        head = self._revision(repo, revision)
        if revision not in repo.branches:
            raise HubError(400, None, f"can only commit to a branch, not {revision!r}")
        files = dict(repo.commits[head])
        summary = ""
        for line in body.splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value["summary"]
                if value.get("parentCommit") not in (None, head):
                    raise HubError(412, None, "parentCommit is not the head of the branch")
            elif key == "file":
                files[value["path"]] = StoredFile(base64.b64decode(value["content"]))
            elif key == "lfsFile":
                data = self.lfs_objects.get(value["oid"])
                if data is None:
                    raise HubError(422, None, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                files[value["path"]] = StoredFile(data, lfs=True)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "EntryNotFound", f"A file with this name doesn't exist: {value['path']}")
            elif key == "deletedFolder":
                files = {p: f for p, f in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:
                raise HubError(400, None, f"unknown commit operation {key!r}")
        oid = self._commit(repo, revision, files, summary)
        return _json({"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None})

    def _info(self, repo_id: str, repo: Repo, revision: str) -> tuple[int, dict[str, str], bytes]:
        commit = self._revision(repo, revision)
        siblings = [{"rfilename": path} for path in sorted(repo.commits[commit])]
        return _json({"id": repo_id, "sha": commit, "private": repo.private, "siblings": siblings})

    def _tree(self, repo: Repo, revision: str, prefix: str, recursive: bool) -> tuple[int, dict[str, str], bytes]:
        files = repo.commits[self._revision(repo, revision)]
        base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        entries: dict[str, dict[str, Any]] = {}
        for path, stored in sorted(files.items()):
            if not path.startswith(base):
                continue
            parts = path[len(base) :].split("/")
            for depth in range(1, len(parts)):  # the folders on the way
                folder = base + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(folder, {"type": "directory", "oid": git_blob_sha1(folder.encode()), "size": 0})
            if recursive or len(parts) == 1:
                entry: dict[str, Any] = {"type": "file", "oid": stored.oid, "size": len(stored.data)}
                if stored.lfs:
                    pointer_size = len(lfs_pointer(stored.data))
                    entry["lfs"] = {"oid": stored.sha256, "size": len(stored.data), "pointerSize": pointer_size}
                entries[path] = entry
        return _json([{**entry, "path": path} for path, entry in sorted(entries.items())])

    def _resolve(self, repo: Repo, revision: str, path: str) -> tuple[int, dict[str, str], bytes]:
        commit = self._revision(repo, revision)
        stored = repo.commits[commit].get(path)
        if stored is None:
            raise HubError(404, "EntryNotFound", f"{path} does not exist at {revision}")
        headers = {"X-Repo-Commit": commit, "Content-Type": "application/octet-stream"}
        if stored.lfs:
            # the Hub names LFS content by its sha256; the client keys its cache blob on X-Linked-Etag
            headers |= {"ETag": f'"{stored.sha256}"', "X-Linked-Etag": f'"{stored.sha256}"'}
            headers["X-Linked-Size"] = str(len(stored.data))
        else:
            headers["ETag"] = f'"{git_blob_sha1(stored.data)}"'
        return 200, headers, stored.data


def _json(payload: Any) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(payload).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client expects; every answer has a Content-Length

    def _serve(self) -> None:
        body = self._read_body()
        double: HubDouble = self.server.double  # type: ignore[attr-defined]
        status, headers, payload = double.handle(self.command, self.path, body, "Authorization" in self.headers)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        # a HEAD answer announces the length of the GET body: huggingface_hub reads the file size there
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # a streamed PUT
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # keep the test output quiet
        pass
