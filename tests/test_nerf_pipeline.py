"""The one rendering pipeline on an analytic sphere: a stand-in model speaking the model's batch protocol
(query batches -> sdf and beta, ray batches -> integrated pixels, with the shared quadrature)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resfields.errors import DataError
from resfields.tasks.common.cameras import Camera, intrinsics_from_fov, look_at
from resfields.tasks.common.metrics import psnr
from resfields.tasks.nerf import pipeline as npl
from resfields.tasks.nerf import render as nr
from resfields.tasks.nerf.sampling import occupancy_from_sdf

BOX = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
RADIUS, BETA = 0.5, 0.004


class Sphere:
    """``predict(batch)`` of a textured sphere of radius 0.5; counts the rays each call evaluates."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        return (points * points).sum(-1).sqrt() - RADIUS

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        points = torch.as_tensor(batch["points"], dtype=torch.float64)
        sdf = self.sdf(points)
        if "t_starts" not in batch:
            self.calls.append(("query", points.shape))
            return {"sdf": sdf.unsqueeze(-1).numpy(), "beta": np.array([BETA])}
        self.calls.append(("rays", points.shape))
        starts, ends = (torch.as_tensor(batch[k], dtype=torch.float64) for k in ("t_starts", "t_ends"))
        weights, _, _ = nr.render_weight_from_density(starts, ends, nr.laplace_density(sdf, BETA))
        normals = points / (points * points).sum(-1, keepdim=True).sqrt()
        rgb = 0.5 + 0.4 * torch.sin(6 * points)  # texture: the render must put samples at the right place
        mids = (0.5 * (starts + ends)).unsqueeze(-1)
        out = {
            "rgb": nr.accumulate_along_rays(weights, rgb),
            "opacity": nr.accumulate_along_rays(weights),
            "depth": nr.accumulate_along_rays(weights, mids),
            "normals": nr.accumulate_along_rays(weights, normals),
        }
        return {k: v.numpy() for k, v in out.items()}


OPTIONS = {"time": 0.0, "frame": 0, "fd_step": 1e-3, "n_coarse": 32, "n_samples": 16, "chunk": 64}


def camera(size: int) -> Camera:
    return Camera(intrinsics_from_fov(size, size, 40.0), look_at((0.5, -0.4, -2.8), (0.0, 0.0, 0.0)), size, size)


def test_rays_on_an_analytic_sphere() -> None:
    origins = np.array([[0.0, 0.0, -3.0], [0.0, 3.0, -3.0], [0.0, 0.8, -3.0]])  # centre, misses box, misses sphere
    directions = np.array([[0.0, 0.0, 1.0]] * 3)
    out = npl.render_rays(Sphere(), origins, directions, BOX, **OPTIONS)
    assert out["opacity"][0, 0] == pytest.approx(1.0, abs=1e-3)
    assert out["depth"][0, 0] == pytest.approx(3.0 - RADIUS, abs=2 * BETA)  # the surface, resolved to beta
    np.testing.assert_allclose(out["normals"][0], [0.0, 0.0, -1.0], atol=2e-3)
    assert np.all(out["opacity"][1:] < 1e-6)


def test_view_depth_is_the_distance_of_the_surface_and_nan_on_the_background() -> None:
    cam = camera(24)
    view = npl.render_view(Sphere(), cam, BOX, **OPTIONS)
    seen = view["opacity"] >= npl.MIN_DEPTH_OPACITY
    assert np.isnan(view["depth"][~seen]).all() and seen.sum() > 50
    origins, directions = nr.rays_from_camera(cam)
    o, d = origins.reshape(24, 24, 3)[seen], directions.reshape(24, 24, 3)[seen]
    b = (o * d).sum(-1)  # the analytic first hit of |o + t d| = RADIUS
    hit = -b - np.sqrt(np.maximum(b * b - (o * o).sum(-1) + RADIUS**2, 0.0))
    cos = np.abs(((o + hit[:, None] * d) / RADIUS * d).sum(-1))  # grazing rays gather density earlier
    solid = view["opacity"][seen] > 0.99
    error = np.abs(view["depth"][seen] - hit)
    assert np.all(error[solid] <= 4 * BETA / np.maximum(cos[solid], 0.05))
    assert np.all(error < 0.1)  # no halo: the silhouette's partial pixels lie on the surface too


def test_the_surface_render_equals_a_dense_render() -> None:
    cam = camera(24)
    fast = npl.render_view(Sphere(), cam, BOX, **OPTIONS)
    dense = npl.render_view(Sphere(), cam, BOX, **{**OPTIONS, "n_samples": 4096, "sampler": "stratified"})
    assert 0.1 < fast["opacity"].mean() < 0.8  # both kinds of pixels
    assert psnr(fast["rgb"], dense["rgb"]) > 45.0
    np.testing.assert_allclose(fast["opacity"], dense["opacity"], atol=0.02)


def test_a_grid_skips_empty_space_and_changes_nothing_else() -> None:
    cam = camera(24)
    sphere = Sphere()
    grid = occupancy_from_sdf(lambda p: sphere.sdf(torch.as_tensor(p)).numpy(), BOX, resolution=32)
    plain = npl.render_view(sphere, cam, BOX, **OPTIONS)
    sphere.calls.clear()
    skipped = npl.render_view(sphere, cam, BOX, grid=grid, **OPTIONS)
    assert psnr(skipped["rgb"], plain["rgb"]) > 45.0
    evaluated = sum(shape[1] for kind, shape in sphere.calls if kind == "rays")
    hits = int((plain["opacity"] > 1e-3).sum())
    assert hits <= evaluated < 0.7 * 24 * 24  # the rays beside the sphere were never evaluated


def test_rays_that_carry_no_weight_skip_the_band_pass() -> None:
    cam = camera(24)
    sphere = Sphere()
    fast = npl.render_view(sphere, cam, BOX, **OPTIONS)
    queried = sum(shape[1] for kind, shape in sphere.calls if kind == "query")
    banded = sum(shape[1] for kind, shape in sphere.calls if kind == "rays")
    assert banded < 0.7 * queried  # the rays that pass the sphere by are not rendered
    dense = npl.render_view(sphere, cam, BOX, **{**OPTIONS, "n_samples": 4096, "sampler": "stratified"})
    skipped = fast["opacity"] == 0
    assert skipped.sum() > 0.3 * skipped.size
    assert dense["opacity"][skipped].max() < 1e-4  # what they would have drawn is below the tolerance


def test_chunks_and_padding_change_nothing() -> None:
    cam = camera(10)  # 100 rays: chunks of 7 leave a padded last one
    sphere = Sphere()
    small = npl.render_view(sphere, cam, BOX, **{**OPTIONS, "chunk": 7})
    assert {shape[1] for _, shape in sphere.calls} == {7}  # one shape for every call
    whole = npl.render_view(Sphere(), cam, BOX, **{**OPTIONS, "chunk": 1000})
    for key in npl.OUTPUTS:
        np.testing.assert_allclose(small[key], whole[key], atol=1e-6, err_msg=key)


def test_bad_options_are_refused() -> None:
    with pytest.raises(DataError, match="sampler"):
        npl.render_view(Sphere(), camera(4), BOX, **{**OPTIONS, "sampler": "dense"})
    with pytest.raises(DataError, match="chunk"):
        npl.render_view(Sphere(), camera(4), BOX, **{**OPTIONS, "chunk": 0})
