"""Dynamic NeRF models: specs per method, a forward written once, training on the embedded scene."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resfields.backends import get_backend
from resfields.checkpoint import load_checkpoint, save_checkpoint
from resfields.errors import DataError, SpecError
from resfields.init import sample_parameters
from resfields.tasks.nerf.model import (
    LATENT_METHODS,
    METHODS,
    NerfModelConfig,
    nerf_forward,
    nerf_loss,
    nerf_spec,
    render_batch,
    rigid_motion,
)
from resfields.tasks.nerf.neus import read_neus
from resfields.tasks.nerf.rays import RaySampler, ray_distance_from_depth
from resfields.tasks.nerf.scene import make_scene


def _config(method: str, **kw) -> NerfModelConfig:
    small = dict(width=32, n_layers=5, resfield_layers=(1, 2, 3), rank=2, feature_dim=8, color_width=32, latent_dim=4)
    return NerfModelConfig(method=method, **{**small, **kw})


def sphere_query(batch):
    """A stand-in for the model's SDF query: the geometric-init sphere of radius 0.5."""
    return {"sdf": np.linalg.norm(batch["points"], axis=-1, keepdims=True) - 0.5, "beta": np.array([0.1])}


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene") / "bunny"
    make_scene(folder, n_frames=3, size=32, n_train_cameras=2, n_test_cameras=1)
    return read_neus(folder)


@pytest.mark.parametrize("method", METHODS)
def test_spec_per_method(method, tmp_path):
    spec = nerf_spec(_config(method), n_frames=5)
    names = [n for n, _ in spec.fields] + [n for n, _ in spec.arrays]
    expected = {
        "tnerf": [],
        "dynerf": ["latents"],
        "dnerf": ["deform"],
        "nerfies": ["deform", "latents"],
        "hypernerf": ["deform", "ambient", "latents"],
    }[method]
    assert set(names) == {"sdf", "color", "beta", *expected}
    sdf = spec.field("sdf")
    assert sdf.in_features == {"tnerf": 4, "dynerf": 7, "dnerf": 3, "nerfies": 3, "hypernerf": 5}[method]
    assert sdf.resfield.capacity == 5 and sdf.skips == (2,) and sdf.init == "geometric"
    assert nerf_spec(_config(method, resfield_layers=()), 5).field("sdf").resfield is None
    save_checkpoint(tmp_path, spec, sample_parameters(spec, seed=0))
    assert load_checkpoint(tmp_path).spec == spec


def test_ray_batches_are_frame_major_and_balanced(video):
    batch = RaySampler(video, n_samples=8).sample(np.random.default_rng(0), 10, sphere_query)
    assert batch["points"].shape == (3, 10, 8, 3) and batch["rgb"].shape == (3, 10, 3)
    assert batch["mask"][:, :5].min() == 1 and batch["mask"][:, 5:].max() == 0  # half foreground, half background
    np.testing.assert_allclose(batch["t_starts"][..., 1:], batch["t_ends"][..., :-1])  # intervals tile the ray
    assert batch["frame"].ravel().tolist() == [0, 1, 2]


@pytest.mark.parametrize("method", METHODS)
def test_torch_training_on_the_embedded_scene(method, video):
    impl = get_backend("torch")
    config = _config(method)
    spec = nerf_spec(config, video.n_frames)
    arrays = sample_parameters(spec, seed=0)
    trainer = impl.trainer(
        impl.build(spec, arrays),
        lambda p, b: nerf_loss(p, b, config),
        lr=5e-3,
        forward=lambda m, b: render_batch(m, b, config, impl.concat),
    )
    sampler = RaySampler(video, n_samples=16)
    forward = nerf_forward(config, impl.concat)

    def query(batch):  # the surface is found with the model being trained, as in fit
        return impl.infer(trainer.model, forward, batch)

    losses = [trainer.step(sampler.sample(np.random.default_rng(s), 8, query)) for s in range(30)]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses[::5]
    trained = impl.to_numpy(trainer.model)
    assert trained["beta"][0] != pytest.approx(arrays["beta"][0])
    if method in LATENT_METHODS:
        assert not np.allclose(trained["latents"], arrays["latents"])  # the codes learn through the gather


def test_render_outputs_have_their_shapes(video):
    config = _config("tnerf")
    model = get_backend("torch").build(nerf_spec(config, video.n_frames))
    sampled = RaySampler(video, n_samples=8).sample(np.random.default_rng(1), 4, sphere_query)
    batch = {k: torch.as_tensor(v) for k, v in sampled.items()}
    with torch.no_grad():
        out = render_batch(model, batch, config, get_backend("torch").concat)
    assert out["rgb"].shape == (3, 4, 3) and out["opacity"].shape == (3, 4, 1) and out["depth"].shape == (3, 4, 1)
    assert float(out["opacity"].min()) >= 0 and float(out["opacity"].max()) <= 1 + 1e-6
    assert out["eikonal"].ndim == 0


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tnerf", "dnerf", "hypernerf"])
def test_tinygrad_renders_what_torch_renders(method, video):
    """tinygrad compiles the whole forward (tens of seconds on CPU), hence slow."""
    from tinygrad import Tensor

    config = _config(method)
    spec = nerf_spec(config, video.n_frames)
    arrays = sample_parameters(spec, seed=0)
    batch = RaySampler(video, n_samples=16).sample(np.random.default_rng(0), 8, sphere_query)
    torch_impl, tiny_impl = get_backend("torch"), get_backend("tinygrad")
    a = render_batch(
        torch_impl.build(spec, arrays), {k: torch.as_tensor(v) for k, v in batch.items()}, config, torch_impl.concat
    )
    b = render_batch(tiny_impl.build(spec, arrays), {k: Tensor(v) for k, v in batch.items()}, config, tiny_impl.concat)
    for key in ("rgb", "opacity", "depth"):
        np.testing.assert_allclose(b[key].numpy(), a[key].detach().numpy(), atol=1e-5)
    # normals come from forward differences, which amplify float32 rounding by 1 / fd_step
    np.testing.assert_allclose(b["normals"].numpy(), a["normals"].detach().numpy(), atol=1e-3)


def test_depth_maps_become_ray_distances(video):
    # a pixel's ray distance times the ray's unit direction, from the camera centre, is the surface point
    # whose camera-frame z is the stored depth
    camera, depth = video.cameras[0], video.depth[0]
    distances = ray_distance_from_depth(camera, depth)
    v, u = np.argwhere(depth > 0)[len(np.argwhere(depth > 0)) // 2]
    from resfields.tasks.nerf.render import rays_from_camera

    origin, direction = (a[v * camera.width + u] for a in rays_from_camera(camera))
    point = origin + distances[v * camera.width + u] * direction
    z_cam = (point - camera.center) @ camera.rotation[:, 2]
    assert z_cam == pytest.approx(float(depth[v, u]), rel=1e-5)
    assert distances[depth.reshape(-1) == 0].max() == 0  # unknown stays unknown


def test_rgbd_batches_and_losses(video):
    batch = RaySampler(video, n_samples=8, depth=True).sample(np.random.default_rng(0), 6, sphere_query)
    assert batch["depth"].shape == (3, 6, 1) and set(np.unique(batch["depth_valid"])) <= {0.0, 1.0}
    assert (batch["depth"][:, :3] > 0).all()  # foreground rays of the embedded scene all have depth
    t = {k: torch.as_tensor(v) for k, v in batch.items()}
    pred = {
        "rgb": t["rgb"].clone(),
        "opacity": t["mask"].clamp(0.01, 0.99),
        "eikonal": torch.tensor(0.0),
        "depth": t["depth"] + 0.5,
        "sdf": torch.zeros(3, 6, 8, 1),
    }
    base = NerfModelConfig()
    plain = float(nerf_loss(pred, t, base))
    with_depth = float(nerf_loss(pred, t, NerfModelConfig(depth_weight=2.0)))
    assert with_depth - plain == pytest.approx(2.0 * 0.5, rel=1e-4)  # L1 of a 0.5 offset on foreground rays
    # sparseness: exp(-s |0|) = 1 on every sample of a background ray, so the term is its weight
    assert float(nerf_loss(pred, t, NerfModelConfig(sparse_weight=0.3))) - plain == pytest.approx(0.3, rel=1e-4)
    pred["sdf"] = torch.ones(3, 6, 8, 1)
    assert float(nerf_loss(pred, t, NerfModelConfig(sparse_weight=0.3))) - plain < 1e-6


def test_rgbd_needs_depth_and_weights_are_checked(video):
    from dataclasses import replace

    with pytest.raises(DataError, match="depth"):
        RaySampler(replace(video, depth=None), depth=True)
    with pytest.raises(SpecError, match="depth_weight"):
        NerfModelConfig(depth_weight=-1.0)


def test_rigid_motion_is_rodrigues():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(0)
    rotvec, shift, points = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    motion = torch.as_tensor(np.concatenate([rotvec, shift], -1))
    got = rigid_motion(motion, torch.as_tensor(points), get_backend("torch").concat).numpy()
    expected = Rotation.from_rotvec(rotvec).apply(points) + shift
    np.testing.assert_allclose(got, expected, atol=1e-9)
    identity = rigid_motion(torch.zeros(1, 6, dtype=torch.float64), torch.as_tensor(points[:1]), torch.cat)
    np.testing.assert_allclose(identity.numpy(), points[:1], atol=1e-6)
