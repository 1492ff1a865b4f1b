"""The Hub client and checkpoint loading cannot be turned against the user (issue 11).

* A server (or a poisoned ``refs/`` file in the cache) naming a commit id such as ``../../x`` makes the
  client neither read, write nor delete anything outside the cache; a snapshot path outside the cache
  is never used or deleted; ``revision=`` that is no plausible branch, tag or commit name and a repo
  id that breaks the Hub's naming rules are refused with one CheckpointError before any request.
* ``config.json`` / ``model.safetensors`` that are symlinks out of a checkpoint folder are refused;
  the Hugging Face cache's own layout (``snapshots/<commit>/FILE -> ../../blobs/<hash>``) still loads.
* Deeply nested JSON, ``schema_version: true``, a folder that is no checkpoint given to
  ``resfields zoo pull`` and float64 weights beyond float32's range each give one error naming it.

* A server answering an ``ETag`` / ``X-Linked-Etag`` that is no content hash, an ``X-Repo-Commit`` that
  is not the commit asked for, or a tree listing with an ``lfs.oid`` that is no sha256 (all of which
  huggingface_hub 2.4 would build cache paths from) is refused before huggingface_hub sees the answer,
  wherever the answer is served (redirects, next pages); a snapshot linking out of the cache still
  would not load.

Servers bind 127.0.0.1 only: ``PoisonedHub``, ``EtagHub`` and ``TreeHub`` below are TEST DOUBLEs of
malicious Hubs built on ``tests/hub_double.py``.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from resfields.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_checkpoint, save_checkpoint
from resfields.cli import main
from resfields.errors import CheckpointError, SpecError
from resfields.spec import ResFieldSpec, SirenSpec, check_schema_version, parameter_shapes, spec_from_json
from resfields.zoo import from_pretrained
from resfields.zoo import hub as hub_module
from resfields.zoo.hub import download, push_to_hub
from resfields.zoo.pretrained import resolve

sys.path.insert(0, str(Path(__file__).parent))
from hub_double import HubDouble, Repo
from loopback import Tripwire

SPEC = SirenSpec(
    in_features=2,
    out_features=3,
    hidden_features=8,
    n_layers=3,
    resfield_layers=(1,),
    resfield=ResFieldSpec(capacity=2, rank=1),
)
REPO = "me/tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in parameter_shapes(SPEC).items()}


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (what must survive an attack unchanged)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


pytestmark = pytest.mark.usefixtures("online")


class PoisonedHub(HubDouble):
    """TEST DOUBLE of a malicious Hub: once ``poison`` is set, ``GET /api/models/{repo}/revision/{rev}``
    answers it as the commit id of every revision, and the other endpoints accept it as an alias of
    ``main``; ``empty_tree`` makes the tree listing of the poisoned commit empty (nothing to download)."""

    def __init__(self) -> None:
        super().__init__()
        self.poison: str | None = None
        self.empty_tree = False

    def _revision(self, repo: Repo, revision: str) -> str:
        if self.poison is not None and revision == self.poison:
            return repo.branches["main"]
        return super()._revision(repo, revision)

    def _info(self, repo_id: str, repo: Repo, revision: str) -> tuple[int, dict[str, str], bytes]:
        status, headers, body = super()._info(repo_id, repo, revision)
        if self.poison is None:
            return status, headers, body
        return status, headers, json.dumps({**json.loads(body), "sha": self.poison}).encode()

    def _tree(self, repo: Repo, revision: str, prefix: str, recursive: bool) -> tuple[int, dict[str, str], bytes]:
        if self.poison is not None and revision == self.poison and self.empty_tree:
            return 200, {"Content-Type": "application/json"}, b"[]"
        return super()._tree(repo, revision, prefix, recursive)


def precious(root: Path) -> Path:
    """A user's folder outside the cache, at ``root/elsewhere/snapshots/precious`` (its parent is named
    ``snapshots``, the one thing the old eviction checked)."""
    folder = root / "elsewhere" / "snapshots" / "precious"
    folder.mkdir(parents=True)
    (folder / "thesis.tex").write_text("years of work\n")
    return folder


# ----------------------------------------------------------------------------- (1) nothing outside the cache


@pytest.mark.parametrize("empty_tree", [True, False], ids=["empty-tree", "full-tree"])
def test_a_server_naming_a_traversal_commit_id_touches_nothing_outside_the_cache(
    tmp_path: Path, empty_tree: bool
) -> None:
    keep = precious(tmp_path)
    before = tree(tmp_path / "elsewhere")
    cache = tmp_path / "cache"
    local = tmp_path / "local"
    save_checkpoint(local, SPEC, arrays(), metadata={"step": 1})
    with PoisonedHub() as hub:
        push_to_hub(local, REPO, token="hf_test", endpoint=hub.url)
        good = download(REPO, cache_dir=cache, endpoint=hub.url)  # a valid checkpoint, once
        # cache/models--me--tiny/snapshots/<poison> is tmp_path/elsewhere/snapshots/precious
        hub.poison, hub.empty_tree = "../../../elsewhere/snapshots/precious", empty_tree
        with pytest.raises(CheckpointError, match=r"'me/tiny' at revision 'main'.*commit id"):
            download(REPO, cache_dir=cache, endpoint=hub.url, expected_sha256={WEIGHTS_NAME: "0" * 64})
    assert keep.is_dir() and tree(tmp_path / "elsewhere") == before  # nothing deleted, read or written there
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "elsewhere", "local"]
    # the verified snapshot and its ref are untouched: the next offline call still finds it
    assert download(REPO, cache_dir=cache, local_files_only=True) == good
    assert (cache / "models--me--tiny" / "refs" / "main").read_text() == good.name


class EtagHub(HubDouble):
    """TEST DOUBLE of a malicious Hub: its file answers (HEAD and GET) carry the headers ``extra(path)``
    returns, by default ``ETag: "../../../elsewhere/<file>"``; ``missing`` files answer 404 with them."""

    def __init__(self, extra: Callable[[str], dict[str, str]] | None = None, missing: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.extra = extra or (lambda path: {"ETag": f'"../../../elsewhere/{path}"'})
        self.missing = missing

    def _resolve(self, repo: Repo, revision: str, path: str) -> tuple[int, dict[str, str], bytes]:
        status, headers, body = super()._resolve(repo, revision, path)
        if path in self.missing:
            status, headers, body = (
                404,
                {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": headers["X-Repo-Commit"]},
                b"",
            )
        return status, {**headers, **self.extra(path)}, body


def _attack(tmp_path: Path, hub: HubDouble, match: str, readme: bool = False) -> Path:
    """Push a checkpoint to ``hub``, download it into ``tmp_path/cache``: one CheckpointError matching
    ``match``; returns ``tmp_path/elsewhere``, the folder the attacks aim at."""
    (tmp_path / "elsewhere").mkdir()
    save_checkpoint(tmp_path / "local", SPEC, arrays())
    if readme:
        (tmp_path / "local" / "README.md").write_text("# tiny\n")
    with hub:
        push_to_hub(tmp_path / "local", REPO, endpoint=hub.url)
        with pytest.raises(CheckpointError, match=match):
            download(REPO, cache_dir=tmp_path / "cache", endpoint=hub.url)
    return tmp_path / "elsewhere"


def _nothing_outside(tmp_path: Path) -> None:
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert {p.name for p in tmp_path.iterdir()} <= {"cache", "elsewhere", "local"}


def test_a_checkpoint_whose_blobs_a_server_placed_outside_the_cache_is_not_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: with the answer check switched off, huggingface_hub writes the blobs outside the
    cache, and loading refuses the snapshot's links to them."""
    monkeypatch.setattr(hub_module, "_answer_problem", lambda response, call: None)
    _attack(tmp_path, EtagHub(), r"symlink to .*elsewhere.*outside the checkpoint folder")


ETAGS = {
    "relative": lambda tmp, path: {"ETag": f'"../../../elsewhere/{path}"'},
    "absolute": lambda tmp, path: {"ETag": f'"{tmp}/elsewhere/{path}"'},
    "weak": lambda tmp, path: {"ETag": f'W/"../../../elsewhere/{path}"'},
    "unquoted": lambda tmp, path: {"ETag": f"../../../elsewhere/{path}"},
    "hex-then-slash": lambda tmp, path: {"ETag": f'"{"a" * 40}/../../../../elsewhere/{path}"'},
    "empty": lambda tmp, path: {"ETag": '""'},
    "x-linked-etag": lambda tmp, path: {"ETag": f'"{"b" * 40}"', "X-Linked-Etag": f'"../../../elsewhere/{path}"'},
}


@pytest.mark.parametrize("kind", list(ETAGS))
def test_a_server_etag_cannot_place_files_outside_the_cache(tmp_path: Path, kind: str) -> None:
    """huggingface_hub names blobs/<ETag> and .locks/<repo>/<ETag>.lock after the server's answer: an ETag
    that is no content hash is refused before it sees it, with one CheckpointError naming the header."""
    hub = EtagHub(lambda path: ETAGS[kind](tmp_path, path))
    header = "X-Linked-Etag" if kind == "x-linked-etag" else "ETag"
    _attack(tmp_path, hub, rf"refusing checkpoint 'me/tiny' at revision 'main': .*HEAD .*/resolve/.* {header} ")
    _nothing_outside(tmp_path)


@pytest.mark.parametrize("missing", [False, True], ids=["present-file", "missing-file"])
@pytest.mark.parametrize("commit", ["../../../elsewhere/nx", "abc", "f" * 40], ids=["traversal", "short", "other"])
def test_a_server_naming_another_commit_in_a_file_answer_is_refused(tmp_path: Path, commit: str, missing: bool) -> None:
    """huggingface_hub files a file under snapshots/<X-Repo-Commit>/ and a missing one as
    .no_exist/<X-Repo-Commit>/<path>: the header must be the commit asked for."""
    hub = EtagHub(lambda path: {"X-Repo-Commit": commit} if path == "README.md" else {}, ("README.md",) * missing)
    _attack(tmp_path, hub, r"refusing .*README\.md carries X-Repo-Commit", readme=True)
    _nothing_outside(tmp_path)


class TreeHub(HubDouble):
    """TEST DOUBLE of a malicious Hub whose tree listing is ``poison(listing)``; ``how`` serves it at the
    listing's URL ("direct"), behind a redirect to another path ("redirect"), or as the second page the
    (untouched) first one links to ("next-page")."""

    def __init__(self, poison: Callable[[list], bytes], how: str = "direct") -> None:
        super().__init__()
        self.poison, self.how = poison, how

    def handle(self, method: str, url: str, body: bytes, authorized: bool) -> tuple[int, dict[str, str], bytes]:
        if url.startswith("/poisoned"):
            status, headers, listing = super().handle("GET", self.tree_url, b"", authorized)
            return status, headers, self.poison(json.loads(listing))
        status, headers, answer = super().handle(method, url, body, authorized)
        if method != "GET" or "/tree/" not in url or not hasattr(self, "tree_url"):
            return status, headers, answer
        if self.how == "direct":
            return status, headers, self.poison(json.loads(answer))
        if self.how == "redirect":
            return 302, {"Location": "/poisoned/elsewhere"}, b""
        return status, {**headers, "Link": f'<{self.url}/poisoned?cursor=2>; rel="next"'}, json.dumps([]).encode()


def _lfs(listing: list, **lfs: object) -> bytes:
    for entry in listing:
        if entry["path"] == WEIGHTS_NAME:
            entry["lfs"] = {"oid": "0" * 64, "size": entry["size"], "pointerSize": 134, **lfs}
    return json.dumps(listing).encode()


TREES = {
    "lfs-oid-traversal": (lambda listing: _lfs(listing, oid="../../../elsewhere/x"), "lfs.oid"),
    "lfs-oid-absolute": (lambda listing: _lfs(listing, oid="/tmp/x"), "lfs.oid"),
    "lfs-size": (lambda listing: _lfs(listing, size="big"), "lfs.size"),
    "not-json": (lambda listing: b"<html>", "not JSON"),
    "deep": (lambda listing: b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    "object": (lambda listing: b"{}", "no JSON list"),
    "no-path": (lambda listing: json.dumps([{"type": "file"}]).encode(), "without a path"),
    "no-oid": (lambda listing: json.dumps([{"type": "file", "path": "x", "size": 1}]).encode(), "no oid"),
    # "media/*" matches "media/../x.png" as an fnmatch pattern: such a path must never become a file name
    "path-traversal": (lambda listing: _extra(listing, "media/../x.png"), "not a plain relative path"),
    "path-dot": (lambda listing: _extra(listing, "media/./../../elsewhere/x"), "not a plain relative path"),
}


def _extra(listing: list, path: str) -> bytes:
    return json.dumps([*listing, {"type": "file", "path": path, "size": 1, "oid": "0" * 40}]).encode()


@pytest.mark.parametrize("how", ["direct", "redirect", "next-page"])
@pytest.mark.parametrize("kind", list(TREES))
def test_a_tree_listing_that_would_name_or_break_cache_files_is_refused(tmp_path: Path, kind: str, how: str) -> None:
    """With hf_xet installed, huggingface_hub names an LFS blob after the listing's lfs.oid; a listing it
    would trip over (KeyError, JSONDecodeError, RecursionError) is refused as well, in one CheckpointError,
    wherever the server serves it."""
    poison, match = TREES[kind]
    hub = TreeHub(poison, how)
    (tmp_path / "elsewhere").mkdir()
    save_checkpoint(tmp_path / "local", SPEC, arrays())
    with hub:
        push_to_hub(tmp_path / "local", REPO, endpoint=hub.url)
        commit = hub.repos[REPO].branches["main"]
        hub.tree_url = f"/api/models/{REPO}/tree/{commit}?recursive=True"
        with pytest.raises(CheckpointError, match=rf"refusing checkpoint 'me/tiny'.*GET .*{match}"):
            download(REPO, cache_dir=tmp_path / "cache", endpoint=hub.url)
    _nothing_outside(tmp_path)
    assert not (tmp_path / "cache" / "models--me--tiny" / "trees").exists()  # nothing cached from it


@pytest.fixture
def client_factory() -> Iterator[None]:
    """Restore huggingface_hub's client factory after a test that installs its own."""
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils import _http

    before = _http._GLOBAL_CLIENT_FACTORY
    yield
    set_client_factory(before)


def test_only_requests_of_a_download_are_checked(tmp_path: Path, client_factory: None) -> None:
    """Other users of huggingface_hub in the process keep their client factory and get unchecked answers;
    a factory installed after a download is wrapped at the next one, and a client huggingface_hub
    recreates (it does so after a connection error, mid-download) still checks."""
    import httpx2
    from huggingface_hub import close_session, get_session, hf_hub_download, set_client_factory

    made = []

    def users_factory() -> httpx2.Client:
        made.append(httpx2.Client(follow_redirects=True, timeout=None))
        return made[-1]

    set_client_factory(users_factory)
    save_checkpoint(tmp_path / "local", SPEC, arrays())
    with EtagHub(lambda path: {"ETag": '"not-a-content-hash"'}) as hub:
        push_to_hub(tmp_path / "local", REPO, endpoint=hub.url)
        for _ in range(2):
            with pytest.raises(CheckpointError, match="ETag"):
                download(REPO, cache_dir=tmp_path / "cache", endpoint=hub.url)
            assert get_session() is made[-1]  # the user's client, with the check added
            assert hub_module._check_answer in made[-1].event_hooks["response"]
            close_session()
            assert hub_module._check_answer in get_session().event_hooks["response"]
            set_client_factory(users_factory)  # replaced by the user: wrapped again at the next download
        # a plain huggingface_hub call through the same client is not checked
        path = hf_hub_download(REPO, CONFIG_NAME, cache_dir=tmp_path / "plain", endpoint=hub.url)
    assert Path(path).read_bytes() == (tmp_path / "local" / CONFIG_NAME).read_bytes()
    assert hub_module._CALLS == {}


def test_a_snapshot_path_outside_the_cache_is_neither_used_nor_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever huggingface_hub returns must be <cache>/models--ns--name/snapshots/<the commit asked for>."""
    keep = precious(tmp_path)
    cache = tmp_path / "cache"
    snapshots = cache / "models--me--tiny" / "snapshots"
    snapshots.mkdir(parents=True)
    inside_not_a_commit = snapshots / "notes"  # a folder in snapshots/ that is no commit
    inside_not_a_commit.mkdir()
    (inside_not_a_commit / "keep.txt").write_text("mine\n")
    linked = snapshots / COMMIT  # the right name, but a link to the user's folder
    linked.symlink_to(keep, target_is_directory=True)
    other_commit = snapshots / ("f" * 40)
    other_commit.mkdir()
    (other_commit / "keep.txt").write_text("another revision\n")
    before = tree(tmp_path)
    for returned in (keep, inside_not_a_commit, linked, other_commit, snapshots / COMMIT / ".." / "notes"):
        monkeypatch.setattr(hub_module, "snapshot_download", lambda *a, _r=returned, **k: str(_r))
        with pytest.raises(CheckpointError, match="not the snapshot folder"):
            download(REPO, revision=COMMIT, cache_dir=cache, endpoint="http://127.0.0.1:9")
        assert tree(tmp_path) == before, returned


def test_eviction_unlinks_only_blobs_of_that_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed check removes the snapshot and its own blobs, never a file a link points to elsewhere."""
    cache = tmp_path / "cache"
    storage = cache / "models--me--tiny"
    snapshot = storage / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (storage / "blobs").mkdir()
    other_blobs = cache / "models--me--other" / "blobs"
    other_blobs.mkdir(parents=True)
    (other_blobs / "aaaa").write_text("another repo's blob\n")
    (tmp_path / "secret").write_text("not a blob\n")
    (storage / "blobs" / "cfg").write_text("{}")
    (snapshot / CONFIG_NAME).symlink_to(Path("..") / ".." / "blobs" / "cfg")
    (snapshot / WEIGHTS_NAME).symlink_to(other_blobs / "aaaa")
    (snapshot / "README.md").symlink_to(tmp_path / "secret")
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(hub_module, "snapshot_download", lambda *a, **k: str(snapshot))
    with pytest.raises(CheckpointError, match="removed from the cache"):
        download(REPO, revision=COMMIT, cache_dir=cache, endpoint="http://127.0.0.1:9")
    assert not snapshot.exists() and not (storage / "blobs" / "cfg").exists()
    assert not (storage / "refs" / "main").exists()
    assert (other_blobs / "aaaa").read_text() == "another repo's blob\n"
    assert (tmp_path / "secret").read_text() == "not a blob\n"


@pytest.mark.parametrize("ref", ["../../../elsewhere/snapshots/precious", "../x", "main\n../../y", "", "abc"])
def test_a_poisoned_ref_in_the_cache_is_refused(tmp_path: Path, tripwire: Tripwire, ref: str) -> None:
    keep = precious(tmp_path)
    before = tree(tmp_path / "elsewhere")
    storage = tmp_path / "cache" / "models--me--tiny"
    for sub in ("blobs", "refs", "snapshots"):  # a cache that has seen a download
        (storage / sub).mkdir(parents=True)
    refs = storage / "refs"
    (refs / "main").write_text(ref)
    with pytest.raises(CheckpointError, match=r"refs/main.*not a commit id"):
        download(REPO, cache_dir=tmp_path / "cache", local_files_only=True, endpoint=tripwire.url)
    assert keep.is_dir() and tree(tmp_path / "elsewhere") == before
    assert tripwire.hits == 0


def test_a_ref_linked_out_of_the_cache_is_not_read(tmp_path: Path, tripwire: Tripwire) -> None:
    refs = tmp_path / "cache" / "models--me--tiny" / "refs"
    refs.mkdir(parents=True)
    (tmp_path / "elsewhere").write_text(COMMIT)
    (refs / "main").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CheckpointError, match=r"refs/main is a symlink"):
        download(REPO, cache_dir=tmp_path / "cache", local_files_only=True, endpoint=tripwire.url)
    assert tripwire.hits == 0


BAD_REVISIONS = [
    "../../../elsewhere/snapshots/precious",
    "..",
    "a/../b",
    "/etc/passwd",
    "main/",
    "a//b",
    "a\\b",
    "ma\0in",
    "",
    "./main",
    ".hidden",
    "v1.lock",
    "a b",
    "main\n",
    "\x7f",
    "@{-1}",
    "@",
    "a~1",
    "a^",
    "a:b",
    "a?",
    "a*",
    "a[",
    "x" * 256,
]


@pytest.mark.parametrize("revision", BAD_REVISIONS, ids=lambda r: repr(r)[:24])
def test_an_implausible_revision_is_refused_before_any_request(
    tmp_path: Path, tripwire: Tripwire, revision: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_text(COMMIT)  # what a ref path escaping the cache would read
    for local_files_only in (False, True):
        with pytest.raises(CheckpointError, match=r"invalid revision"):
            download(REPO, revision=revision, cache_dir=tmp_path / "cache", endpoint=tripwire.url,
                     local_files_only=local_files_only)  # fmt: skip
    with pytest.raises(CheckpointError, match=r"invalid revision"):
        from_pretrained(REPO, revision=revision, cache_dir=tmp_path / "cache", endpoint=tripwire.url)
    assert tripwire.hits == 0
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/1", "feature/x-y_z", COMMIT])
def test_plausible_revisions_reach_the_cache_lookup(tmp_path: Path, tripwire: Tripwire, revision: str) -> None:
    with pytest.raises(CheckpointError, match="not in the local cache"):
        download(REPO, revision=revision, cache_dir=tmp_path, local_files_only=True, endpoint=tripwire.url)
    assert tripwire.hits == 0


def test_the_cli_refuses_a_traversal_revision_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["zoo", "pull", REPO, "--revision", "../../x", "--cache-dir", str(tmp_path), "--offline"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("resfields: error: ") and "invalid revision" in err and err.count("\n") == 1


# ----------------------------------------------------------------------------- (3) repo ids

BAD_IDS = [
    "a/b/c",
    "-x/y",
    "x/y-",
    "x-/y",
    ".x/y",
    "x/.y",
    "x/y.",
    "x/..",
    "../x",
    "x/.",
    "a b/c",
    "x/y.git",
    "",
    "/",
    "x/",
    "/x",
    "x//y",
    "x/y/",
    "x--y/z",
    "x/y--z",
    "x..y/z",
    "café/x",
    "org/模型",
    "x/y\0",
    "x\n/y",
    "x/y ",
    "~/x",
    "x\\y/z",
    "x/" + "a" * 97,
    "a" * 97 + "/x",
    "a" * 150 + "/" + "b" * 149,
    "a" * 300,
    "a" * 5000,
]


@pytest.mark.parametrize("repo_id", BAD_IDS, ids=lambda r: repr(r)[:24])
def test_an_invalid_repo_id_is_one_checkpoint_error(
    tmp_path: Path, tripwire: Tripwire, monkeypatch: pytest.MonkeyPatch, repo_id: str
) -> None:
    monkeypatch.chdir(tmp_path)  # no folder of that name; "" must not mean this folder either
    save_checkpoint(tmp_path, SPEC, arrays())
    with pytest.raises(CheckpointError, match="repo id"):
        download(repo_id, cache_dir=tmp_path / "cache", endpoint=tripwire.url)
    with pytest.raises(CheckpointError, match="repo id"):
        push_to_hub(tmp_path, repo_id, endpoint=tripwire.url)
    if repo_id != "/":  # "/" is also a folder, the file system root, which holds no checkpoint
        with pytest.raises(CheckpointError, match=r"repo id|empty"):
            resolve(repo_id, cache_dir=tmp_path / "cache", endpoint=tripwire.url)
    with pytest.raises(CheckpointError):
        from_pretrained(repo_id, cache_dir=tmp_path / "cache", endpoint=tripwire.url)
    assert tripwire.hits == 0
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("repo_id", ["org/tiny", "Org-1/My_Model.v2", "a/b", "_x/y", "x/" + "a" * 96])
def test_valid_repo_ids_reach_the_cache_lookup(tmp_path: Path, tripwire: Tripwire, repo_id: str) -> None:
    with pytest.raises(CheckpointError, match="not in the local cache"):
        download(repo_id, cache_dir=tmp_path, local_files_only=True, endpoint=tripwire.url)


def test_the_cli_refuses_a_bad_repo_id_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["zoo", "pull", "x/..", "--cache-dir", str(tmp_path), "--offline"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("resfields: error: ") and "repo id" in err and err.count("\n") == 1


# ----------------------------------------------------------------------------- (2) symlinks


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A valid checkpoint somewhere else on disk, the target of the links below."""
    return save_checkpoint(tmp_path / "outside", SPEC, arrays(1), metadata={"secret": True})


@pytest.mark.parametrize("name", [CONFIG_NAME, WEIGHTS_NAME])
def test_a_symlink_out_of_a_checkpoint_folder_is_refused(tmp_path: Path, outside: Path, name: str) -> None:
    folder = save_checkpoint(tmp_path / "ckpt", SPEC, arrays(1))
    (folder / name).unlink()
    (folder / name).symlink_to(outside / name)
    with pytest.raises(CheckpointError, match=rf"{name}.*symlink.*outside the checkpoint folder"):
        load_checkpoint(folder)
    relative = tmp_path / "relative"
    save_checkpoint(relative, SPEC, arrays(1))
    (relative / name).unlink()
    (relative / name).symlink_to(Path("..") / "outside" / name)
    with pytest.raises(CheckpointError, match="symlink"):
        load_checkpoint(relative)
    with pytest.raises(CheckpointError, match="symlink"):
        from_pretrained(relative, backend="numpy")


def test_symlinks_inside_the_folder_and_a_linked_folder_load(tmp_path: Path, outside: Path) -> None:
    folder = save_checkpoint(tmp_path / "ckpt", SPEC, arrays(2))
    (folder / "weights").mkdir()
    (folder / WEIGHTS_NAME).rename(folder / "weights" / "v1.safetensors")
    (folder / WEIGHTS_NAME).symlink_to(Path("weights") / "v1.safetensors")
    np.testing.assert_array_equal(load_checkpoint(folder).arrays["layers.0.weight"], arrays(2)["layers.0.weight"])
    link = tmp_path / "link"
    link.symlink_to(outside, target_is_directory=True)
    assert load_checkpoint(link).metadata == {"secret": True}


def hub_layout(cache: Path, repo_folder: str, source: Path) -> Path:
    """``source`` laid out like the Hugging Face cache: blobs plus a snapshot of relative links to them."""
    storage = cache / repo_folder
    snapshot = storage / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (storage / "blobs").mkdir()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        blob = storage / "blobs" / f"hash-of-{name}"
        blob.write_bytes((source / name).read_bytes())
        (snapshot / name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    return snapshot


def test_the_hub_cache_layout_loads(tmp_path: Path, outside: Path) -> None:
    snapshot = hub_layout(tmp_path / "cache", "models--me--tiny", outside)
    assert load_checkpoint(snapshot).metadata == {"secret": True}


def test_a_hub_cache_link_that_leaves_its_blobs_is_refused(tmp_path: Path, outside: Path) -> None:
    snapshot = hub_layout(tmp_path / "cache", "models--me--tiny", outside)
    blob = snapshot / ".." / ".." / "blobs" / f"hash-of-{WEIGHTS_NAME}"
    blob.unlink()
    blob.symlink_to(outside / WEIGHTS_NAME)  # the blob itself leads out of the cache
    with pytest.raises(CheckpointError, match="symlink"):
        load_checkpoint(snapshot)
    other = hub_layout(tmp_path / "cache", "models--me--other", outside)
    (other / CONFIG_NAME).unlink()
    (other / CONFIG_NAME).symlink_to(Path("..") / ".." / ".." / "models--me--tiny" / "blobs" / f"hash-of-{CONFIG_NAME}")
    with pytest.raises(CheckpointError, match="symlink"):  # into another repo's blobs
        load_checkpoint(other)
    fake = tmp_path / "fake" / "snapshots" / COMMIT  # a snapshot-like path that is no repo cache
    fake.mkdir(parents=True)
    (tmp_path / "fake" / "blobs").mkdir()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        (tmp_path / "fake" / "blobs" / name).write_bytes((outside / name).read_bytes())
        (fake / name).symlink_to(Path("..") / ".." / "blobs" / name)
    with pytest.raises(CheckpointError, match="symlink"):
        load_checkpoint(fake)


def test_push_refuses_a_file_linked_from_outside_before_any_request(tmp_path: Path, outside: Path) -> None:
    folder = save_checkpoint(tmp_path / "ckpt", SPEC, arrays(3))
    (tmp_path / "id_ed25519").write_text("PRIVATE KEY\n")
    (folder / "media").mkdir()
    (folder / "media" / "preview.png").symlink_to(tmp_path / "id_ed25519")
    with HubDouble() as hub:
        with pytest.raises(CheckpointError, match=r"media/preview\.png.*symlink"):
            push_to_hub(folder, REPO, endpoint=hub.url)
        assert hub.requests == []


# ----------------------------------------------------------------------------- (4) JSON depth, schema_version


def nested(depth: int, kind: str) -> str:
    return "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    ("where", "depth"),
    [("top", 100_000), ("top-object", 100_000), ("metadata", 100_000), ("metadata", 900), ("field", 100_000)],
)
def test_deeply_nested_config_is_a_checkpoint_error(tmp_path: Path, where: str, depth: int) -> None:
    folder = save_checkpoint(tmp_path / "ckpt", SPEC, arrays())
    config = json.loads((folder / CONFIG_NAME).read_text())
    if where == "top":
        text = nested(depth, "list")
    elif where == "top-object":
        text = nested(depth, "object")
    else:
        config[where] = "@@"
        text = json.dumps(config).replace('"@@"', nested(depth, "object" if where == "field" else "list"))
    (folder / CONFIG_NAME).write_text(text)
    with pytest.raises(CheckpointError, match=r"config\.json.*nested"):
        load_checkpoint(folder)


def test_a_config_of_ordinary_depth_loads(tmp_path: Path) -> None:
    folder = save_checkpoint(tmp_path / "ckpt", SPEC, arrays(), metadata={"a": json.loads(nested(40, "object"))})
    assert load_checkpoint(folder).metadata["a"]["a"]["a"] is not None


@pytest.mark.parametrize("version", [True, 1.0, "1", None, [1]])
def test_schema_version_must_be_the_integer(tmp_path: Path, version: object) -> None:
    with pytest.raises(SpecError, match="schema_version"):
        check_schema_version(version)
    folder = save_checkpoint(tmp_path / "ckpt", SPEC, arrays())
    config = json.loads((folder / CONFIG_NAME).read_text())
    with pytest.raises(SpecError, match="schema_version"):
        spec_from_json(json.dumps({"schema_version": version, "field": config["field"]}))
    config["schema_version"] = version
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="schema_version"):
        load_checkpoint(folder)
    check_schema_version(1)


# ----------------------------------------------------------------------------- (5) zoo pull of a non-checkpoint


@pytest.mark.parametrize("content", ["empty", "config only", "notes", "corrupt"])
def test_zoo_pull_of_a_folder_that_is_no_checkpoint_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, content: str
) -> None:
    folder = tmp_path / "not-a-checkpoint"
    folder.mkdir()
    if content == "config only":
        save_checkpoint(tmp_path / "c", SPEC, arrays())
        (folder / CONFIG_NAME).write_bytes((tmp_path / "c" / CONFIG_NAME).read_bytes())
    elif content == "notes":
        (folder / "notes.txt").write_text("hello\n")
    elif content == "corrupt":
        save_checkpoint(folder, SPEC, arrays())
        (folder / WEIGHTS_NAME).write_bytes((folder / WEIGHTS_NAME).read_bytes()[:-50])
    assert main(["zoo", "pull", str(folder)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("resfields: error: ") and captured.err.count("\n") == 1
    assert str(folder) in captured.err


def test_zoo_pull_of_a_checkpoint_folder_prints_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = save_checkpoint(tmp_path / "ckpt", SPEC, arrays())
    assert main(["zoo", "pull", str(folder)]) == 0
    assert capsys.readouterr().out.strip() == str(folder)


@pytest.mark.parametrize(
    ("n_frames", "match"),
    [
        ("abc", r"metadata\.scene\.n_frames: expected an integer, got 'abc'"),
        (None, r"metadata\.scene\.n_frames: expected an integer"),
        (2.5, r"metadata\.scene\.n_frames: expected an integer"),
        (10**30, r"metadata\.scene\.n_frames is .* builds no valid model"),
    ],
    ids=["string", "null", "float", "huge"],
)
def test_a_zoo_nerf_with_a_malformed_frame_count_is_one_checkpoint_error(
    tmp_path: Path, n_frames: object, match: str
) -> None:
    """from_pretrained decodes metadata.scene strictly before building the model it expects."""
    from resfields.zoo import registry

    folder = tmp_path / "nerf"
    shutil.copytree(Path(registry.__file__).parent / "checkpoints" / "nerf-bunny", folder)
    config = json.loads((folder / CONFIG_NAME).read_text())
    config["metadata"]["scene"]["n_frames"] = n_frames
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=match) as info:
        from_pretrained(folder, backend="numpy")
    assert str(folder) in str(info.value)


# ----------------------------------------------------------------------------- (6) float32 overflow


@pytest.mark.parametrize("value", [1e300, -1e300, 3.5e38])
def test_a_finite_float64_beyond_float32_range_is_named_as_overflow(tmp_path: Path, value: float) -> None:
    folder = save_checkpoint(tmp_path / "ckpt", SPEC, arrays())
    weights = {k: v.astype(np.float64) for k, v in arrays().items()}
    weights["layers.0.weight"][0, 0] = value
    save_file(weights, str(folder / WEIGHTS_NAME))
    with pytest.raises(CheckpointError, match=r"layers\.0\.weight.*out of float32 range") as info:
        load_checkpoint(folder)
    assert "NaN" not in str(info.value) and "non-finite" not in str(info.value)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_and_inf_in_float64_are_still_named_non_finite(tmp_path: Path, value: float) -> None:
    folder = save_checkpoint(tmp_path / "ckpt", SPEC, arrays())
    weights = {k: v.astype(np.float64) for k, v in arrays().items()}
    weights["layers.0.weight"][0, 0] = value
    weights["layers.0.weight"][0, 1] = 1e300
    save_file(weights, str(folder / WEIGHTS_NAME))
    with pytest.raises(CheckpointError, match=r"layers\.0\.weight.*non-finite.*NaN or Inf"):
        load_checkpoint(folder)
