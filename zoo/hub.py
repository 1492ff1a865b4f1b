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
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import httpx2  # the HTTP client of huggingface_hub >= 2: its transport errors escape HfApi uncaught
from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from resfields.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_checkpoint
from resfields.errors import CheckpointError

from .registry import file_sha256

__all__ = ["CHECKPOINT_PATTERNS", "download", "is_local_checkpoint", "push_to_hub"]

#: Files of a checkpoint repo, as fnmatch patterns on repo paths (``*`` also matches ``/``).
CHECKPOINT_PATTERNS: tuple[str, ...] = (CONFIG_NAME, WEIGHTS_NAME, "README.md", "metrics.json", "media/*")

_DEFAULT_REVISION = "main"


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
        CheckpointError: repository or revision not found, not cached while offline, the Hub
            unreachable or answering an HTTP error, a required file missing, a sha256 mismatch, or
            a corrupt/truncated checkpoint. After a failed verification the snapshot of that
            revision (folder, the blobs only it uses, its refs and tree listing) is removed from
            the cache, so no broken model folder stays behind and the next call downloads again.
    """
    where = f"checkpoint {repo_id!r} at revision {revision or _DEFAULT_REVISION!r}"
    try:
        folder = Path(
            snapshot_download(
                repo_id,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                allow_patterns=list(CHECKPOINT_PATTERNS),
                endpoint=endpoint,
                token=token,
            )
        )
    # huggingface_hub's own errors are OSErrors (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled);
    # transport failures it does not translate (a dropped connection mid-answer) are httpx2 errors
    except (OSError, httpx2.HTTPError) as e:
        raise CheckpointError(f"cannot download {where}: {_describe(e, endpoint, local_files_only)}") from e
    try:
        _verify(folder, expected_sha256)
    except CheckpointError as e:
        _evict_snapshot(folder)
        raise CheckpointError(f"{where} failed verification and was removed from the cache: {e}") from e
    return folder


def _describe(error: BaseException, endpoint: str | None, local_files_only: bool) -> str:
    """One sentence on why snapshot_download failed (the original error stays the ``__cause__``)."""
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
    if isinstance(error, LocalEntryNotFoundError):
        cause = error.__cause__
        if local_files_only or constants.HF_HUB_OFFLINE or isinstance(cause, OfflineModeIsEnabled):
            return "not in the local cache and downloads are disabled (local_files_only=True or HF_HUB_OFFLINE=1)"
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
    for name, expected in (expected_sha256 or {}).items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{name}: listed in expected_sha256 but not among the checkpoint files of the repo")
        actual = file_sha256(path)
        if actual != expected.strip().lower():
            raise CheckpointError(f"{name}: sha256 mismatch, expected {expected}, got {actual}")
    load_checkpoint(folder)


def _evict_snapshot(folder: Path) -> None:
    """Remove one cached snapshot: its folder, the blobs no other snapshot links to, its refs and tree listing.

    ``folder`` must be ``<repo cache>/snapshots/<commit>`` (anything else is left alone). Blobs are
    content-addressed and shared between revisions (an unchanged config.json), hence the reference check.
    """
    if folder.parent.name != "snapshots":
        return
    storage = folder.parent.parent
    commit = folder.name
    blobs = storage / "blobs"

    def linked_blobs(snapshot: Path) -> set[Path]:
        out = set()
        for path in snapshot.rglob("*"):
            if path.is_symlink():
                target = Path(os.path.realpath(path))
                if target.parent == blobs.resolve():
                    out.add(target)
        return out

    ours = linked_blobs(folder)
    others: set[Path] = set()
    for snapshot in folder.parent.glob("*"):  # (the folder is absent when the repo had no matching file)
        if snapshot.name != commit and snapshot.is_dir():
            others |= linked_blobs(snapshot)
    shutil.rmtree(folder, ignore_errors=True)
    for blob in ours - others:
        blob.unlink(missing_ok=True)
    # a ref (branch/tag name -> commit) to a removed snapshot would make an offline call look for it
    refs = storage / "refs"
    if refs.is_dir():
        for ref in refs.rglob("*"):
            if ref.is_file() and ref.read_text().strip() == commit:
                ref.unlink(missing_ok=True)
    (storage / "trees" / f"{commit}.json").unlink(missing_ok=True)


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
        CheckpointError: the folder is not a valid checkpoint (nothing is sent), or the Hub refused
            or could not be reached (the huggingface_hub error is the ``__cause__``).
    """
    folder = Path(folder)
    target = f"{repo_id!r} (revision {revision or _DEFAULT_REVISION!r})"
    try:
        load_checkpoint(folder)
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
    except (OSError, httpx2.HTTPError) as e:  # as in download()
        raise CheckpointError(f"cannot push {folder} to {target} on {api.endpoint}: {e}") from e
    return info.oid
