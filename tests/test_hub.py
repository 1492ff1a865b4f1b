"""Hub transport (resfields.zoo.hub) against HTTP servers on 127.0.0.1, nothing else on the network.

* Download: olah (PyPI ``olah``), a Hugging Face Hub mirror server, started in a subprocess in its
  offline mode over local git repos: a real, read-only, Hub-compatible server.
* Upload: ``tests/hub_double.py``, an in-process TEST DOUBLE of the Hub endpoints that
  huggingface_hub calls (no upload-capable Hub server is available from a package registry).

huggingface_hub reads ``HF_ENDPOINT`` once, at import, into ``constants.ENDPOINT`` *and* the resolve
URL template ``constants.HUGGINGFACE_CO_URL_TEMPLATE``; patching ``constants.ENDPOINT`` afterwards
would send metadata calls to the new URL but file downloads to the old one. So in-process tests pass
``endpoint=``, and the environment variables themselves are tested in a fresh interpreter.
``constants.HF_HUB_OFFLINE`` is read at every request (``is_offline_mode()``), so it can be patched.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import constants

from resfields.checkpoint import load_checkpoint, save_checkpoint
from resfields.errors import CheckpointError
from resfields.spec import ResFieldSpec, SirenSpec, parameter_shapes
from resfields.zoo import from_pretrained, get_entry
from resfields.zoo.hub import CHECKPOINT_PATTERNS, download, is_local_checkpoint, push_to_hub

sys.path.insert(0, str(Path(__file__).parent))
from hub_double import HubDouble
from loopback import Tripwire

REPO = "org/tiny"
ZOO_REPO = "lab/bunny-scene"
# hidden 32 -> model.safetensors is ~7 KB: olah misreads binary files of 121-149 bytes as LFS pointers
SPEC = SirenSpec(
    in_features=2,
    out_features=3,
    hidden_features=32,
    n_layers=3,
    resfield_layers=(1,),
    resfield=ResFieldSpec(capacity=4, rank=2),
)
MODEL_CARD = "---\nlibrary_name: resfields\ntags: [resfields]\n---\n# tiny\n\nA test checkpoint.\n"


def random_arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in parameter_shapes(SPEC).items()}


def assert_same_arrays(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(actual) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(actual[name], value, err_msg=name)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


pytestmark = pytest.mark.usefixtures("online")


# ----------------------------------------------------------------------------- olah over a git repo


@dataclass(frozen=True)
class HubRepo:
    """The git repo olah serves: v1 (tag, older weights), main (newer weights + extras), broken (truncated)."""

    mirrors: Path
    worktree: Path
    v1: str
    main: str
    old_arrays: dict[str, np.ndarray]
    new_arrays: dict[str, np.ndarray]


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    identity = ["-c", "user.name=resfields tests", "-c", "user.email=tests@resfields.invalid"]
    out = subprocess.run(["git", *identity, *args], cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def hub_repo(tmp_path_factory: pytest.TempPathFactory) -> HubRepo:
    mirrors = tmp_path_factory.mktemp("mirrors")
    work = mirrors / "models" / REPO  # olah's layout: <mirrors-path>/<repo type>s/<namespace>/<name>
    work.mkdir(parents=True)
    _git(work, "init", "-q", "-b", "main")

    old, new = random_arrays(1), random_arrays(2)
    save_checkpoint(work, SPEC, old, metadata={"step": 100})
    (work / "README.md").write_text(MODEL_CARD)
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "first checkpoint")
    _git(work, "tag", "v1")
    v1 = _git(work, "rev-parse", "HEAD")

    save_checkpoint(work, SPEC, new, metadata={"step": 200})
    (work / "metrics.json").write_text(json.dumps({"psnr": 31.5}))
    (work / "media").mkdir()
    (work / "media" / "preview.bin").write_bytes(np.random.default_rng(3).bytes(1024))
    (work / "optimizer.pt").write_bytes(np.random.default_rng(4).bytes(2048))  # not a checkpoint file
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "second checkpoint")
    main = _git(work, "rev-parse", "HEAD")

    _git(work, "checkout", "-q", "-b", "broken")
    weights = (work / "model.safetensors").read_bytes()
    (work / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    _git(work, "commit", "-q", "-am", "truncated weights")
    _git(work, "checkout", "-q", "main")

    # the zoo's pretrained dynamic NeRF, published as another repo of the same server
    zoo = mirrors / "models" / ZOO_REPO
    shutil.copytree(get_entry("resfields/nerf-bunny").local_folder(), zoo)
    _git(zoo, "init", "-q", "-b", "main")
    _git(zoo, "add", "-A")
    _git(zoo, "commit", "-q", "-m", "nerf-bunny from the resfields zoo")
    return HubRepo(mirrors=mirrors, worktree=work, v1=v1, main=main, old_arrays=old, new_arrays=new)


def _die_with_parent() -> None:
    """Linux: olah gets SIGTERM if the test process dies before its teardown (e.g. killed by a timeout)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@pytest.fixture(scope="module")
def olah(hub_repo: HubRepo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """olah in offline mode serving ``hub_repo``; yields its endpoint URL. Always stopped at the end."""
    pytest.importorskip("olah", reason="olah (dev extra) serves the download tests")
    root = tmp_path_factory.mktemp("olah")
    port = free_port()
    # offline and mirrors-path exist only in the TOML config, not as olah-cli flags
    (root / "olah.toml").write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nrepos-path = "{root / "cache"}"\n'
        f'mirrors-path = ["{hub_repo.mirrors}"]\n\n[accessibility]\noffline = true\n'
    )
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(  # the olah-cli console script, run by this interpreter
        [sys.executable, "-m", "olah.server", "-c", str(root / "olah.toml"), "--log-path", str(root / "logs")],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/models/{REPO}/revision/main", timeout=2) as answer:
                    if json.load(answer)["sha"] == hub_repo.main:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"olah did not come up:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_download_main(olah: str, hub_repo: HubRepo, tmp_path: Path) -> None:
    folder = download(REPO, cache_dir=tmp_path / "cache", endpoint=olah)
    assert folder == tmp_path / "cache" / "models--org--tiny" / "snapshots" / hub_repo.main
    ckpt = load_checkpoint(folder)
    assert ckpt.spec == SPEC and ckpt.metadata == {"step": 200}
    assert_same_arrays(ckpt.arrays, hub_repo.new_arrays)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    # only the checkpoint files: optimizer.pt stays on the Hub
    assert files == ["README.md", "config.json", "media/preview.bin", "metrics.json", "model.safetensors"]
    assert (folder / "README.md").read_text() == MODEL_CARD
    for name in files:
        assert sha256(folder / name) == sha256(hub_repo.worktree / name)


@pytest.mark.parametrize("pin", ["tag", "commit"])
def test_download_pinned_revision(olah: str, hub_repo: HubRepo, tmp_path: Path, pin: str) -> None:
    revision = "v1" if pin == "tag" else hub_repo.v1
    folder = download(REPO, revision=revision, cache_dir=tmp_path, endpoint=olah)
    assert folder.name == hub_repo.v1
    ckpt = load_checkpoint(folder)
    assert ckpt.metadata == {"step": 100}
    assert_same_arrays(ckpt.arrays, hub_repo.old_arrays)
    assert not (folder / "metrics.json").exists()


@pytest.mark.parametrize("how", ["local_files_only", "HF_HUB_OFFLINE"])
def test_offline_uses_the_cache_without_network(
    olah: str, hub_repo: HubRepo, tmp_path: Path, tripwire: Tripwire, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    online = download(REPO, cache_dir=tmp_path, endpoint=olah)
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    offline = download(REPO, cache_dir=tmp_path, endpoint=tripwire.url, local_files_only=how == "local_files_only")
    assert offline == online
    assert_same_arrays(load_checkpoint(offline).arrays, hub_repo.new_arrays)
    assert tripwire.hits == 0


@pytest.mark.parametrize("how", ["local_files_only", "HF_HUB_OFFLINE"])
def test_offline_without_cache(tmp_path: Path, tripwire: Tripwire, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match=r"'org/tiny' at revision 'main'.*not in the local cache"):
        download(REPO, cache_dir=tmp_path, endpoint=tripwire.url, local_files_only=how == "local_files_only")
    assert tripwire.hits == 0


def test_environment_variables_in_a_fresh_interpreter(
    olah: str, hub_repo: HubRepo, tmp_path: Path, tripwire: Tripwire
) -> None:
    """HF_ENDPOINT and HF_HUB_OFFLINE as a user sets them: before huggingface_hub is imported."""
    script = "import sys\nfrom resfields.zoo.hub import download\nprint(download(sys.argv[1], cache_dir=sys.argv[2]))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}

    def run(**extra: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-c", script, REPO, str(tmp_path)]
        home = str(tmp_path / "hf-home")  # nothing of the user's Hugging Face setup (token, cache) is used
        return subprocess.run(argv, env={**env, "HF_HOME": home, **extra}, capture_output=True, text=True, timeout=120)

    online = run(HF_ENDPOINT=olah)
    assert online.returncode == 0, online.stderr
    assert Path(online.stdout.strip()).name == hub_repo.main
    offline = run(HF_ENDPOINT=tripwire.url, HF_HUB_OFFLINE="1")
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout == online.stdout
    assert tripwire.hits == 0


def test_unknown_repo_and_revision(olah: str, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"'org/missing' at revision 'main'.*not found"):
        download("org/missing", cache_dir=tmp_path, endpoint=olah)
    with pytest.raises(CheckpointError, match=r"'org/tiny' at revision 'v9'.*not found"):
        download(REPO, revision="v9", cache_dir=tmp_path, endpoint=olah)


def test_connection_refused(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CheckpointError, match=r"could not be reached \(ConnectError") as info:
        download(REPO, cache_dir=tmp_path, endpoint=closed)
    assert closed in str(info.value)


def snapshot_state(cache: Path) -> tuple[list[str], list[str], list[str]]:
    storage = cache / "models--org--tiny"
    names = [sorted(p.name for p in (storage / sub).glob("*")) for sub in ("snapshots", "blobs", "refs")]
    return names[0], names[1], names[2]


def test_hash_mismatch_evicts_the_snapshot(olah: str, hub_repo: HubRepo, tmp_path: Path) -> None:
    good = {"model.safetensors": sha256(hub_repo.worktree / "model.safetensors")}
    bad = {"model.safetensors": "0" * 64}
    with pytest.raises(CheckpointError, match=r"'org/tiny' at revision 'main'.*sha256 mismatch"):
        download(REPO, cache_dir=tmp_path, endpoint=olah, expected_sha256=bad)
    assert snapshot_state(tmp_path) == ([], [], [])  # no model folder, no blob, no ref left behind
    with pytest.raises(CheckpointError, match="not in the local cache"):  # really gone, not just hidden
        download(REPO, cache_dir=tmp_path, local_files_only=True)
    folder = download(REPO, cache_dir=tmp_path, endpoint=olah, expected_sha256=good)  # downloads again
    assert_same_arrays(load_checkpoint(folder).arrays, hub_repo.new_arrays)


def test_truncated_weights_evict_only_that_revision(olah: str, hub_repo: HubRepo, tmp_path: Path) -> None:
    main = download(REPO, cache_dir=tmp_path, endpoint=olah)
    before = snapshot_state(tmp_path)
    with pytest.raises(CheckpointError, match=r"'org/tiny' at revision 'broken'.*corrupt or truncated"):
        download(REPO, revision="broken", cache_dir=tmp_path, endpoint=olah)
    # the broken revision shares config.json, README.md, ... with main: those blobs must survive
    assert snapshot_state(tmp_path) == before
    assert_same_arrays(load_checkpoint(main).arrays, hub_repo.new_arrays)


# ----------------------------------------------------------------------------- upload through the double


def make_checkpoint(folder: Path, arrays: dict[str, np.ndarray]) -> Path:
    save_checkpoint(folder, SPEC, arrays, metadata={"step": 7})
    (folder / "README.md").write_text(MODEL_CARD)
    (folder / "metrics.json").write_text(json.dumps({"psnr": 30.0}))
    (folder / "media").mkdir()
    (folder / "media" / "curve.bin").write_bytes(b"\x00\x01" * 300)
    (folder / "notes.txt").write_text("not part of the checkpoint\n")
    return folder


@pytest.mark.parametrize("transport", ["regular", "git-lfs"])
@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")  # huggingface_hub's own LFS PUT
def test_push_then_download_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: str) -> None:
    arrays = random_arrays(5)
    local = make_checkpoint(tmp_path / "local", arrays)
    lfs = transport == "git-lfs"
    if lfs:  # the LFS batch protocol is huggingface_hub's path without hf_xet (Xet storage is not emulated)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    with HubDouble(lfs_patterns=("*.safetensors",) if lfs else ()) as hub:
        oid = push_to_hub(local, "me/tiny", token="hf_test", endpoint=hub.url)
        repo = hub.repos["me/tiny"]
        assert oid == repo.branches["main"]
        stored = repo.commits[oid]
        assert sorted(stored) == [
            ".gitattributes",
            "README.md",
            "config.json",
            "media/curve.bin",
            "metrics.json",
            "model.safetensors",
        ]
        assert stored["model.safetensors"].lfs is lfs
        if lfs:
            assert sha256(local / "model.safetensors") in hub.lfs_objects
        assert all(authorized for method, path, authorized in hub.requests if path.startswith("/api/"))

        folder = download("me/tiny", cache_dir=tmp_path / "cache", endpoint=hub.url)
    assert folder.name == oid
    ckpt = load_checkpoint(folder)
    assert_same_arrays(ckpt.arrays, arrays)  # tensor by tensor, bit for bit
    for name in ("config.json", "model.safetensors", "README.md", "metrics.json", "media/curve.bin"):
        assert (folder / name).read_bytes() == (local / name).read_bytes(), name
    assert json.loads((folder / "config.json").read_text()) == json.loads((local / "config.json").read_text())


def test_push_to_a_branch(tmp_path: Path) -> None:
    first, second = random_arrays(6), random_arrays(7)
    with HubDouble() as hub:
        main_oid = push_to_hub(make_checkpoint(tmp_path / "a", first), "me/tiny", endpoint=hub.url)
        dev_oid = push_to_hub(
            make_checkpoint(tmp_path / "b", second), "me/tiny", revision="dev", endpoint=hub.url, commit_message="dev"
        )
        assert hub.repos["me/tiny"].branches == {"main": main_oid, "dev": dev_oid}
        # pushing the same folder again changes nothing: the Hub's answer is the current head
        assert push_to_hub(tmp_path / "b", "me/tiny", revision="dev", endpoint=hub.url) == dev_oid
        assert_same_arrays(load_checkpoint(download("me/tiny", cache_dir=tmp_path, endpoint=hub.url)).arrays, first)
        dev = download("me/tiny", revision="dev", cache_dir=tmp_path, endpoint=hub.url)
        assert_same_arrays(load_checkpoint(dev).arrays, second)


def test_download_of_a_repo_without_checkpoint(tmp_path: Path) -> None:
    with HubDouble() as hub:
        push_to_hub(make_checkpoint(tmp_path / "a", random_arrays(8)), "me/tiny", revision="dev", endpoint=hub.url)
        # main only holds .gitattributes
        with pytest.raises(CheckpointError, match=r"has no config\.json and no model\.safetensors"):
            download("me/tiny", cache_dir=tmp_path / "cache", endpoint=hub.url)
    assert snapshot_state(tmp_path / "cache")[0] == []


def test_push_refuses_a_broken_checkpoint_before_any_request(tmp_path: Path) -> None:
    local = make_checkpoint(tmp_path / "local", random_arrays(9))
    weights = (local / "model.safetensors").read_bytes()
    (local / "model.safetensors").write_bytes(weights[:-100])
    with HubDouble() as hub:
        with pytest.raises(CheckpointError, match=r"refusing to push .* to 'me/tiny'.*corrupt or truncated"):
            push_to_hub(local, "me/tiny", endpoint=hub.url)
        with pytest.raises(CheckpointError, match="refusing to push"):
            push_to_hub(tmp_path / "nowhere", "me/tiny", endpoint=hub.url)
        assert hub.requests == []


def test_push_to_an_unreachable_hub(tmp_path: Path) -> None:
    local = make_checkpoint(tmp_path / "local", random_arrays(10))
    with pytest.raises(CheckpointError, match=r"cannot push .* to 'me/tiny'.*onnection refused"):
        push_to_hub(local, "me/tiny", endpoint=f"http://127.0.0.1:{free_port()}")


def test_is_local_checkpoint(tmp_path: Path) -> None:
    assert is_local_checkpoint(make_checkpoint(tmp_path / "c", random_arrays(11)))
    assert not is_local_checkpoint(tmp_path)
    assert not is_local_checkpoint(tmp_path / "missing")
    assert "config.json" in CHECKPOINT_PATTERNS and "model.safetensors" in CHECKPOINT_PATTERNS


def test_zoo_nerf_downloads_through_the_hub_and_renders(olah: str, tmp_path: Path) -> None:
    """The zoo's NeRF served by olah: from_pretrained(Hub id) into a fresh cache renders exactly what the
    shipped copy renders; the CLI does the same in a fresh process through HF_ENDPOINT."""
    hub = from_pretrained(ZOO_REPO, cache_dir=tmp_path / "cache", endpoint=olah)
    assert hub.folder.is_relative_to(tmp_path / "cache")
    shipped = from_pretrained("resfields/nerf-bunny")
    camera = shipped.scene.orbit(1, 12)[0]
    np.testing.assert_array_equal(hub.render(camera, time=0.0)["rgb"], shipped.render(camera, time=0.0)["rgb"])
    env = {**os.environ, "HF_ENDPOINT": olah, "HF_HUB_CACHE": str(tmp_path / "cli-cache")}
    out = tmp_path / "orbit.gif"
    cli = [sys.executable, "-m", "resfields.cli"]
    argv = [*cli, "render", ZOO_REPO, "--views", "2", "--size", "12", "--out", str(out)]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.is_file() and any((tmp_path / "cli-cache").rglob("model.safetensors"))
    offline = {**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}  # cache only from now on
    pull = subprocess.run(
        [*cli, "zoo", "pull", ZOO_REPO, "--offline"], env=offline, capture_output=True, text=True, timeout=120
    )
    assert pull.returncode == 0, pull.stderr[-2000:]
    assert Path(pull.stdout.strip()).is_relative_to(tmp_path / "cli-cache")
