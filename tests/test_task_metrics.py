"""Task metrics: hand-computed PSNR / SSIM / Chamfer / normal consistency / flow values, SSIM against skimage,
and mesh metrics with an analytically known Chamfer distance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.metrics import structural_similarity

from resfields.errors import DataError, ShapeError
from resfields.tasks.common.metrics import (
    chamfer_l1,
    flow_metrics,
    mean_ssim,
    mesh_metrics,
    mse,
    normal_consistency,
    psnr,
    psnr_from_mse,
    sample_mesh_surface,
    ssim,
)

# Axis-aligned cube [-0.5, 0.5]^3, outward (counter-clockwise) winding.
CUBE_VERTICES = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
CUBE_FACES = np.array(
    [
        [0, 1, 3], [0, 3, 2],  # x = -0.5
        [4, 6, 7], [4, 7, 5],  # x = +0.5
        [0, 4, 5], [0, 5, 1],  # y = -0.5
        [2, 3, 7], [2, 7, 6],  # y = +0.5
        [0, 2, 6], [0, 6, 4],  # z = -0.5
        [1, 5, 7], [1, 7, 3],  # z = +0.5
    ]
)  # fmt: skip


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    channel_axis = -1 if a.ndim == 3 else None
    return structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=channel_axis, data_range=1
    )


# ----------------------------------------------------------------------------- MSE / PSNR


def test_mse_and_psnr_by_hand():
    pred, target = np.array([[0.0, 0.5]]), np.zeros((1, 2))
    assert mse(pred, target) == pytest.approx(0.125)
    assert psnr(pred, target) == pytest.approx(10.0 * math.log10(8.0))  # 9.0309 dB
    # 255-scale images with mse 100: 10 log10(255^2 / 100) = 28.1308 dB.
    assert psnr(np.full(4, 10.0), np.zeros(4), max_value=255.0) == pytest.approx(28.130803608679106)
    assert psnr_from_mse(0.01) == pytest.approx(20.0)
    assert psnr(np.ones((2, 3)), np.ones((2, 3))) == math.inf


def test_psnr_pools_the_mse_over_frames():
    # Frame errors 0.1 and 0.3: pooled mse = (0.01 + 0.09) / 2 = 0.05, not a mean of per-frame PSNRs.
    pred = np.stack([np.full((2, 2), 0.1), np.full((2, 2), 0.3)])
    assert psnr(pred, np.zeros_like(pred)) == pytest.approx(10.0 * math.log10(1.0 / 0.05))


def test_image_metric_errors():
    with pytest.raises(ShapeError, match="shape"):
        mse(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(DataError, match="NaN"):
        psnr(np.array([np.nan, 0.0]), np.zeros(2))
    with pytest.raises(DataError, match="mse"):
        psnr_from_mse(-1.0)
    with pytest.raises(ShapeError, match="empty"):
        mse(np.zeros(0), np.zeros(0))


# ----------------------------------------------------------------------------- SSIM


def test_ssim_identical_images_is_one():
    image = np.random.default_rng(1).random((16, 20, 3))
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)


def test_ssim_constant_images_by_hand():
    # Constant images have zero (co)variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = 0.01^2.
    a, b, c1 = 0.2, 0.6, 1e-4
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # 0.600099975...
    assert ssim(np.full((12, 12), a), np.full((12, 12), b)) == pytest.approx(expected, abs=1e-9)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    height=st.integers(11, 24),
    width=st.integers(11, 24),
    channels=st.sampled_from([0, 1, 3]),
    noise=st.floats(0.0, 0.5),
)
def test_ssim_matches_skimage(seed, height, width, channels, noise):
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 0 else (height, width, channels)
    a = rng.random(shape)
    b = np.clip(a + noise * rng.standard_normal(shape), 0.0, 1.0)
    assert ssim(a, b) == pytest.approx(_skimage_ssim(a, b), abs=1e-6)


def test_ssim_data_range_scales_with_the_images():
    rng = np.random.default_rng(2)
    a, b = rng.random((16, 16)), rng.random((16, 16))
    assert ssim(255.0 * a, 255.0 * b, data_range=255.0) == pytest.approx(ssim(a, b), abs=1e-12)


def test_mean_ssim_averages_frames():
    rng = np.random.default_rng(3)
    pred, target = rng.random((3, 12, 14, 3)), rng.random((3, 12, 14, 3))
    expected = np.mean([_skimage_ssim(p, t) for p, t in zip(pred, target, strict=True)])
    assert mean_ssim(pred, target) == pytest.approx(expected, abs=1e-6)


def test_ssim_errors():
    with pytest.raises(ShapeError, match="11 x 11"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(ShapeError, match="one image"):
        ssim(np.zeros((2, 12, 12, 3)), np.zeros((2, 12, 12, 3)))
    with pytest.raises(DataError, match="NaN"):
        ssim(np.full((12, 12), np.nan), np.zeros((12, 12)))


# ----------------------------------------------------------------------------- Chamfer / normal consistency


def test_chamfer_l1_by_hand():
    # A -> B: |(0,0,0) - (1,0,0)| = 1. B -> A: 1 and 2, mean 1.5. Chamfer = 0.5 * (1 + 1.5) = 1.25.
    assert chamfer_l1([[0.0, 0.0, 0.0]], [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]) == pytest.approx(1.25)
    # A -> B: 4 and 5 (a 3-4-5 triangle), mean 4.5. B -> A: 4. Chamfer = 4.25.
    assert chamfer_l1([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]], [[0.0, 4.0, 0.0]]) == pytest.approx(4.25)


@settings(max_examples=25, deadline=None)
@given(
    a=arrays(np.float64, st.tuples(st.integers(1, 12), st.just(3)), elements=st.floats(-10, 10)),
    b=arrays(np.float64, st.tuples(st.integers(1, 12), st.just(3)), elements=st.floats(-10, 10)),
)
def test_chamfer_l1_symmetric_and_zero_on_itself(a, b):
    assert chamfer_l1(a, b) == pytest.approx(chamfer_l1(b, a))
    assert chamfer_l1(a, a) == 0.0
    assert chamfer_l1(a, b) >= 0.0


def test_normal_consistency_by_hand():
    points_a = [[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]]
    normals_a = [[0.0, 0.0, 2.0], [1.0, 0.0, 0.0]]  # not unit on purpose
    points_b = [[0.0, 0.0, 1.0], [10.0, 0.0, 1.0], [11.5, 0.0, 0.0]]
    normals_b = [[0.0, 3.0, 3.0], [0.0, 0.0, -1.0], [-2.0, 0.0, 0.0]]
    # A -> B: a1 -> b1: |(0,0,1).(0,1,1)/sqrt2| = 1/sqrt2; a2 -> b2 (distance 1 < 1.5): 0. Mean 1/(2 sqrt2).
    # B -> A: b1 -> a1: 1/sqrt2; b2 -> a2: 0; b3 -> a2: |-1| = 1. Mean (1/sqrt2 + 1) / 3.
    expected = 0.5 * (1 / (2 * math.sqrt(2)) + (1 / math.sqrt(2) + 1) / 3)  # 0.461294...
    assert normal_consistency(points_a, normals_a, points_b, normals_b) == pytest.approx(expected)


def test_point_metric_errors():
    with pytest.raises(ShapeError, match=r"\(N, 3\)"):
        chamfer_l1(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ShapeError, match="empty"):
        chamfer_l1(np.zeros((0, 3)), np.zeros((4, 3)))
    with pytest.raises(DataError, match="NaN"):
        chamfer_l1(np.array([[0.0, np.nan, 0.0]]), np.zeros((1, 3)))
    with pytest.raises(DataError, match="zero-length"):
        normal_consistency(np.zeros((1, 3)), np.zeros((1, 3)), np.zeros((1, 3)), np.ones((1, 3)))
    with pytest.raises(ShapeError, match="normals_b"):
        normal_consistency(np.zeros((1, 3)), np.ones((1, 3)), np.zeros((2, 3)), np.ones((1, 3)))


# ----------------------------------------------------------------------------- mesh sampling and metrics


def test_sample_mesh_surface_is_area_weighted_and_on_the_faces():
    # Two triangles in the z = 0 plane with areas 0.5 and 4.5 (ratio 1 : 9), and a zero-area one.
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 0, 0], [8, 0, 0], [5, 3, 0], [9, 9, 9]], dtype=float)
    faces = np.array([[0, 1, 2], [3, 4, 5], [6, 6, 6]])
    points, normals = sample_mesh_surface(vertices, faces, 20_000, np.random.default_rng(0))
    assert points.shape == normals.shape == (20_000, 3)
    np.testing.assert_allclose(points[:, 2], 0.0)
    np.testing.assert_allclose(normals, np.tile([0.0, 0.0, 1.0], (20_000, 1)))
    small = points[:, 0] < 2.5
    # Binomial(20000, 0.1): standard deviation 0.0021 in the fraction.
    assert abs(small.mean() - 0.1) < 0.01
    # Inside the triangles (x, y >= 0 and below the hypotenuse) and uniform: the mean is the centroid.
    s, b = points[small], points[~small] - [5.0, 0.0, 0.0]
    assert np.all(s[:, :2] >= 0) and np.all(s[:, 0] + s[:, 1] <= 1 + 1e-12)
    assert np.all(b[:, :2] >= 0) and np.all(b[:, 0] + b[:, 1] <= 3 + 1e-12)
    np.testing.assert_allclose(s.mean(axis=0)[:2], [1 / 3, 1 / 3], atol=0.02)
    np.testing.assert_allclose(b.mean(axis=0)[:2], [1.0, 1.0], atol=0.03)


def test_sample_mesh_surface_same_seed_same_points():
    p1, _ = sample_mesh_surface(CUBE_VERTICES, CUBE_FACES, 50, 7)
    p2, _ = sample_mesh_surface(CUBE_VERTICES, CUBE_FACES, 50, np.random.default_rng(7))
    np.testing.assert_array_equal(p1, p2)


def test_cube_face_normals_point_outward():
    points, normals = sample_mesh_surface(CUBE_VERTICES, CUBE_FACES, 500, 0)
    # On a centred cube the outward normal has a positive dot product with the position.
    assert np.all(np.sum(points * normals, axis=1) > 0)


def test_mesh_metrics_against_itself():
    result = mesh_metrics(CUBE_VERTICES, CUBE_FACES, CUBE_VERTICES, CUBE_FACES, n_samples=30_000)
    # Two independent sample sets of the same surface: only the sampling gap (~0.5 / sqrt(density)) remains.
    assert 0.0 < result["chamfer_l1"] < 0.01
    assert result["normal_consistency"] > 0.98


def test_mesh_metrics_shifted_cube_has_the_analytic_chamfer():
    # B is the cube shifted by 0.1 along x; distances from A's surface to B's surface, face by face (area 1 each):
    #   x = -0.5: every point is 0.1 outside B's x = -0.4 face                          -> mean 0.1
    #   x = +0.5: inside B; nearest of B's x = 0.6 face (0.1) or a side face (0.5 - |y|, 0.5 - |z|):
    #             E[min(0.1, a, b)] with a, b ~ U[0, 0.5] = int_0^0.1 (1 - 2s)^2 ds = (1 - 0.8^3) / 6
    #   4 sides:  on B's surface except a strip of width 0.1 at distances 0.1 .. 0 -> mean 0.1 * 0.05 = 0.005 each
    # B -> A is the mirror image, so chamfer = (0.1 + (1 - 0.512) / 6 + 4 * 0.005) / 6 = 0.033556.
    analytic = (0.1 + (1.0 - 0.8**3) / 6.0 + 4 * 0.005) / 6.0
    shifted = CUBE_VERTICES + np.array([0.1, 0.0, 0.0])
    n = 30_000
    measured = mesh_metrics(shifted, CUBE_FACES, CUBE_VERTICES, CUBE_FACES, n_samples=n)["chamfer_l1"]
    sampling_gap = mesh_metrics(CUBE_VERTICES, CUBE_FACES, CUBE_VERTICES, CUBE_FACES, n_samples=n)["chamfer_l1"]
    # Nearest *samples* are never closer than the surface itself, and the excess is at most the gap between
    # samples of one surface (what the cube scores against itself).
    assert analytic - 1e-3 < measured < analytic + sampling_gap
    assert measured == pytest.approx(analytic, abs=0.006)


def test_mesh_metrics_empty_prediction_is_a_terrible_result_not_an_error():
    empty = mesh_metrics(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), CUBE_VERTICES, CUBE_FACES, n_samples=10)
    assert empty == {"chamfer_l1": math.inf, "normal_consistency": 0.0}
    flat = mesh_metrics(np.zeros((3, 3)), np.array([[0, 1, 2]]), CUBE_VERTICES, CUBE_FACES, n_samples=10)
    assert flat["chamfer_l1"] == math.inf


def test_mesh_metrics_errors():
    with pytest.raises(DataError, match="ground-truth"):
        mesh_metrics(CUBE_VERTICES, CUBE_FACES, np.zeros((0, 3)), np.zeros((0, 3), dtype=int), n_samples=10)
    with pytest.raises(DataError, match="face indices"):
        mesh_metrics(CUBE_VERTICES, CUBE_FACES + 10, CUBE_VERTICES, CUBE_FACES, n_samples=10)
    with pytest.raises(ShapeError, match="faces"):
        mesh_metrics(CUBE_VERTICES, CUBE_FACES[:, :2], CUBE_VERTICES, CUBE_FACES, n_samples=10)
    with pytest.raises(DataError, match="NaN"):
        mesh_metrics(CUBE_VERTICES * np.nan, CUBE_FACES, CUBE_VERTICES, CUBE_FACES, n_samples=10)


# ----------------------------------------------------------------------------- scene flow


def test_flow_metrics_by_hand():
    gt = np.array([[1.0, 0, 0], [0, 0, 0], [0, 2.0, 0], [0, 0, 0.5], [0, 0, 0]])
    pred = np.array([[1.04, 0, 0], [0, 0, 0], [0, 2.15, 0], [0.4, 0, 0.5], [0.07, 0, 0]])
    # point: epe,  relative -> strict, relax, outlier
    #   1:   0.04, 0.04     -> yes,    yes,   no
    #   2:   0,    0 (0/0)  -> yes,    yes,   no
    #   3:   0.15, 0.075    -> no,     yes,   no
    #   4:   0.4,  0.8      -> no,     no,    yes
    #   5:   0.07, inf      -> no,     yes,   yes (moving a static point is infinitely wrong, relatively)
    result = flow_metrics(pred, gt)
    assert result["epe"] == pytest.approx((0.04 + 0.0 + 0.15 + 0.4 + 0.07) / 5)
    assert result["acc_strict"] == pytest.approx(2 / 5)
    assert result["acc_relax"] == pytest.approx(4 / 5)
    assert result["outliers"] == pytest.approx(2 / 5)
    assert set(result) == {"epe", "acc_strict", "acc_relax", "outliers"}


def test_flow_metrics_errors():
    with pytest.raises(ShapeError, match=r"\(N, 3\)"):
        flow_metrics(np.zeros((4, 2)), np.zeros((4, 2)))
    with pytest.raises(ShapeError, match="shape"):
        flow_metrics(np.zeros((4, 3)), np.zeros((5, 3)))
    with pytest.raises(DataError, match="NaN"):
        flow_metrics(np.full((1, 3), np.nan), np.zeros((1, 3)))
