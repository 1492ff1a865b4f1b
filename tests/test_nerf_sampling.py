"""The surface sampler: crossings, the band at the surface, inverse-transform sampling, the occupancy grid."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resfields.errors import DataError, ShapeError
from resfields.tasks.nerf import sampling as ns
from resfields.tasks.nerf.render import ray_box_intersection

BOX = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def sphere_sdf(centre: np.ndarray, radius: float):
    return lambda points: np.linalg.norm(np.asarray(points) - centre, axis=-1) - radius


def test_first_crossing_of_a_linear_sdf_is_exact() -> None:
    t = np.linspace(0.0, 2.0, 9)[None].repeat(3, 0)
    sdf = np.stack([0.7 - t[0], 0.5 * (1.3 - t[1]), t[2] * 0 + 0.2 + (t[2] - 1) ** 2])  # head-on, oblique, none
    t_surface, slope, found = ns.first_crossing(t, sdf)
    np.testing.assert_allclose(t_surface[:2], [0.7, 1.3], atol=1e-12)
    np.testing.assert_allclose(slope[:2], [1.0, 0.5], atol=1e-12)
    assert found.tolist() == [True, True, False]
    assert t_surface[2] == 1.0 and slope[2] == 1.0  # no crossing: the point nearest the surface


def test_first_crossing_takes_the_first_of_two_surfaces_and_starts_inside() -> None:
    t = np.linspace(0.0, 3.0, 31)[None].repeat(2, 0)
    two_shells = np.abs(t[0] - 1.5) - 0.5  # surfaces at 1.0 (entering) and 2.0 (leaving)
    t_surface, _, found = ns.first_crossing(t, np.stack([two_shells, t[1] * 0 - 0.1]))
    assert t_surface[0] == pytest.approx(1.0) and found.all()
    assert t_surface[1] == 0.0  # a ray starting inside crosses at once


@settings(max_examples=60, deadline=None)
@given(
    depth=st.floats(2.3, 3.7),
    slope=st.floats(0.15, 1.0),
    beta=st.floats(1e-3, 0.1),
    seed=st.one_of(st.none(), st.integers(0, 2**31)),
)
def test_the_band_holds_the_surface_and_its_weight(depth, slope, beta, seed) -> None:
    t = np.linspace(2.0, 4.0, 32)[None]
    sdf = slope * (depth - t)  # a plane at distance `depth`, seen at an angle
    rng = None if seed is None else np.random.default_rng(seed)
    near, far = np.array([2.0]), np.array([4.0])
    starts, ends = ns.surface_band(t, sdf, near, far, beta=beta, n_samples=16, rng=rng)
    assert starts.shape == ends.shape == (1, 16)
    np.testing.assert_array_equal(starts[0, 1:], ends[0, :-1])  # the intervals tile the band
    lo, hi = float(starts[0, 0]), float(ends[0, -1])
    assert 2.0 <= lo <= depth <= hi <= 4.0
    scale = beta / slope
    assert lo == pytest.approx(max(2.0, depth - ns.FRONT * scale), abs=1e-5)
    assert hi == pytest.approx(min(4.0, depth + ns.BACK * scale), abs=1e-5)


def test_a_sharper_density_gets_a_narrower_band_and_a_grazing_ray_a_wider_one() -> None:
    t = np.linspace(2.0, 4.0, 32)[None]
    near, far = np.array([2.0]), np.array([4.0])

    def width(slope: float, beta: float) -> float:
        starts, ends = ns.surface_band(t, slope * (3.0 - t), near, far, beta=beta, n_samples=8)
        return float(ends[0, -1] - starts[0, 0])

    assert width(1.0, 0.01) == pytest.approx(12 * 0.01, rel=1e-5)
    assert width(1.0, 0.002) == pytest.approx(width(1.0, 0.01) / 5, rel=1e-4)
    assert width(0.25, 0.01) == pytest.approx(4 * width(1.0, 0.01), rel=1e-4)


def test_band_of_a_ray_that_misses_the_box_is_empty_and_bad_input_is_refused() -> None:
    t = np.zeros((1, 4))
    starts, ends = ns.surface_band(t, np.ones((1, 4)), np.zeros(1), np.zeros(1), beta=0.1, n_samples=4)
    assert np.all(starts == 0) and np.all(ends == 0)
    with pytest.raises(DataError, match="beta"):
        ns.surface_band(t, np.ones((1, 4)), np.zeros(1), np.zeros(1), beta=0.0, n_samples=4)
    with pytest.raises(ShapeError, match="near and far"):
        ns.surface_band(t, np.ones((1, 4)), np.zeros(2), np.zeros(2), beta=0.1, n_samples=4)


@settings(max_examples=50, deadline=None)
@given(weights=st.lists(st.sampled_from([0.0, 0.0, 1.0, 3.0]), min_size=2, max_size=12), seed=st.integers(0, 99))
def test_sample_from_weights_lands_only_where_there_is_weight(weights, seed) -> None:
    w = np.array([weights])
    edges = np.cumsum(np.r_[0.0, np.random.default_rng(seed).uniform(0.1, 1.0, w.shape[1])])[None]
    for rng in (None, np.random.default_rng(seed)):
        t = ns.sample_from_weights(edges[:, :-1], edges[:, 1:], w, 32, rng)
        assert np.all(np.diff(t[0]) >= 0)
        k = np.clip(np.searchsorted(edges[0], t[0], side="right") - 1, 0, w.shape[1] - 1)
        if w.sum() > 0:
            assert np.all(w[0, k] > 0)
        else:
            assert np.all((t >= edges[0, 0]) & (t <= edges[0, -1]))


@settings(max_examples=25, deadline=None)
@given(
    centre=st.tuples(*[st.floats(-0.3, 0.3)] * 3),
    radius=st.floats(0.08, 0.6),
    resolution=st.sampled_from([8, 16, 24, 32]),
    seed=st.integers(0, 2**31),
)
def test_the_grid_never_drops_a_cell_that_holds_surface(centre, radius, resolution, seed) -> None:
    centre = np.array(centre)
    grid = ns.occupancy_from_sdf(sphere_sdf(centre, radius), BOX, resolution=resolution, lipschitz=1.0)
    directions = np.random.default_rng(seed).normal(size=(4000, 3))
    surface = centre + radius * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    assert grid.lookup(surface).all()
    # and it is not everything: a cell whose centre is far from the surface is empty
    far_cells = np.abs(sphere_sdf(centre, radius)(grid.centres())) > 3 * np.linalg.norm(grid.cell_size)
    assert not grid.occupied.reshape(-1)[far_cells].any()


def test_empty_space_gets_no_samples() -> None:
    sdf = sphere_sdf(np.zeros(3), 0.4)
    grid = ns.occupancy_from_sdf(sdf, BOX, resolution=32)
    origins = np.array([[0.0, 0.0, -3.0], [0.1, -0.2, -3.0], [0.0, 0.9, -3.0], [0.0, 3.0, -3.0]])
    directions = np.array([[0.0, 0.0, 1.0]] * 4)
    near, far, _ = ray_box_intersection(origins, directions, BOX)
    t, first, last = ns.occupied_points(grid, origins, directions, near, far, 24)
    points = origins[:, None, :] + directions[:, None, :] * t[..., None]
    assert grid.lookup(points[:2]).all()  # every point of a ray through the shell lies in an occupied cell
    assert np.all(np.abs(sdf(points[:2])) < 0.2)  # ... near the surface, none in the empty box around it
    assert last[0] > first[0] > 2.0 and first[0] < 2.6 < last[0]
    # rays that pass beside the sphere (inside the box) or miss the box: no points, an empty extent
    assert np.all(t[2:] == 0) and np.all(first[2:] == 0) and np.all(last[2:] == 0)


def test_grid_input_is_checked() -> None:
    with pytest.raises(DataError, match="resolution"):
        ns.occupancy_from_sdf(sphere_sdf(np.zeros(3), 0.4), BOX, resolution=0)
    with pytest.raises(ShapeError, match="sdf_at must return"):
        ns.occupancy_from_sdf(lambda p: np.zeros(3), BOX, resolution=4)
    with pytest.raises(DataError, match="bounds"):
        ns.OccupancyGrid(np.array([[1.0, 0, 0], [0, 1, 1]]), np.zeros((2, 2, 2), bool))
    grid = ns.occupancy_from_sdf(lambda p: np.full(len(p), np.nan), BOX, resolution=4)
    assert grid.occupied.all()  # NaN is never taken for empty space


@settings(max_examples=40, deadline=None)
@given(
    radius=st.floats(0.2, 0.7),
    beta=st.floats(1e-3, 0.05),
    n_coarse=st.integers(8, 48),
    seed=st.integers(0, 2**31),
)
def test_negligible_rays_carry_no_weight_and_rays_that_hit_are_never_negligible(radius, beta, n_coarse, seed) -> None:
    rng = np.random.default_rng(seed)
    impact = rng.uniform(0.0, 1.0, 64)  # the ray's closest distance to the sphere's centre
    origins = np.stack([impact, np.zeros(64), np.full(64, -3.0)], -1)
    directions = np.tile([0.0, 0.0, 1.0], (64, 1))
    near, far, _ = ray_box_intersection(origins, directions, BOX)
    edges = np.linspace(near, far, n_coarse + 1, axis=1)
    t = 0.5 * (edges[:, 1:] + edges[:, :-1])
    sdf_at = sphere_sdf(np.zeros(3), radius)
    sdf = sdf_at(origins[:, None] + directions[:, None] * t[..., None])
    skip = ns.negligible_rays(t, sdf, beta=beta)
    assert not skip[impact < radius].any()
    fine = np.linspace(near, far, 20001, axis=1)  # the true optical depth, densely
    s = sdf_at(origins[:, None] + directions[:, None] * fine[..., None])
    sigma = np.where(s > 0, 0.5 * np.exp(-np.abs(s) / beta), 1 - 0.5 * np.exp(-np.abs(s) / beta)) / beta
    opacity = 1 - np.exp(-np.trapezoid(sigma, fine, axis=1))
    assert np.all(opacity[skip] < 1e-4)
    gap = t[:, 1] - t[:, 0]
    assert skip[impact - radius > 20 * beta + 0.75 * gap].all()  # and rays well clear of it are recognised


def test_negligible_rays_refuses_what_it_cannot_bound() -> None:
    t, sdf = np.array([[1.0]]), np.array([[0.9]])
    assert not ns.negligible_rays(t, sdf, beta=0.01).any()  # one point bounds nothing
    with pytest.raises(DataError, match="beta"):
        ns.negligible_rays(t, sdf, beta=0.0)
    with pytest.raises(ShapeError):
        ns.negligible_rays(np.zeros((2, 3)), np.zeros((2, 4)), beta=0.1)
