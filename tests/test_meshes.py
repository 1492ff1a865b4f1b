"""Mesh sequences: readers and writers, the deforming bunny, surface sampling, signed distances, marching cubes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resfields.errors import DataError, FrameError, ShapeError
from resfields.tasks.common import bunny as embedded
from resfields.tasks.common import geometry, meshio, sequence, sources

# The cube [-1, 1]^3, triangles wound counter-clockwise seen from outside (outward normals).
CUBE_V = np.array([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])
CUBE_F = np.array(
    [
        [0, 1, 3], [0, 3, 2],  # x = -1
        [4, 6, 7], [4, 7, 5],  # x = +1
        [0, 4, 5], [0, 5, 1],  # y = -1
        [2, 3, 7], [2, 7, 6],  # y = +1
        [0, 2, 6], [0, 6, 4],  # z = -1
        [1, 5, 7], [1, 7, 3],  # z = +1
    ]
)  # fmt: skip

TETRA_V = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
TETRA_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def box_sdf(points: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Exact SDF of the centred box with half-extents ``half``."""
    q = np.abs(points) - half
    return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)


def edge_counts(faces: np.ndarray) -> np.ndarray:
    """How many faces share each undirected edge (independent of geometry.is_watertight)."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return np.unique(edges, axis=0, return_counts=True)[1]


@pytest.fixture(scope="module")
def bunny() -> tuple[np.ndarray, np.ndarray]:
    return embedded.load_bunny()


# ----------------------------------------------------------------------------- reading and writing


@pytest.mark.parametrize("suffix", [".ply", ".obj"])
def test_write_read_round_trip_is_exact(tmp_path: Path, suffix: str, rng: np.random.Generator) -> None:
    v = rng.normal(size=(4, 3))
    path = tmp_path / f"tetra{suffix}"
    meshio.write_mesh(path, v, TETRA_F)
    v2, f2 = meshio.read_mesh(path)
    assert v2.dtype == np.float64 and f2.dtype == np.int64
    if suffix == ".ply":
        np.testing.assert_array_equal(v2, v)
    else:  # pcu parses OBJ coordinates as float32
        np.testing.assert_allclose(v2, v, rtol=1e-7, atol=1e-7)
    np.testing.assert_array_equal(f2, TETRA_F)


@pytest.mark.parametrize("suffix", [".ply", ".obj"])
def test_a_failed_mesh_write_keeps_the_previous_file(
    tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer creates its file, writes part of it and fails: ``path`` keeps the previous mesh, no
    temporary file stays behind, and the error is one DataError naming ``path``."""
    import point_cloud_utils as pcu

    path = tmp_path / f"mesh{suffix}"
    meshio.write_mesh(path, TETRA_V, TETRA_F)
    before = path.read_bytes()
    written = []

    def failing(target: str | Path, *args: object, **kwargs: object) -> None:
        Path(target).write_bytes(b"half a mesh")
        written.append(Path(target))
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(meshio, "_write_obj", failing)
    monkeypatch.setattr(pcu, "save_mesh_vf", failing)
    with pytest.raises(DataError, match=rf"mesh\{suffix}: cannot write mesh \(RuntimeError: disk on fire\)"):
        meshio.write_mesh(path, TETRA_V + 1.0, TETRA_F)
    assert written and written[0] != path and written[0].parent == tmp_path  # the writer got a temporary file
    assert written[0].suffix == suffix  # with the suffix point-cloud-utils picks the format from
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    monkeypatch.undo()
    meshio.write_mesh(path, TETRA_V + 1.0, TETRA_F)  # and a later write replaces it
    np.testing.assert_allclose(meshio.read_mesh(path)[0], TETRA_V + 1.0, rtol=1e-7)


def test_read_mesh_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.ply"
    with pytest.raises(DataError, match=r"missing\.ply"):
        meshio.read_mesh(missing)
    corrupt = tmp_path / "corrupt.ply"
    corrupt.write_bytes(b"not a ply file\x00\x01")
    with pytest.raises(DataError, match=r"corrupt\.ply"):
        meshio.read_mesh(corrupt)
    points_only = tmp_path / "points.obj"
    points_only.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    with pytest.raises(DataError, match=r"points\.obj.*no faces"):
        meshio.read_mesh(points_only)
    with pytest.raises(DataError, match="unknown mesh suffix"):
        meshio.read_mesh(tmp_path / "mesh.stl")
    with pytest.raises(DataError, match="unknown mesh suffix"):
        meshio.write_mesh(tmp_path / "mesh.xyz", TETRA_V, TETRA_F)


def test_read_mesh_folder_uses_natural_order(tmp_path: Path) -> None:
    folder = tmp_path / "seq"
    folder.mkdir()
    for index, suffix in [(10, ".obj"), (2, ".ply"), (1, ".obj")]:
        meshio.write_mesh(folder / f"frame_{index}{suffix}", TETRA_V + index, TETRA_F)
    (folder / "notes.txt").write_text("not a mesh")
    seq = meshio.read_mesh_folder(folder)
    assert seq.name == "seq" and seq.n_frames == 3 and seq.shared_topology
    assert [float(v[0, 0]) for v in seq.vertices] == [1.0, 2.0, 10.0]


def test_read_mesh_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no \.ply or \.obj files"):
        meshio.read_mesh_folder(tmp_path)
    with pytest.raises(DataError, match="not found"):
        meshio.read_mesh_folder(tmp_path / "absent")


def tiny_sequence() -> sequence.MeshSequence:
    # Multiples of 1/4 are exact in float32, so the .anime round trip must be bit-exact.
    frames = [TETRA_V, TETRA_V + np.array([0.25, 0.0, -0.5]), TETRA_V * 1.5]
    return sequence.MeshSequence(frames, [TETRA_F] * 3, name="tiny")


def raw_anime(v0: np.ndarray, faces: np.ndarray, offsets: np.ndarray) -> bytes:
    header = np.array([len(offsets) + 1, len(v0), len(faces)], dtype="<i4")
    return (
        header.tobytes() + v0.astype("<f4").tobytes() + faces.astype("<i4").tobytes() + offsets.astype("<f4").tobytes()
    )


def test_anime_writer_round_trip_and_byte_layout(tmp_path: Path) -> None:
    seq = tiny_sequence()
    path = tmp_path / "tiny.anime"
    meshio.write_anime(path, seq)
    back = meshio.read_anime(path)
    assert back.n_frames == 3 and back.name == "tiny" and back.shared_topology
    for got, want in zip(back.vertices, seq.vertices, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(back.faces[0], TETRA_F)
    offsets = np.stack([v - TETRA_V for v in seq.vertices[1:]])
    assert path.read_bytes() == raw_anime(TETRA_V, TETRA_F, offsets)


def test_read_anime_of_independently_written_bytes(tmp_path: Path, rng: np.random.Generator) -> None:
    v0 = rng.normal(size=(5, 3)).astype(np.float32)
    faces = np.array([[0, 1, 2], [2, 3, 4]], dtype=np.int32)
    offsets = rng.normal(size=(2, 5, 3)).astype(np.float32)
    path = tmp_path / "raw.anime"
    path.write_bytes(raw_anime(v0, faces, offsets))
    seq = meshio.read_anime(path)
    assert seq.n_frames == 3
    np.testing.assert_array_equal(seq.vertices[0], v0.astype(np.float64))
    for i in (1, 2):
        np.testing.assert_array_equal(seq.vertices[i], v0.astype(np.float64) + offsets[i - 1].astype(np.float64))
        np.testing.assert_array_equal(seq.faces[i], faces)


def test_read_anime_rejects_wrong_sizes(tmp_path: Path) -> None:
    path = tmp_path / "cut.anime"
    meshio.write_anime(path, tiny_sequence())
    data = path.read_bytes()
    path.write_bytes(data[:-4])
    with pytest.raises(DataError, match=r"cut\.anime.*truncated"):
        meshio.read_anime(path)
    path.write_bytes(data + b"\x00")
    with pytest.raises(DataError, match=r"cut\.anime.*trailing"):
        meshio.read_anime(path)
    path.write_bytes(data[:8])
    with pytest.raises(DataError, match=r"cut\.anime.*header"):
        meshio.read_anime(path)
    bad_index = raw_anime(TETRA_V, np.array([[0, 1, 9]]), np.zeros((0, 4, 3)))
    path.write_bytes(bad_index)
    with pytest.raises(DataError, match=r"cut\.anime.*face indices"):
        meshio.read_anime(path)


def test_write_anime_needs_shared_topology(tmp_path: Path) -> None:
    seq = sequence.MeshSequence([TETRA_V, CUBE_V], [TETRA_F, CUBE_F])
    assert not seq.shared_topology
    with pytest.raises(DataError, match="shared-topology"):
        meshio.write_anime(tmp_path / "x.anime", seq)


def test_load_sequence_sources_and_subsampling(tmp_path: Path) -> None:
    frames = [TETRA_V + i for i in range(5)]
    path = tmp_path / "five.anime"
    meshio.write_anime(path, sequence.MeshSequence(frames, [TETRA_F] * 5))
    seq = sources.load_sequence(path, n_frames=2, frame_stride=2)
    assert seq.n_frames == 2
    assert [float(v[0, 0]) for v in seq.vertices] == [0.0, 2.0]
    assert sources.load_sequence(str(path), frame_stride=2).n_frames == 3  # frames 0, 2, 4
    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(3):
        meshio.write_mesh(folder / f"{i}.ply", frames[i], TETRA_F)
    assert sources.load_sequence(folder).n_frames == 3
    with pytest.raises(FrameError, match="only 3"):
        sources.load_sequence(path, n_frames=4, frame_stride=2)
    with pytest.raises(FrameError, match="frame_stride"):
        sources.load_sequence(path, frame_stride=0)
    (tmp_path / "seq.txt").write_text("x")
    with pytest.raises(DataError, match=r"seq\.txt.*unknown"):
        sources.load_sequence(tmp_path / "seq.txt")
    with pytest.raises(DataError, match=r"absent\.anime"):
        sources.load_sequence(tmp_path / "absent.anime")


# ----------------------------------------------------------------------------- data model


def test_mesh_sequence_validation() -> None:
    with pytest.raises(DataError, match=r"frame 1: face indices must lie in \[0, 4\)"):
        sequence.MeshSequence([TETRA_V, TETRA_V], [TETRA_F, TETRA_F + 1])
    nan = TETRA_V.copy()
    nan[2, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        sequence.MeshSequence([nan], [TETRA_F])
    with pytest.raises(DataError, match="2 vertex frames but 1 face frames"):
        sequence.MeshSequence([TETRA_V, TETRA_V], [TETRA_F])
    with pytest.raises(DataError, match="at least one frame"):
        sequence.MeshSequence([], [])
    with pytest.raises(ShapeError, match=r"\(V, 3\)"):
        sequence.MeshSequence([TETRA_V[:, :2]], [TETRA_F])
    with pytest.raises(DataError, match="integers"):
        sequence.MeshSequence([TETRA_V], [TETRA_F.astype(float)])


def test_mesh_sequence_frames_and_bounds() -> None:
    seq = sequence.MeshSequence([TETRA_V, TETRA_V * 2 - 1], [TETRA_F, TETRA_F.copy()])
    assert seq.n_frames == 2 and seq.shared_topology
    v, _ = seq.frame(1)
    np.testing.assert_array_equal(v, TETRA_V * 2 - 1)
    assert not v.flags.writeable  # frozen data
    lo, hi = seq.bounds()
    np.testing.assert_array_equal(lo, [-1.0, -1.0, -1.0])
    np.testing.assert_array_equal(hi, [1.0, 1.0, 1.0])
    for bad in (2, -1, True, 0.0):
        with pytest.raises(FrameError):
            seq.frame(bad)


def test_normalise_sequence_is_one_joint_similarity() -> None:
    seq = sequence.MeshSequence([TETRA_V * 10, TETRA_V * 10 + [4.0, 0.0, 0.0]], [TETRA_F] * 2)
    norm, center, scale = sequence.normalise_sequence(seq, extent=0.5)
    # Union box [0, 14] x [0, 10] x [0, 10]: centre (7, 5, 5), largest half-extent 7.
    np.testing.assert_allclose(center, [7.0, 5.0, 5.0])
    assert scale == pytest.approx(0.5 / 7.0)
    lo, hi = norm.bounds()
    np.testing.assert_allclose([lo[0], hi[0]], [-0.5, 0.5])
    np.testing.assert_allclose(norm.vertices[1] - norm.vertices[0], np.broadcast_to([4.0 * scale, 0, 0], (4, 3)))


# ----------------------------------------------------------------------------- the deforming bunny


def test_bunny_is_a_watertight_outward_manifold(bunny: tuple[np.ndarray, np.ndarray]) -> None:
    v, f = bunny
    assert embedded.bunny_path().name == "StanfordBunny.ply"
    assert len(v) > 40_000 and len(f) > 90_000
    assert set(edge_counts(f).tolist()) == {2}
    assert geometry.is_watertight(f)
    assert geometry.signed_volume(v, f) > 0
    # z is up: the tallest extent is z and the feet rest near z = 0.
    lo, hi = v.min(axis=0), v.max(axis=0)
    assert 0.0 <= lo[2] < 1.0 and hi[2] > 45.0


def test_deforming_bunny_moves_visibly_and_keeps_volume(bunny: tuple[np.ndarray, np.ndarray]) -> None:
    v, f = bunny
    seq = embedded.deforming_bunny(16)
    assert seq.n_frames == 16 and seq.shared_topology and seq.name == "bunny"
    size = float(np.max(v.max(axis=0) - v.min(axis=0)))
    steps = [np.linalg.norm(b - a, axis=1).max() / size for a, b in zip(seq.vertices, seq.vertices[1:], strict=False)]
    assert 0.005 < min(steps) and max(steps) < 0.1  # a few % of the size per frame
    volumes = np.array([geometry.signed_volume(vi, f) for vi in seq.vertices])
    # The motion is volume-preserving in the continuum; only the triangulation adds a tiny change.
    assert np.ptp(volumes) / volumes[0] < 1e-3
    assert abs(volumes[0] / geometry.signed_volume(v, f) - 1) < 1e-3
    np.testing.assert_array_equal(seq.vertices[0], embedded.deform(v, -1.0, box=(v.min(axis=0), v.max(axis=0))))
    # The feet (lowest vertices) barely move; the ears do.
    feet = v[:, 2] < v[:, 2].min() + 0.5
    assert np.abs(seq.vertices[-1][feet] - v[feet]).max() < 0.02 * size


def test_load_sequence_default_spans_the_motion(bunny: tuple[np.ndarray, np.ndarray]) -> None:
    v, _ = bunny
    seq = sources.load_sequence(None, n_frames=3)
    assert seq.n_frames == 3
    np.testing.assert_array_equal(seq.vertices[1], v)  # t = 0 is the rest pose
    assert not np.array_equal(seq.vertices[0], seq.vertices[2])


def test_normalise_bunny_fits_the_box(bunny: tuple[np.ndarray, np.ndarray]) -> None:
    seq = embedded.deforming_bunny(4)
    norm, center, scale = sequence.normalise_sequence(seq)
    lo, hi = norm.bounds()
    assert lo.min() >= -0.9 - 1e-12 and hi.max() <= 0.9 + 1e-12
    assert max(-lo.min(), hi.max()) == pytest.approx(0.9)
    np.testing.assert_allclose(norm.vertices[2] / scale + center, seq.vertices[2], atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(
    st.floats(-1.0, 1.0),
    st.lists(st.floats(-2.0, 2.0), min_size=3, max_size=3),
    st.floats(-2.0, 2.0),
    st.floats(0.0, 2 * math.pi),
)
def test_deform_moves_each_height_slice_rigidly(t: float, point: list[float], radius: float, angle: float) -> None:
    box = (np.array([-1.0, -1.0, 0.0]), np.array([1.0, 1.0, 2.0]))
    p = np.array(point)
    q = p + radius * np.array([math.cos(angle), math.sin(angle), 0.0])  # same height as p
    out = embedded.deform(np.stack([p, q]), t, box=box)
    np.testing.assert_allclose(out[:, 2], [p[2], q[2]])
    assert np.linalg.norm(out[0] - out[1]) == pytest.approx(abs(radius), abs=1e-12)
    # Unit Jacobian determinant (central differences): volume is preserved.
    eps = 1e-5
    jac = np.stack(
        [
            (embedded.deform((p + eps * e)[None], t, box=box) - embedded.deform((p - eps * e)[None], t, box=box))[0]
            / (2 * eps)
            for e in np.eye(3)
        ],
        axis=1,
    )
    assert np.linalg.det(jac) == pytest.approx(1.0, abs=1e-6)


def test_deform_rejects_bad_time() -> None:
    with pytest.raises(FrameError, match="finite"):
        embedded.deform(TETRA_V, float("nan"))


# ----------------------------------------------------------------------------- sampling


def test_sample_surface_on_a_box_is_area_weighted(rng: np.random.Generator) -> None:
    v = CUBE_V * [2.0, 0.5, 0.5]  # ends 1 x 1 (area 1 each), sides 4 x 1 (area 4 each): ends get 2/18
    points, face_ids, bary = geometry.sample_surface(v, CUBE_F, 20_000, rng)
    assert points.shape == (20_000, 3) and face_ids.shape == (20_000,) and bary.shape == (20_000, 3)
    np.testing.assert_allclose(bary.sum(axis=1), 1.0)
    assert bary.min() >= 0.0
    np.testing.assert_allclose(np.abs(box_sdf(points, np.array([2.0, 0.5, 0.5]))), 0.0, atol=1e-12)
    on_ends = np.mean(face_ids < 4)
    assert on_ends == pytest.approx(2 / 18, abs=0.01)
    np.testing.assert_array_equal(geometry.points_from_barycentric(v, CUBE_F, face_ids, bary), points)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 50))
def test_points_from_barycentric_follows_a_linear_motion(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    points, face_ids, bary = geometry.sample_surface(CUBE_V, CUBE_F, n, rng)
    affine = rng.normal(size=(3, 3))
    moved = geometry.points_from_barycentric(CUBE_V @ affine.T + 1.0, CUBE_F, face_ids, bary)
    # Barycentric interpolation commutes with affine maps, so surface points move exactly with them.
    np.testing.assert_allclose(moved, points @ affine.T + 1.0, atol=1e-12)


def test_bunny_surface_samples_stay_on_every_frame(bunny: tuple[np.ndarray, np.ndarray]) -> None:
    seq = embedded.deforming_bunny(3)
    v0, f = seq.frame(0)
    points, face_ids, bary = geometry.sample_surface(v0, f, 500, np.random.default_rng(1))
    assert np.abs(geometry.signed_distance(v0, f, points)).max() < 1e-9
    v2, _ = seq.frame(2)
    moved = geometry.points_from_barycentric(v2, f, face_ids, bary)
    assert np.abs(geometry.signed_distance(v2, f, moved)).max() < 1e-9
    assert np.linalg.norm(moved - points, axis=1).max() > 1.0  # they did move (file units, bunny ~50 tall)


def test_points_from_barycentric_rejects_bad_ids() -> None:
    with pytest.raises(DataError, match="face_ids"):
        geometry.points_from_barycentric(CUBE_V, CUBE_F, np.array([12]), np.array([[1.0, 0.0, 0.0]]))
    with pytest.raises(ShapeError):
        geometry.points_from_barycentric(CUBE_V, CUBE_F, np.array([0, 1]), np.array([[1.0, 0.0, 0.0]]))


# ----------------------------------------------------------------------------- signed distance


def test_signed_distance_on_the_cube_at_hand_chosen_points() -> None:
    points = np.array(
        [[0, 0, 0], [0.5, 0, 0], [3, 0, 0], [2, 2, 0], [2, 2, 2], [0, 0, -1.25], [1, 0.3, 0.2]], dtype=float
    )
    expected = [-1.0, -0.5, 2.0, math.sqrt(2), math.sqrt(3), 0.25, 0.0]
    np.testing.assert_allclose(geometry.signed_distance(CUBE_V, CUBE_F, points), expected, atol=1e-12)
    # The sign does not depend on how the faces are wound.
    np.testing.assert_allclose(geometry.signed_distance(CUBE_V, CUBE_F[:, ::-1], points), expected, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_signed_distance_matches_the_exact_box_sdf(seed: int) -> None:
    half = np.array([1.0, 0.5, 0.25])
    points = np.random.default_rng(seed).uniform(-2, 2, size=(200, 3))
    np.testing.assert_allclose(
        geometry.signed_distance(CUBE_V * half, CUBE_F, points), box_sdf(points, half), atol=1e-12
    )


def test_signed_distance_errors() -> None:
    with pytest.raises(DataError, match="not watertight"):
        geometry.signed_distance(CUBE_V, CUBE_F[:-1], np.zeros((1, 3)))
    with pytest.raises(DataError, match="NaN"):
        geometry.signed_distance(CUBE_V, CUBE_F, np.array([[0.0, np.nan, 0.0]]))
    with pytest.raises(ShapeError):
        geometry.signed_distance(CUBE_V, CUBE_F, np.zeros(3))
    assert geometry.signed_distance(CUBE_V, CUBE_F, np.zeros((0, 3))).shape == (0,)


def test_sdf_samples_on_the_cube(rng: np.random.Generator) -> None:
    v = CUBE_V * 0.5
    points, sdf = geometry.sdf_samples(v, CUBE_F, rng, n_surface=100, n_near=200, n_uniform=300, sigma=0.02, bound=1.0)
    assert points.shape == (600, 3) and sdf.shape == (600,)
    assert points.dtype == np.float32 and sdf.dtype == np.float32
    assert np.all(sdf[:100] == 0.0)
    exact = box_sdf(points.astype(np.float64), np.full(3, 0.5))
    np.testing.assert_allclose(sdf, exact, atol=1e-6)
    assert np.abs(sdf[100:300]).max() < 0.2  # near the surface
    assert np.abs(points[300:]).max() <= 1.0 and np.abs(sdf[300:]).max() > 0.3  # spread over the box
    with pytest.raises(DataError, match="sigma"):
        geometry.sdf_samples(v, CUBE_F, rng, 1, 1, 1, sigma=float("nan"))


@pytest.mark.slow
def test_sdf_samples_100k_on_the_bunny(bunny: tuple[np.ndarray, np.ndarray]) -> None:
    seq, _, _ = sequence.normalise_sequence(embedded.deforming_bunny(2))
    v, f = seq.frame(0)
    points, sdf = geometry.sdf_samples(v, f, np.random.default_rng(0), 25_000, 50_000, 25_000)
    assert points.shape == (100_000, 3) and np.isfinite(sdf).all()
    assert 0.3 < np.mean(sdf[25_000:75_000] < 0) < 0.7  # jitter lands on both sides of the surface
    assert 0.05 < np.mean(sdf[75_000:] < 0) < 0.5  # the bunny fills part of the box


# ----------------------------------------------------------------------------- grids and marching cubes


def test_grid_points_layout() -> None:
    grid = geometry.grid_points(3, bound=2.0)
    assert grid.shape == (27, 3) and grid.dtype == np.float32
    np.testing.assert_array_equal(grid[:4], [[-2, -2, -2], [-2, -2, 0], [-2, -2, 2], [-2, 0, -2]])
    np.testing.assert_array_equal(grid.reshape(3, 3, 3, 3)[2, 0, 1], [2, -2, 0])  # axis 0 = x
    with pytest.raises(ShapeError):
        geometry.grid_points(1)


def test_extract_mesh_of_a_sphere() -> None:
    resolution, radius, center = 40, 0.5, np.array([0.2, -0.1, 0.3])
    grid = geometry.grid_points(resolution).astype(np.float64)
    sdf = (np.linalg.norm(grid - center, axis=1) - radius).reshape(resolution, resolution, resolution)
    v, f = geometry.extract_mesh(sdf)
    assert v.dtype == np.float64 and f.dtype == np.int64 and len(f) > 1000
    spacing = 2.0 / (resolution - 1)
    assert np.abs(np.linalg.norm(v - center, axis=1) - radius).max() < spacing
    np.testing.assert_allclose(v.mean(axis=0), center, atol=0.01)  # axis order matches grid_points
    assert geometry.is_watertight(f)
    assert geometry.signed_volume(v, f) == pytest.approx(4 / 3 * math.pi * radius**3, rel=0.03)  # > 0: outward


def test_extract_mesh_of_a_plane_and_empty_and_bad_grids() -> None:
    grid = geometry.grid_points(5, bound=2.0).astype(np.float64)
    v, _ = geometry.extract_mesh((grid[:, 0] - 0.3).reshape(5, 5, 5), bound=2.0)
    np.testing.assert_allclose(v[:, 0], 0.3, atol=1e-12)
    v, f = geometry.extract_mesh(np.ones((4, 4, 4)))
    assert v.shape == (0, 3) and f.shape == (0, 3) and v.dtype == np.float64 and f.dtype == np.int64
    nan = np.zeros((4, 4, 4))
    nan[1, 2, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        geometry.extract_mesh(nan)
    with pytest.raises(ShapeError):
        geometry.extract_mesh(np.zeros((4, 4, 5)))
