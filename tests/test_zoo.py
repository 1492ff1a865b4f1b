"""The model zoo: save_pretrained / from_pretrained, strict loading, cards, the registry and its
shipped checkpoints, the zoo CLI and the checkpoint cross-backend check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import moving_pattern_clip
from safetensors.numpy import load_file, save_file

import resfields
from resfields.checkpoint import load_checkpoint
from resfields.cli import main
from resfields.errors import CheckpointError, SpecError
from resfields.tasks import get_task
from resfields.tasks.common.config import ModelConfig, RunConfig, TrainConfig
from resfields.tasks.common.fit import fit
from resfields.zoo import registry as registry_module
from resfields.zoo.check import check_checkpoint
from resfields.zoo.recipes import RECIPES
from resfields.zoo.registry import file_sha256, load_registry

ZOO_IDS = {f"resfields/{name}" for name in RECIPES}


@pytest.fixture(scope="module")
def video_run(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("clip") / "clip.npy"
    np.save(source, moving_pattern_clip(3, 12, 14))
    run = RunConfig(
        "video",
        get_task("video").Data(source=str(source), n_frames=None, scale=1.0),
        ModelConfig(width=16, rank=2, omega0=10.0),
        TrainConfig(steps=5, batch_size=128, lr=3e-3),
    )
    out = tmp_path_factory.mktemp("video_run")
    fit(run, out, progress=False, media=False)
    return out


@pytest.fixture
def nerf_run(tiny_nerf_run) -> Path:
    return tiny_nerf_run


# ----------------------------------------------------------------------------- save / load


def test_round_trip_on_every_backend(video_run, tmp_path):
    saved = resfields.save_pretrained(video_run, tmp_path / "model")
    assert {p.name for p in saved.iterdir()} == {"config.json", "model.safetensors", "README.md", "metrics.json"}
    original = load_checkpoint(video_run).arrays
    x = np.random.default_rng(0).uniform(-1, 1, size=(50, 3)).astype(np.float32)
    ids = np.arange(50) % 3
    outputs = {}
    for backend in ("torch", "tinygrad", "numpy"):
        model = resfields.from_pretrained(saved, backend=backend)
        assert model.task == "video" and model.checkpoint.arrays.keys() == original.keys()
        outputs[backend] = model.predict(x, frame_ids=ids)
    for name, value in original.items():
        np.testing.assert_array_equal(model.checkpoint.arrays[name], value)  # float32 storage is exact
    np.testing.assert_allclose(outputs["torch"], outputs["numpy"], atol=1e-4)
    np.testing.assert_allclose(outputs["tinygrad"], outputs["numpy"], atol=1e-4)


def test_float16_storage_halves_the_file_and_stays_close(video_run, tmp_path):
    full = resfields.save_pretrained(video_run, tmp_path / "f32")
    half = resfields.save_pretrained(video_run, tmp_path / "f16", dtype="float16")
    ratio = (half / "model.safetensors").stat().st_size / (full / "model.safetensors").stat().st_size
    assert 0.45 < ratio < 0.6  # the JSON header does not shrink
    x, ids = np.zeros((4, 3), np.float32), np.arange(4) % 3
    a = resfields.from_pretrained(full).predict(x, frame_ids=ids)
    b = resfields.from_pretrained(half).predict(x, frame_ids=ids)
    assert np.abs(a - b).max() < 1e-2


def test_card_states_task_recipe_metrics_and_how_to_load(video_run, tmp_path):
    card = (resfields.save_pretrained(video_run, tmp_path / "m", card={"id": "me/clip"}) / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: resfields" in front and "license: mit" in front and "task-video" in front
    assert '"task": "video"' in card and 'from_pretrained("me/clip"' in card
    psnr = json.loads((video_run / "metrics.json").read_text())["metrics"]["test_psnr"]
    assert f"{psnr:.6g}" in card  # the measured number, not a placeholder


def test_strict_loading(video_run, tmp_path):
    folder = resfields.save_pretrained(video_run, tmp_path / "m")
    arrays = load_file(str(folder / "model.safetensors"))
    extra = tmp_path / "extra"
    shutil.copytree(folder, extra)
    save_file({**arrays, "layers.9.weight": np.zeros(2, np.float32)}, str(extra / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected.*layers\.9\.weight"):
        resfields.from_pretrained(extra)
    missing = tmp_path / "missing"
    shutil.copytree(folder, missing)
    save_file({k: v for k, v in arrays.items() if k != "layers.0.bias"}, str(missing / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing.*layers\.0\.bias"):
        resfields.from_pretrained(missing)
    truncated = tmp_path / "truncated"
    shutil.copytree(folder, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        resfields.from_pretrained(truncated)
    future = tmp_path / "future"
    shutil.copytree(folder, future)
    config = json.loads((future / "config.json").read_text())
    config["schema_version"] = 99
    (future / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="schema"):
        resfields.from_pretrained(future)
    with pytest.raises(SpecError, match="backend"):
        resfields.from_pretrained(folder, backend="jax")
    with pytest.raises(CheckpointError, match="neither a folder"):
        resfields.from_pretrained("no-such-thing")


def test_nerf_checkpoint_that_does_not_match_its_recipe_is_refused(nerf_run, tmp_path):
    folder = resfields.save_pretrained(nerf_run, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["metadata"]["run"]["model"]["rank"] = 3  # the recipe now describes another model
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"does not match.*rank: 2 stored, 3 from the run config"):
        resfields.from_pretrained(folder)


def test_save_pretrained_never_leaves_a_half_written_folder(video_run, tmp_path):
    target = tmp_path / "m"
    resfields.save_pretrained(video_run, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    with pytest.raises(CheckpointError):
        resfields.save_pretrained(tmp_path / "nothing-here", target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="refusing"):
        resfields.save_pretrained(video_run, occupied)


def test_nerf_pretrained_renders_on_torch_and_numpy(nerf_run, tmp_path):
    folder = resfields.save_pretrained(nerf_run, tmp_path / "m")
    torch_model, ref_model = (resfields.from_pretrained(folder, backend=b) for b in ("torch", "numpy"))
    camera = torch_model.scene.orbit(1, 10)[0]
    a, b = (m.render(camera, time=0.5)["rgb"] for m in (torch_model, ref_model))
    assert a.shape == (10, 10, 3) and 10 * np.log10(1 / max(np.mean((a - b) ** 2), 1e-30)) >= 60
    with pytest.raises(SpecError, match="render"):
        torch_model.predict(np.zeros((1, 3)))
    report = check_checkpoint(folder, ("torch",), size=8)
    assert report["passed"] and report["backends"]["torch"]["opacity_max_error"] < 1e-3


def test_edited_weights_are_what_a_field_model_predicts_and_saves(video_run, tmp_path):
    model = resfields.from_pretrained(video_run, backend="torch")
    x, ids = np.zeros((4, 3), np.float32), np.arange(4) % 3
    before = model.predict(x, frame_ids=ids)
    with torch.no_grad():  # fine-tuning in place, as a user's own loop would
        for p in model.model.parameters():
            p.mul_(0.5)
    edited = model.predict(x, frame_ids=ids)
    assert not np.allclose(edited, before)
    saved = model.save_pretrained(tmp_path / "edited")
    assert not (saved / "metrics.json").exists()  # measured on the old weights: not carried over
    assert "metrics" not in json.loads((saved / "config.json").read_text())["metadata"]
    reloaded = resfields.from_pretrained(saved, backend="numpy")
    np.testing.assert_allclose(reloaded.predict(x, frame_ids=ids), edited, atol=1e-5)
    unchanged = resfields.from_pretrained(video_run).save_pretrained(tmp_path / "same")
    assert (unchanged / "metrics.json").is_file()


def test_edited_weights_are_what_a_nerf_renders_and_saves(nerf_run, tmp_path):
    model = resfields.from_pretrained(nerf_run, backend="torch")
    camera = model.scene.orbit(1, 48)[0]  # large enough to render through the occupancy grid
    before = model.render(camera, frame=0)
    assert model.scene._grids  # built from the loaded weights
    with torch.no_grad():
        model.model.sdf.layers[-1].bias[0] -= 0.3  # a bigger surface: the old grid would clip it
        model.model.color.layers[-1].bias += 2.0
    after = model.render(camera, frame=0)
    assert not np.allclose(after["rgb"], before["rgb"])
    fresh = resfields.from_pretrained(model.save_pretrained(tmp_path / "edited"), backend="torch")
    for key in ("rgb", "opacity"):  # a grid built from the edited weights: rendering the same
        np.testing.assert_allclose(fresh.render(camera, frame=0)[key], after[key], atol=1e-5, err_msg=key)


# ----------------------------------------------------------------------------- the zoo itself


def test_registry_lists_every_recipe_with_hashes_metrics_and_a_passed_check():
    registry = load_registry()
    assert set(registry) == ZOO_IDS
    total = 0
    for entry in registry.values():
        folder = entry.local_folder()
        assert {"config.json", "model.safetensors", "README.md"} <= set(entry.files)
        for name, digest in entry.files.items():
            assert file_sha256(folder / name) == digest, f"{entry.id}: {name}"
            total += (folder / name).stat().st_size
        assert entry.check["passed"], entry.id
        assert entry.metrics and all(entry.metrics.values()), entry.id
        card = (folder / "README.md").read_text()
        assert "passed" in card and entry.id in card
    assert total <= 32e6


@pytest.mark.parametrize("zoo_id", sorted(ZOO_IDS))
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_every_zoo_entry_loads(zoo_id, backend):
    model = resfields.from_pretrained(zoo_id, backend=backend)
    assert model.task == load_registry()[zoo_id].task
    if model.task == "nerf":
        views = model.render(model.scene.orbit(1, 8)[0], time=0.0)
        seen = views["opacity"] >= 0.01  # depth is the surface's distance there, NaN on the background
        assert views["rgb"].shape == (8, 8, 3) and seen.any() and not seen.all()
        assert np.isfinite(views["depth"][seen]).all() and np.isnan(views["depth"][~seen]).all()
    else:
        spec = model.checkpoint.spec
        keys = {"frame_ids": np.zeros(4, np.int64)} if spec.resfield.mode == "lookup" else {"times": np.zeros(4)}
        assert np.isfinite(model.predict(np.zeros((4, spec.in_features), np.float32), **keys)).all()


@pytest.mark.parametrize(
    "zoo_id",
    # one field entry by default (the same check on another Siren), all of them with -m slow
    [
        pytest.param(i, marks=[] if i == "resfields/video-bikes" else [pytest.mark.slow])
        for i in sorted(ZOO_IDS)
        if "nerf" not in i
    ],
)
def test_field_zoo_entries_on_tinygrad_match_the_reference(zoo_id):
    report = check_checkpoint(zoo_id, ("tinygrad",))
    assert report["passed"], report


@pytest.mark.slow
@pytest.mark.parametrize("zoo_id", sorted(i for i in ZOO_IDS if "nerf" in i))
def test_nerf_zoo_entries_on_tinygrad_match_the_reference(zoo_id):
    """tinygrad compiles the NeRF forward for minutes on a CPU, hence slow."""
    report = check_checkpoint(zoo_id, ("tinygrad",), size=16)
    assert report["passed"], report


def test_a_tampered_zoo_file_is_refused(tmp_path, monkeypatch):
    entry = load_registry()["resfields/video-bikes"]
    copy = tmp_path / "zoo"
    shutil.copytree(Path(registry_module.__file__).parent / "checkpoints", copy / "checkpoints")
    registry = json.loads(registry_module.REGISTRY_PATH.read_text())
    (copy / "registry.json").write_text(json.dumps(registry))
    weights = copy / entry.folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # one flipped byte inside a tensor: still a valid file, but not the published one
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(registry_module, "REGISTRY_PATH", copy / "registry.json")
    monkeypatch.setattr(registry_module.ZooEntry, "local_folder", lambda self: copy / self.folder)
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        resfields.from_pretrained("resfields/video-bikes")


def test_zoo_cli_list_and_render_by_id(tmp_path, capsys):
    assert main(["zoo", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(zoo_id in listed for zoo_id in ZOO_IDS)
    out = tmp_path / "orbit.gif"
    assert (
        main(["render", "resfields/nerf-bunny", "--views", "2", "--size", "12", "--time", "0.2", "--out", str(out)])
        == 0
    )
    assert iio.imread(out).shape[:3] == (2, 12, 12)
    assert main(["render", "resfields/no-such-model", "--out", str(out)]) == 2


def test_a_recipe_trains_exports_evaluates_checks_and_cards(video_run, tmp_path, monkeypatch):
    from resfields.tasks.common.fit import load_run
    from resfields.zoo import recipes

    run, _ = load_run(video_run)
    monkeypatch.setitem(recipes.RECIPES, "tiny", recipes.Recipe("tiny", "A tiny clip.", run))
    entry = recipes.train_recipe(
        "tiny", work_dir=tmp_path / "work", target_root=tmp_path / "zoo", check_backends=("torch",), progress=False
    )
    folder = tmp_path / "zoo" / "tiny"
    assert entry.id == "resfields/tiny" and entry.check["passed"]
    assert set(entry.files) == {"config.json", "model.safetensors", "README.md", "metrics.json"}
    assert entry.files["model.safetensors"] == file_sha256(folder / "model.safetensors")
    card = (folder / "README.md").read_text()
    stored = entry.metrics["torch, this float16 file"]["test_psnr"]
    assert f"{stored:.6g}" in card and "float16" in card and "passed" in card
    assert "resfields/tiny" not in registry_module.load_registry()  # a temporary root is not registered


def test_field_checkpoint_that_does_not_match_its_recipe_is_refused(video_run, tmp_path):
    folder = resfields.save_pretrained(video_run, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["metadata"]["run"]["model"]["width"] = 32  # the weights are width 16
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"does not match.*hidden_features: 16 stored, 32 from the run config"):
        resfields.from_pretrained(folder)
