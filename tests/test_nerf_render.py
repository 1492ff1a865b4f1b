"""SDF volume rendering primitives: ray-box intersection, stratified intervals, Laplace density,
quadrature weights, accumulation (the pipeline built from them: test_nerf_pipeline.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from resfields.errors import DataError, ShapeError
from resfields.tasks.nerf import render as nr

BOX = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def to_torch64(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float64))


# ----------------------------------------------------------------------------- ray-box intersection

S3 = math.sqrt(3.0)
HAND_RAYS = [  # origin, direction, near, far, hit
    ((0, 0, -3), (0, 0, 1), 2.0, 4.0, True),  # axis-aligned; x and y components are 0 (inside their slabs)
    ((-2, -2, -2), (1 / S3, 1 / S3, 1 / S3), S3, 3 * S3, True),  # diagonal through two corners
    ((0, 3, -3), (0, 0, 1), 0.0, 0.0, False),  # parallel to the y slab, outside it: miss
    ((0, 0, 3), (0, 0, 1), 0.0, 0.0, False),  # box behind the origin
    ((0.5, 0, 0), (1, 0, 0), 0.0, 0.5, True),  # origin inside: near clamped to 0
    ((1, 0, -3), (0, 0, 1), 2.0, 4.0, True),  # zero x component with the origin on the x = 1 face plane
    ((0, 0, -3), (0, 0, 2), 1.0, 2.0, True),  # non-unit direction: t in multiples of it
    ((-3, 2.5, 0), (1, -1, 0), 2.0, 3.5, True),  # enters through x = -1 at t = 2, leaves through y = -1
]


def test_ray_box_intersection_hand_computed() -> None:
    origins, directions, near, far, hit = (np.array(column) for column in zip(*HAND_RAYS, strict=True))
    got_near, got_far, got_hit = nr.ray_box_intersection(origins, directions, BOX)
    assert got_near.dtype == got_far.dtype == np.float32 and got_hit.dtype == np.bool_
    np.testing.assert_array_equal(got_hit, hit)
    np.testing.assert_allclose(got_near, near, atol=1e-6)
    np.testing.assert_allclose(got_far, far, atol=1e-6)


def test_ray_box_intersection_rejects_bad_input() -> None:
    with pytest.raises(DataError, match="non-zero"):
        nr.ray_box_intersection([[0, 0, 0]], [[0, 0, 0]], BOX)
    with pytest.raises(ShapeError, match=r"\(R, 3\)"):
        nr.ray_box_intersection([0, 0, 0], [0, 0, 1], BOX)
    with pytest.raises(DataError, match="lo < hi"):
        nr.ray_box_intersection([[0, 0, 0]], [[0, 0, 1]], BOX[::-1])


coordinate = st.floats(-3.0, 3.0, allow_nan=False)
component = st.one_of(st.just(0.0), st.floats(-1.0, 1.0, allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(
    origin=st.tuples(coordinate, coordinate, coordinate),
    direction=st.tuples(component, component, component),
    lo=st.tuples(*[st.floats(-1.5, 0.0)] * 3),
    size=st.tuples(*[st.floats(0.2, 2.0)] * 3),
)
def test_ray_box_intersection_ends_lie_on_the_box(origin, direction, lo, size) -> None:
    o, d, lo = np.array(origin), np.array(direction), np.array(lo)
    assume(np.linalg.norm(d) > 0.1)
    d /= np.linalg.norm(d)
    box = np.stack([lo, lo + np.array(size)])
    near, far, hit = (value[0] for value in nr.ray_box_intersection(o[None], d[None], box))
    tol = 1e-5
    if not hit:
        assert near == far == 0.0
        t = np.linspace(0.0, 20.0, 4001)[:, None]
        inside = np.all((o + t * d > box[0] + 1e-3) & (o + t * d < box[1] - 1e-3), axis=1)
        assert not inside.any(), "a ray reported as missing passes through the box"
        return
    assert 0.0 <= near < far

    def on_surface(point: np.ndarray) -> bool:
        within = np.all(point >= box[0] - tol) and np.all(point <= box[1] + tol)
        return bool(within and np.min(np.minimum(abs(point - box[0]), abs(point - box[1]))) < tol)

    assert on_surface(o + far * d)
    if near > 0:
        assert on_surface(o + near * d)
    else:
        assert np.all((o >= box[0] - tol) & (o <= box[1] + tol)), "near = 0 but the origin is outside the box"


# ----------------------------------------------------------------------------- stratified intervals

NEAR = np.array([0.0, 1.5, 2.0], dtype=np.float32)
FAR = np.array([1.0, 4.0, 2.0], dtype=np.float32)  # the last ray has a zero-length segment (a miss)


@pytest.mark.parametrize("seed", [None, 3])
def test_stratified_intervals_tile_near_to_far(seed) -> None:
    rng = None if seed is None else np.random.default_rng(seed)
    starts, ends = nr.stratified_samples(NEAR, FAR, 8, rng)
    assert starts.shape == ends.shape == (3, 8) and starts.dtype == np.float32
    np.testing.assert_array_equal(starts[:, 0], NEAR)
    np.testing.assert_array_equal(ends[:, -1], FAR)
    np.testing.assert_array_equal(ends[:, :-1], starts[:, 1:])
    assert np.all(ends[:2] > starts[:2]) and np.all(ends[2] == starts[2])


def test_stratified_jitter_keeps_each_midpoint_in_its_bin() -> None:
    starts, ends = nr.stratified_samples(NEAR, FAR, 8, np.random.default_rng(0))
    bin_width = ((FAR - NEAR) / 8)[:, None]
    bin_lo = NEAR[:, None] + np.arange(8) * bin_width
    mids = 0.5 * (starts + ends)
    assert np.all(mids >= bin_lo - 1e-6) and np.all(mids <= bin_lo + bin_width + 1e-6)
    assert not np.allclose(mids[:2], (bin_lo + 0.5 * bin_width)[:2])  # it did move
    again, _ = nr.stratified_samples(NEAR, FAR, 8, np.random.default_rng(0))
    np.testing.assert_array_equal(starts, again)


def test_stratified_without_rng_gives_equal_intervals_and_bin_midpoints() -> None:
    starts, ends = nr.stratified_samples(NEAR, FAR, 4, None)
    np.testing.assert_allclose(0.5 * (starts + ends)[1], [1.8125, 2.4375, 3.0625, 3.6875], atol=1e-6)
    np.testing.assert_allclose(ends - starts, np.repeat(((FAR - NEAR) / 4)[:, None], 4, axis=1), atol=1e-6)
    points = nr.sample_points([[0, 0, -3]], [[0, 0, 1]], starts[1:2], ends[1:2])
    np.testing.assert_allclose(points[0, :, 2], np.array([1.8125, 2.4375, 3.0625, 3.6875]) - 3, atol=1e-6)


def test_stratified_rejects_bad_input() -> None:
    with pytest.raises(DataError, match="n_samples"):
        nr.stratified_samples(NEAR, FAR, 0)
    with pytest.raises(DataError, match="far >= near"):
        nr.stratified_samples(FAR, NEAR, 4)


# ----------------------------------------------------------------------------- density and weights


def laplace_density_reference(sdf: np.ndarray, beta: float) -> np.ndarray:
    """sigma = Psi(-sdf) / beta with the Laplace(0, beta) CDF written piecewise."""
    x = -sdf
    cdf = np.where(x <= 0, 0.5 * np.exp(np.minimum(x, 0) / beta), 1 - 0.5 * np.exp(-np.maximum(x, 0) / beta))
    return cdf / beta


@pytest.mark.parametrize("beta", [0.01, 0.1, 0.5])
def test_laplace_density_matches_the_piecewise_formula(beta: float) -> None:
    sdf = np.linspace(-1.0, 1.0, 201)
    got = nr.laplace_density(to_torch64(sdf), torch.tensor(beta, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, laplace_density_reference(sdf, beta), rtol=1e-6, atol=1e-12)
    assert got[100] == pytest.approx(1 / (2 * beta))  # sdf = 0: on the surface


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_laplace_density_is_stable_for_tiny_beta(dtype) -> None:
    beta = torch.tensor(1e-3, dtype=dtype, requires_grad=True)
    sdf = torch.tensor([-1e3, -10.0, 10.0, 1e3], dtype=dtype, requires_grad=True)  # |s| / beta up to 1e6
    sigma = nr.laplace_density(sdf, beta)
    sigma.sum().backward()
    np.testing.assert_allclose(sigma.detach().numpy(), [1e3, 1e3, 0.0, 0.0], rtol=1e-6)
    assert torch.isfinite(sdf.grad).all() and torch.isfinite(beta.grad)


def test_render_weight_from_density_hand_computed_ray() -> None:
    # intervals [0, 1), [1, 1.5), [1.5, 3.5): deltas 1, 0.5, 2; sigmas 0.5, 2, 0.25: sigma * delta = 0.5, 1, 0.5
    starts, ends = to_torch64([[0.0, 1.0, 1.5]]), to_torch64([[1.0, 1.5, 3.5]])
    sigma = to_torch64([[0.5, 2.0, 0.25]])
    weights, transmittance, alpha = nr.render_weight_from_density(starts, ends, sigma)
    # alpha = 1 - exp(-0.5), 1 - exp(-1), 1 - exp(-0.5)
    np.testing.assert_allclose(alpha.numpy(), [[0.3934693403, 0.6321205588, 0.3934693403]], atol=1e-10)
    # T = 1, exp(-0.5), exp(-1.5)
    np.testing.assert_allclose(transmittance.numpy(), [[1.0, 0.6065306597, 0.2231301601]], atol=1e-10)
    # w = T * alpha = 0.3934693403, 0.6065306597 * 0.6321205588, 0.2231301601 * 0.3934693403
    np.testing.assert_allclose(weights.numpy(), [[0.3934693403, 0.3834004996, 0.0877948769]], atol=1e-10)
    assert weights.sum().item() == pytest.approx(1 - math.exp(-2.0), abs=1e-12)  # 0.8646647168


def test_accumulate_and_composite() -> None:
    weights = to_torch64([[0.25, 0.5], [0.0, 0.0]])
    values = to_torch64([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]])
    np.testing.assert_allclose(nr.accumulate_along_rays(weights, values).numpy(), [[1.75, 2.5], [0.0, 0.0]])
    opacity = nr.accumulate_along_rays(weights)
    np.testing.assert_allclose(opacity.numpy(), [[0.75], [0.0]])
