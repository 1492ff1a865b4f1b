"""Hub transport: download a checkpoint repo into the Hugging Face cache, push a checkpoint folder to a repo.

A checkpoint repo has the layout of :mod:`resfields.checkpoint` plus optional extras::

    config.json          required
    model.safetensors    required
    README.md            model card (optional)
    metrics.json         optional
    media/...            optional previews

Only these files are transferred (:data:`CHECKPOINT_PATTERNS`); anything else in a repo is ignored.

Both directions go through ``huggingface_hub``, so its environment variables apply: ``HF_ENDPOINT``
(the Hub URL), ``HF_HUB_OFFLINE`` (no network, cache only), ``HF_HUB_CACHE``/``HF_HOME`` (the cache) and
``HF_TOKEN``. huggingface_hub 2.4 reads all but ``HF_TOKEN`` once, when ``huggingface_hub.constants`` is
first imported: ``HF_ENDPOINT`` into ``constants.ENDPOINT`` *and* the file URL template
``constants.HUGGINGFACE_CO_URL_TEMPLATE`` (so patching ``constants.ENDPOINT`` alone later would send API
calls to the new URL and file downloads to the old one), ``HF_HUB_OFFLINE`` into ``constants.HF_HUB_OFFLINE``
(checked at every request). Setting ``os.environ`` after that import has no effect in the same process:
pass ``endpoint=`` to :func:`download` / :func:`push_to_hub` instead; ``local_files_only=True`` is the
per-call form of offline mode.

Every failure is a :class:`~resfields.errors.CheckpointError` naming the repo and the revision, with the
``huggingface_hub`` (or transport) error kept as ``__cause__``, so a caller catches one error family.

Nothing a server answers, and nothing a ``refs/`` file of the cache holds, is used as a path before it is
checked: repo ids follow the Hub's naming rules and revisions git's ref-name rules (checked before any
request), the commit id a branch or tag resolves to must be 40 hex digits before huggingface_hub sees it,
the snapshot folder it returns must be ``<cache>/models--NS--NAME/snapshots/<that commit>``, and eviction
only removes files whose real path lies in that repo's cache folder. What huggingface_hub itself names cache
files after (a file's ``ETag`` / ``X-Linked-Etag``, its ``X-Repo-Commit``, the ``lfs.oid`` of the tree
listing) is checked in each answer before huggingface_hub sees it: a content hash, the commit asked for
(see :func:`_check_answer`, and the comment above it on how that check is scoped to our requests).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2  # the HTTP client of huggingface_hub >= 2: its transport errors escape HfApi uncaught
from huggingface_hub import HfApi, ResolvedRevision, constants, get_session, set_client_factory, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import _http as _hf_http  # read only: which client factory is installed

from resfields.checkpoint import CONFIG_NAME, WEIGHTS_NAME, checkpoint_path, load_checkpoint
from resfields.errors import CheckpointError, short_repr

from .registry import verify_hashes

__all__ = [
    "CHECKPOINT_PATTERNS",
    "check_repo_id",
    "check_revision",
    "download",
    "is_local_checkpoint",
    "push_to_hub",
    "repo_id_problem",
    "revision_problem",
]

#: Files of a checkpoint repo, as fnmatch patterns on repo paths (``*`` also matches ``/``).
CHECKPOINT_PATTERNS: tuple[str, ...] = (CONFIG_NAME, WEIGHTS_NAME, "README.md", "metrics.json", "media/*")

_DEFAULT_REVISION = "main"
_COMMIT = re.compile(r"[0-9a-f]{40}")
_REPO_PART = re.compile(r"[A-Za-z0-9._-]+")
_MAX_REPO_PART = 96  # the Hub's limit on a name (huggingface_hub's validate_repo_id uses the same)
_MAX_REVISION = 255  # a ref becomes one file name per component under refs/; 255 bytes is the usual limit
_REVISION_CHARS = frozenset(" ~^:?*[\\")  # what git check-ref-format refuses, besides controls and ".."
_MAX_REF_BYTES = 4096  # a refs/ file holds one commit id; never read a large file because of its name


def repo_id_problem(repo_id: object) -> str | None:
    """Why ``repo_id`` is not a Hub model repo id ``namespace/name``, or ``None`` when it is one.

    The Hub's rules: each part 1 to 96 of ``A-Z a-z 0-9 . _ -``, not starting or ending with ``-`` or
    ``.``, no ``--`` or ``..`` anywhere, the name not ending in ``.git``.
    """
    if not isinstance(repo_id, str):
        return f"a repo id is a string, got {type(repo_id).__name__}"
    if repo_id.count("/") != 1:
        return "a repo id is 'namespace/name', with exactly one '/'"
    for what, part in zip(("namespace", "name"), repo_id.split("/"), strict=True):
        if not part:
            return f"the {what} is empty"
        if len(part) > _MAX_REPO_PART:
            return f"the {what} has {len(part)} characters, the Hub allows at most {_MAX_REPO_PART}"
        if not _REPO_PART.fullmatch(part):
            bad = next(c for c in part if not _REPO_PART.fullmatch(c))
            return f"the {what} contains {bad!r}; allowed are A-Z, a-z, 0-9, '.', '_' and '-'"
        if part[0] in "-." or part[-1] in "-.":
            return f"the {what} cannot start or end with '-' or '.'"
        if "--" in part or ".." in part:
            return f"the {what} cannot contain '--' or '..'"
    if repo_id.endswith(".git"):
        return "the name cannot end with '.git'"
    return None


def revision_problem(revision: object) -> str | None:
    """Why ``revision`` is no plausible branch, tag or commit name (git's ref-name rules), or ``None``.

    A revision becomes a URL segment and, for huggingface_hub, the path ``refs/<revision>`` in the cache,
    so ``..``, a leading ``/``, empty or dot-led components, backslashes and control characters are out.
    """
    if not isinstance(revision, str):
        return f"a revision is a string, got {type(revision).__name__}"
    if not revision:
        return "the revision is empty"
    if len(revision) > _MAX_REVISION:
        return f"the revision has {len(revision)} characters, at most {_MAX_REVISION} are accepted"
    for c in revision:
        if ord(c) < 0x20 or ord(c) == 0x7F or c in _REVISION_CHARS:
            return f"the revision contains {c!r}"
    if ".." in revision or "@{" in revision or revision == "@":
        return "the revision contains '..' or '@{', or is '@'"
    if revision.startswith("/") or revision.endswith("/") or "//" in revision:
        return "the revision cannot start or end with '/' or contain '//'"
    for part in revision.split("/"):
        if part.startswith(".") or part.endswith(".lock"):
            return f"the revision component {part!r} starts with '.' or ends with '.lock'"
    if revision.endswith("."):
        return "the revision cannot end with '.'"
    return None


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` itself; CheckpointError naming the broken rule when it is no Hub repo id (see
    :func:`repo_id_problem`)."""
    problem = repo_id_problem(repo_id)
    if problem is not None:
        raise CheckpointError(f"invalid Hub repo id {short_repr(repo_id)}: {problem}")
    return repo_id


def check_revision(revision: str | None) -> str:
    """``revision``, ``"main"`` for ``None``; CheckpointError naming the broken rule when it is no
    plausible branch, tag or commit name (see :func:`revision_problem`)."""
    if revision is None:
        return _DEFAULT_REVISION
    problem = revision_problem(revision)
    if problem is not None:
        raise CheckpointError(f"invalid revision {short_repr(revision)}: {problem}")
    return revision


def is_local_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a folder holding both ``config.json`` and ``model.safetensors``.

    A cheap layout check (nothing is parsed) to tell a local checkpoint from a Hub repo id.
    """
    folder = Path(path)
    return (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file()


# ----------------------------------------------------------------------------- download


def download(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    expected_sha256: Mapping[str, str] | None = None,
    endpoint: str | None = None,
    token: str | None = None,
) -> Path:
    """Fetch a checkpoint repo into the Hugging Face cache, verify it and return its snapshot folder.

    Args:
        repo_id: ``"namespace/name"`` of a model repo.
        revision: branch, tag or full commit hash; ``None`` means ``"main"``.
        cache_dir: the Hugging Face cache to use (default: ``HF_HUB_CACHE``).
        local_files_only: never touch the network; use the cached snapshot of ``revision`` or fail.
        expected_sha256: ``{repo path: sha256 hex digest}``; each listed file must exist and match.
        endpoint: Hub URL for this call (default: ``HF_ENDPOINT`` as read at import, see the module doc).
        token: access token (default: huggingface_hub's, from ``HF_TOKEN`` or the login).

    Returns:
        Path: the snapshot folder ``<cache>/models--<ns>--<name>/snapshots/<commit>``, holding
        ``config.json``, ``model.safetensors`` and whichever optional checkpoint files the repo has.
        :func:`resfields.checkpoint.load_checkpoint` has already succeeded on it.

    Raises:
        CheckpointError: an invalid repo id or revision (before any request), repository or revision
            not found, not cached while offline, the Hub unreachable or answering an HTTP error, a
            commit id (from the Hub or a cached ``refs/`` file) that is not 40 hex digits, an answer
            naming a file by an ETag that is no content hash, another commit than the one asked for, or
            a tree listing that is malformed or names an LFS file by no sha256 (refused before
            huggingface_hub writes anything named after it), a snapshot folder outside the cache, a
            required file missing, a sha256 mismatch, or a corrupt/truncated checkpoint. After a failed
            verification the snapshot of that revision (folder, the blobs only it uses, its refs and
            tree listing) is removed from the cache, so no broken model folder stays behind and the
            next call downloads again.
    """
    check_repo_id(repo_id)
    revision = check_revision(revision)
    where = f"checkpoint {repo_id!r} at revision {short_repr(revision)}"
    storage = _storage_folder(cache_dir, repo_id, where)
    offline = local_files_only or constants.HF_HUB_OFFLINE
    api = HfApi(endpoint=endpoint, token=token)
    try:
        commit, unreachable = _resolve_commit(api, repo_id, revision, storage, offline)
    except (OSError, httpx2.HTTPError, HFValidationError) as e:
        raise CheckpointError(f"cannot download {where}: {_describe(e, endpoint, local_files_only)}") from e
    except CheckpointError as e:
        raise CheckpointError(f"refusing {where}: {e}") from e
    if commit is None:  # neither the Hub nor the cache knows it
        reason = _describe(unreachable, endpoint, local_files_only) if unreachable else _NOT_CACHED
        raise CheckpointError(f"cannot download {where}: {reason}") from unreachable
    try:
        # every answer that huggingface_hub would build a path from is checked first (see _check_answer)
        with _checked_answers(endpoint, repo_id, commit) as tag:
            returned = snapshot_download(
                repo_id,
                # resolved here, so huggingface_hub never builds a path from a commit id that was not checked
                revision=ResolvedRevision(commit, initial=revision, repo_id=repo_id),
                cache_dir=storage.parent,
                local_files_only=offline or unreachable is not None,
                allow_patterns=list(CHECKPOINT_PATTERNS),
                endpoint=endpoint,
                token=token,
                headers=tag,
            )
    except CheckpointError as e:  # an answer _check_answer refused: nothing was built from it
        raise CheckpointError(f"refusing {where}: {e}") from e
    # huggingface_hub's own errors are OSErrors (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled);
    # transport failures it does not translate (a dropped connection mid-answer) are httpx2 errors;
    # ValueError (HFValidationError among them) for anything its validators refuse that ours let through
    except (OSError, httpx2.HTTPError, ValueError) as e:
        # a snapshot missing after the Hub failed us: why the Hub failed is the news
        missing = isinstance(e, LocalEntryNotFoundError) and not isinstance(e, IncompleteSnapshotError)
        cause = unreachable if unreachable is not None and missing else e
        raise CheckpointError(f"cannot download {where}: {_describe(cause, endpoint, offline)}") from e
    folder = _snapshot_folder(Path(returned), storage, commit, where)
    try:
        _verify(folder, expected_sha256)
    except CheckpointError as e:
        _evict_snapshot(folder, storage)
        raise CheckpointError(f"{where} failed verification and was removed from the cache: {e}") from e
    if revision != commit:
        _write_ref(storage, revision, commit)
    return folder


_NOT_CACHED = "not in the local cache and downloads are disabled (local_files_only=True or HF_HUB_OFFLINE=1)"


# ----------------------------------------------------------------------------- the Hub's answers
#
# huggingface_hub 2.4 names cache files after what the server answers, unchecked: a file's blob is
# ``blobs/<ETag>`` (and ``.locks/<repo>/<ETag>.lock``), a missing file is recorded as
# ``.no_exist/<X-Repo-Commit>/<path>``, and with hf_xet installed (the default on x86_64 and arm64) a
# blob may be named by the ``lfs.oid`` of the tree listing instead of a HEAD answer. A server answering
# ``ETag: "../../../x"`` would make it create files anywhere the user can write. So every response to a
# request of download() passes :func:`_check_answer` first, a response event hook on huggingface_hub's
# HTTP client, which raises before huggingface_hub sees the answer.
#
# Scope. snapshot_download takes no HTTP client of its own, and huggingface_hub shares one client per
# process (``get_session()``), recreated from the installed factory after ``close_session()`` (which it
# calls itself after a connection error, mid-download). So the hook is installed in that factory, with
# huggingface_hub's public ``set_client_factory``, wrapping whatever factory is in place (a user's proxy
# or certificate setup keeps working; reading which one that is is the only private name used), and on
# the current client. It checks nothing unless the request carries the ``X-Resfields-Download`` header
# of a download() in flight: other users of huggingface_hub in the process are not affected, except
# that installing the factory closes the shared client once (as any ``set_client_factory`` call does).
# Neither matching the endpoint nor the URL would do: huggingface_hub follows a server's redirects on
# the same host (to any path) and the pages a tree listing links to, and a checked request's headers
# travel along; nor a context variable: snapshot_download's worker threads do not inherit one. (The
# header, a random token, goes to the Hub and any host it redirects to; it names nothing.) ETags are
# checked on HEAD answers only, the ones huggingface_hub reads file metadata from: a CDN's GET answer
# carries an ETag of its own (an MD5, say) that huggingface_hub ignores, as it ignores the ETag of the
# API's JSON answers. Not covered: the async client (snapshot_download does not use it), and a tree
# listing already cached in ``trees/<commit>.json`` by an earlier, unchecked download.

#: What a cache file may be named after (``X-Linked-Etag``, else ``ETag``, as huggingface_hub strips
#: ``W/`` and quotes): a git blob id, 40 hex digits (the Hub's and olah's name of a small file), a sha256,
#: 64 (an LFS file), or ``<32 hex>-<n>``, what olah's proxy names a small file it serves offline.
_ETAG = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}|[0-9a-fA-F]{32}-[0-9]{1,6}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_CALL_HEADER = "X-Resfields-Download"
_X_REPO_COMMIT = constants.HUGGINGFACE_HEADER_X_REPO_COMMIT
_X_LINKED_ETAG = constants.HUGGINGFACE_HEADER_X_LINKED_ETAG
_DEFAULT_PORTS = {"http": 80, "https": 443}

_UrlKey = tuple[str, str, int, str]


class _RefusedAnswer(CheckpointError):
    """An answer of the Hub that :func:`_check_answer` refused before huggingface_hub used it."""


@dataclass
class _Call:
    """One download() in flight: the commit it asked for, and the URLs whose answers huggingface_hub
    reads as the tree listing (the listing itself, where it redirects to, the pages it links to)."""

    commit: str
    tree_urls: set[_UrlKey] = field(default_factory=set)


_CALLS: dict[str, _Call] = {}  # by the value of its X-Resfields-Download header
_CALLS_LOCK = threading.Lock()
_INSTALL_LOCK = threading.Lock()


def _url_key(url: httpx2.URL) -> _UrlKey:
    return (url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme, 0), url.path)


def _shown_url(url: httpx2.URL) -> str:
    """``url`` without its query (a signed CDN URL carries credentials there) or user info."""
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}{url.path}"


@contextmanager
def _checked_answers(endpoint: str | None, repo_id: str, commit: str) -> Iterator[dict[str, str]]:
    """The headers that make :func:`_check_answer` check the answers to a snapshot_download of ``commit``
    (valid inside the ``with`` block); CheckpointError if huggingface_hub's client takes no hook."""
    _install_answer_check()
    call = _Call(commit)
    hub = endpoint if endpoint is not None else constants.ENDPOINT  # as HfApi picks it
    try:  # the tree listing URL, as huggingface_hub builds it
        call.tree_urls.add(_url_key(httpx2.URL(f"{hub}/api/models/{repo_id}/tree/{commit}")))
    except (httpx2.InvalidURL, TypeError, ValueError):
        pass  # no request can be sent there either
    token = uuid.uuid4().hex
    with _CALLS_LOCK:
        _CALLS[token] = call
    try:
        yield {_CALL_HEADER: token}
    finally:
        with _CALLS_LOCK:
            del _CALLS[token]


def _install_answer_check() -> None:
    """Make huggingface_hub's HTTP client, and every one its factory makes from now on, run
    :func:`_check_answer` (idempotent; a factory a user installs later is wrapped at the next download)."""
    with _INSTALL_LOCK:
        factory = getattr(_hf_http, "_GLOBAL_CLIENT_FACTORY", None)
        if callable(factory) and not getattr(factory, "_resfields_checks_answers", False):
            set_client_factory(_checking_factory(factory))
        session = _with_answer_check(get_session())
    hooks = getattr(session, "event_hooks", None)
    if not isinstance(hooks, dict) or _check_answer not in hooks.get("response", ()):
        raise CheckpointError(
            f"huggingface_hub's HTTP client ({type(session).__name__}) takes no response hook, so the Hub's "
            "answers cannot be checked before they name files in the cache"
        )


def _checking_factory(base: object) -> object:
    def factory() -> object:
        return _with_answer_check(base())  # type: ignore[operator]

    factory._resfields_checks_answers = True  # type: ignore[attr-defined]
    factory.__wrapped__ = base  # type: ignore[attr-defined]
    return factory


def _with_answer_check(client: object) -> object:
    """``client`` with :func:`_check_answer` among its response hooks (once)."""
    hooks = getattr(client, "event_hooks", None)
    if isinstance(hooks, dict) and _check_answer not in hooks.get("response", ()):
        client.event_hooks = {**hooks, "response": [*hooks.get("response", ()), _check_answer]}  # type: ignore[attr-defined]
    return client


def _check_answer(response: httpx2.Response) -> None:
    """Response hook: for a request of a download() in flight, _RefusedAnswer (a CheckpointError) when the
    answer carries something huggingface_hub would build a cache path from that is no plausible value.
    Any other request passes untouched."""
    request = response.request
    token = request.headers.get(_CALL_HEADER)
    if token is None:
        return
    with _CALLS_LOCK:
        call = _CALLS.get(token)
    # only a download() sends the header: a request of one that has ended (a straggling thread) is refused
    problem = "no answer awaited: its download has ended" if call is None else _answer_problem(response, call)
    if problem is not None:
        raise _RefusedAnswer(f"the answer to {request.method} {_shown_url(request.url)} carries {problem}")


def _answer_problem(response: httpx2.Response, call: _Call) -> str | None:
    """What is wrong with ``response`` to a request of ``call``, or ``None``."""
    request, headers = response.request, response.headers
    commit = headers.get(_X_REPO_COMMIT)
    if commit is not None and commit != call.commit:
        # huggingface_hub files the answer under snapshots/<it> (or .no_exist/<it> for a missing file)
        if not _COMMIT.fullmatch(commit):
            return f"{_X_REPO_COMMIT} {short_repr(commit)}, not a commit id (40 hex digits)"
        return f"{_X_REPO_COMMIT} {commit}, but commit {call.commit} was asked for"
    try:
        redirect = request.url.join(headers["Location"]) if response.has_redirect_location else None
    except httpx2.InvalidURL:
        return f"a redirect to {short_repr(headers['Location'])}, which is no URL"
    # file metadata: huggingface_hub follows a redirect on the same host and reads the answer that is not one;
    # the HEAD answer of a small file carries its ETag, a redirect of an LFS file to a CDN its X-Linked-Etag
    if request.method == "HEAD" and response.status_code < 400:
        if redirect is None or _url_key(redirect)[:3] != _url_key(request.url)[:3]:
            name = _X_LINKED_ETAG if headers.get(_X_LINKED_ETAG) else "ETag"
            raw = headers.get(_X_LINKED_ETAG) or headers.get("ETag")
            if raw is not None and not _ETAG.fullmatch(raw.lstrip("W/").strip('"')):
                return (
                    f"{name} {short_repr(raw)}, which names no file content (40 or 64 hex digits) "
                    "and would become a file name in the cache"
                )
    if request.method == "GET" and _url_key(request.url) in call.tree_urls:
        with _CALLS_LOCK:
            if redirect is not None:
                call.tree_urls.add(_url_key(redirect))
                return None
            if response.status_code >= 400:
                return None  # huggingface_hub raises its own error for it
            next_page = response.links.get("next", {}).get("url")
            try:
                if next_page:
                    call.tree_urls.add(_url_key(request.url.join(next_page)))
            except httpx2.InvalidURL:
                return f"a tree listing linking to {short_repr(next_page)}, which is no URL"
        response.read()
        return _tree_problem(response.content)
    return None


def _tree_problem(body: bytes) -> str | None:
    """What is wrong with a page of a tree listing (``GET /api/models/{repo}/tree/{commit}``) that
    huggingface_hub would trip over or build a path from, or ``None``."""
    try:
        page = json.loads(body)
    except (ValueError, RecursionError):  # (UnicodeDecodeError is a ValueError)
        return "a tree listing that is not JSON"
    if not isinstance(page, list):
        return f"a tree listing that is no JSON list but {type(page).__name__}"
    for entry in page:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            return f"a tree listing entry {short_repr(entry)} without a path"
        problem = _tree_entry_problem(entry)
        if problem is not None:
            return f"a tree listing whose entry {short_repr(entry['path'])} {problem}"
    return None


def _tree_entry_problem(entry: dict) -> str | None:
    if not isinstance(entry.get("oid"), str):
        return "has no oid"
    path = entry.get("path")
    # CHECKPOINT_PATTERNS are fnmatch patterns ("media/*" matches "media/../x"): only plain relative
    # paths may become file names in the cache
    if not isinstance(path, str) or not _plain_relative_path(path):
        return f"has path {short_repr(path)}, not a plain relative path"
    if entry.get("type") != "file":
        return None  # read as a folder: a path and an oid
    size = entry.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return f"has size {short_repr(size)}"
    lfs = entry.get("lfs")
    if lfs is not None:
        if not isinstance(lfs, dict):
            return f"has lfs {short_repr(lfs)}, not an object"
        oid = lfs.get("oid")
        if not isinstance(oid, str) or not _SHA256.fullmatch(oid):
            # with hf_xet, huggingface_hub names the blob of an LFS file after this
            return f"has lfs.oid {short_repr(oid)}, not a sha256 (64 hex digits)"
        for key in ("size", "pointerSize"):
            if not isinstance(lfs.get(key), int) or isinstance(lfs.get(key), bool):
                return f"has lfs.{key} {short_repr(lfs.get(key))}, not an integer"
    xet = entry.get("xetHash")
    if xet is not None and not isinstance(xet, str):
        return f"has xetHash {short_repr(xet)}, not a string"
    return None


def _plain_relative_path(path: str) -> bool:
    """``a/b.png``, not ``/a``, ``a/../b``, ``a//b``, ``./a``, ``C:x`` or ``a\\b``."""
    if not path or path.startswith("/") or "\\" in path or ":" in path or "\0" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def _storage_folder(cache_dir: str | Path | None, repo_id: str, where: str) -> Path:
    """``<cache>/models--NS--NAME``, with the cache's real path (as huggingface_hub resolves it)."""
    try:
        cache = Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE).expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as e:  # a symlink loop, a NUL byte
        raise CheckpointError(f"cannot download {where}: unusable cache folder {cache_dir!r} ({e})") from e
    return cache / ("models--" + repo_id.replace("/", "--"))  # a checked id: one component, no '..'


def _resolve_commit(
    api: HfApi, repo_id: str, revision: str, storage: Path, offline: bool
) -> tuple[str | None, BaseException | None]:
    """``(commit id, error)``: the checked commit ``revision`` names, and why the Hub could not say.

    A commit id is itself; else the Hub's answer; else (offline, unreachable, an HTTP error as
    huggingface_hub falls back on) the cached ``refs/<revision>``; else ``(None, error)``.
    Raises CheckpointError for a commit id that is not 40 hex digits, RevisionNotFoundError as the Hub
    answers it.
    """
    if _COMMIT.fullmatch(revision):
        return revision, None
    error: BaseException | None = None
    if not offline:
        try:
            sha = api.repo_info(repo_id, revision=revision).sha
        except (httpx2.ProxyError, RevisionNotFoundError):
            raise  # a misconfigured proxy, or the Hub's definite answer: no cached copy stands in
        except (httpx2.TransportError, OSError) as e:  # unreachable, offline, 5xx, no access: try the cache
            error = e
        else:
            if not isinstance(sha, str) or not _COMMIT.fullmatch(sha):
                raise CheckpointError(f"the Hub answered {short_repr(sha)} as its commit id, not 40 hex digits")
            return sha, None
    ref = storage / "refs" / revision
    if ref.is_symlink():
        raise CheckpointError(f"{ref} is a symlink, not a commit id written by huggingface_hub")
    if not ref.is_file():
        return None, error
    with ref.open("rb") as handle:
        text = handle.read(_MAX_REF_BYTES + 1).decode("utf-8", errors="replace")
    if not _COMMIT.fullmatch(text.strip()):
        raise CheckpointError(f"the cached refs/{revision} holds {short_repr(text)}, not a commit id (40 hex digits)")
    return text.strip(), error


def _snapshot_folder(returned: Path, storage: Path, commit: str, where: str) -> Path:
    """``returned`` if its real path is ``<storage>/snapshots/<commit>`` inside the cache, else CheckpointError
    (and nothing is used or removed)."""
    snapshots = Path(os.path.realpath(storage / "snapshots"))
    expected = snapshots / commit
    if (
        Path(os.path.realpath(returned)) != expected
        or snapshots.parent != Path(os.path.realpath(storage))
        or Path(os.path.realpath(storage)).parent != storage.parent
    ):
        raise CheckpointError(
            f"{where}: huggingface_hub returned {returned}, not the snapshot folder {expected} of the cache: "
            "refusing to use it (nothing was removed)"
        )
    return expected


def _write_ref(storage: Path, revision: str, commit: str) -> None:
    """Record ``revision -> commit`` in ``refs/`` as huggingface_hub does, so offline calls find it."""
    ref = storage / "refs" / revision  # a checked revision: stays inside refs/
    try:
        if ref.is_file() and not ref.is_symlink() and ref.read_text().strip() == commit:
            return
        ref.parent.mkdir(parents=True, exist_ok=True)
        temp = ref.with_name(f".{ref.name}.{uuid.uuid4().hex[:12]}.tmp")  # unique across threads too
        temp.write_text(commit)
        os.replace(temp, ref)  # atomic: a concurrent reader never sees a half-written ref
    except OSError:
        pass  # a read-only shared cache still served the download; only offline lookups by name miss out


def _describe(error: BaseException, endpoint: str | None, local_files_only: bool) -> str:
    """One sentence on why the download failed (the original error stays the ``__cause__``)."""
    hub = endpoint or constants.ENDPOINT
    if isinstance(error, RevisionNotFoundError):
        return f"revision not found on {hub}"
    if isinstance(error, GatedRepoError):
        return f"the repository on {hub} is gated and this token has no access"
    if isinstance(error, RepositoryNotFoundError):
        # the Hub (and olah) answer RepoNotFound for an unknown repo, a private one without a token,
        # and, on some servers, an unknown revision of an existing repo
        return f"repository (or revision) not found on {hub}, or it is private and no valid token was given"
    if isinstance(error, IncompleteSnapshotError):  # a download interrupted earlier, now offline
        return f"the cached snapshot is incomplete and the Hub at {hub} cannot be used: {error}"
    if isinstance(error, OfflineModeIsEnabled):
        return _NOT_CACHED
    if isinstance(error, httpx2.TransportError):
        return f"the Hub at {hub} could not be reached ({type(error).__name__}: {error}) and it is not cached"
    if isinstance(error, LocalEntryNotFoundError):
        cause = error.__cause__
        if local_files_only or constants.HF_HUB_OFFLINE or isinstance(cause, OfflineModeIsEnabled):
            return _NOT_CACHED
        if cause is not None:
            return f"the Hub at {hub} could not be reached ({type(cause).__name__}: {cause}) and it is not cached"
        return f"not available in the local cache: {error}"
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else "?"
        return f"HTTP error {status} from {hub}: {error}"
    return f"{type(error).__name__}: {error}"


def _verify(folder: Path, expected_sha256: Mapping[str, str] | None) -> None:
    """Required files present, listed sha256 digests equal, and the checkpoint loads."""
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"the repo has no {' and no '.join(missing)}")
    verify_hashes(folder, expected_sha256 or {})
    load_checkpoint(folder)


def _evict_snapshot(folder: Path, storage: Path) -> None:
    """Remove one cached snapshot: its folder, the blobs no other snapshot links to, its refs and tree listing.

    ``folder`` is the real path ``<storage>/snapshots/<commit>`` (checked by :func:`_snapshot_folder`;
    checked again here, as deleting is the one step that cannot be undone). Only files whose real path
    lies in ``storage`` are removed. Blobs are content-addressed and shared between revisions (an
    unchanged config.json), hence the reference check.
    """
    root = Path(os.path.realpath(storage))
    snapshots = Path(os.path.realpath(storage / "snapshots"))
    if folder != snapshots / folder.name or snapshots.parent != root or not _COMMIT.fullmatch(folder.name):
        return
    commit = folder.name
    blobs = Path(os.path.realpath(storage / "blobs"))

    def linked_blobs(snapshot: Path) -> set[Path]:
        out = set()
        for path in snapshot.rglob("*"):  # (rglob does not descend into linked folders)
            if path.is_symlink():
                target = Path(os.path.realpath(path))
                if target.parent == blobs and blobs.parent == root and target.is_file():
                    out.add(target)
        return out

    ours = linked_blobs(folder)
    others: set[Path] = set()
    for snapshot in snapshots.glob("*"):  # (the folder is absent when the repo had no matching file)
        if snapshot.name != commit and snapshot.is_dir():
            others |= linked_blobs(snapshot)
    shutil.rmtree(folder, ignore_errors=True)  # removes links, never what they point to
    for blob in ours - others:
        blob.unlink(missing_ok=True)
    # a ref (branch/tag name -> commit) to a removed snapshot would make an offline call look for it
    refs = storage / "refs"
    if Path(os.path.realpath(refs)).parent == root:
        for parent, _, names in os.walk(refs):  # (does not follow links to folders)
            for name in names:
                ref = Path(parent) / name
                if ref.is_symlink() or not ref.is_file() or ref.stat().st_size > _MAX_REF_BYTES:
                    continue  # never written by huggingface_hub: not ours to read or remove
                if ref.read_text(errors="replace").strip() == commit:
                    ref.unlink(missing_ok=True)
    trees = storage / "trees"
    if Path(os.path.realpath(trees)).parent == root:
        (trees / f"{commit}.json").unlink(missing_ok=True)  # a checked commit id: stays inside trees/


# ----------------------------------------------------------------------------- upload


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Upload a checkpoint folder to a model repo (created if needed) and return the commit id.

    The folder is validated with :func:`resfields.checkpoint.load_checkpoint` first: a broken
    checkpoint is refused before any request is sent. Only :data:`CHECKPOINT_PATTERNS` are uploaded.

    Args:
        folder: a checkpoint folder (``config.json`` + ``model.safetensors`` [+ README.md, metrics.json, media/]).
        repo_id: ``"namespace/name"`` of the model repo; created if missing (an existing one is kept).
        revision: target branch; created from ``main`` if it does not exist. ``None`` means ``"main"``.
        token: write token (default: huggingface_hub's, from ``HF_TOKEN`` or the login).
        private: create the repo private (ignored when it already exists).
        commit_message: the commit summary (default: ``"Upload resfields checkpoint"``).
        endpoint: Hub URL for this call (default: ``HF_ENDPOINT`` as read at import, see the module doc).

    Returns:
        str: the id (40 hex digits) of the commit holding the upload.

    Raises:
        CheckpointError: an invalid repo id or branch name, a folder that is not a valid checkpoint or
            holds a file to upload that is a symlink leading out of it (nothing is sent in these
            cases), or the Hub refused or could not be reached (the huggingface_hub error is the
            ``__cause__``).
    """
    folder = Path(folder)
    check_repo_id(repo_id)
    branch = check_revision(revision)
    target = f"{repo_id!r} (revision {short_repr(branch)})"
    try:
        load_checkpoint(folder)
        # what upload_folder would send: a link out of the folder would upload whatever it points to
        for path in sorted(folder.glob("**/*")):
            name = path.relative_to(folder).as_posix()
            if path.is_file() and any(fnmatch.fnmatch(name, pattern) for pattern in CHECKPOINT_PATTERNS):
                checkpoint_path(folder, name)
    except CheckpointError as e:
        raise CheckpointError(f"refusing to push {folder} to {target}: {e}") from e
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, exist_ok=True, private=private)
        if revision is not None and revision != _DEFAULT_REVISION:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            revision=revision,
            allow_patterns=list(CHECKPOINT_PATTERNS),
            commit_message=commit_message or "Upload resfields checkpoint",
        )
    except (OSError, httpx2.HTTPError, HFValidationError) as e:  # as in download()
        raise CheckpointError(f"cannot push {folder} to {target} on {api.endpoint}: {e}") from e
    return info.oid
