"""What the viewer shows of each task, as NumPy, with no viewer library in sight.

* nerf: :class:`NerfContent`, views rendered from any camera (rgb, depth or normals) at a frame;
* video: :class:`VideoContent`, the field's reconstruction of a frame as an image;
* sdf: :class:`SdfContent`, the marching-cubes mesh of the field's zero level at a frame;
* flow: :class:`FlowContent`, the first frame's surface carried along the field's forward flow.

Each has ``n_frames``, ``label`` and a ``kind`` ("views", "image" or "mesh") that tells the app how to
draw it. Rendering and queries go through one lock: a backend's model (and a NeRF's cache of occupancy
grids) is shared by every browser tab, and the viewer's threads must not interleave their calls.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from resfields.errors import CheckpointError, DataError
from resfields.spec import spec_differences
from resfields.tasks.common.cameras import Camera, overview_camera

__all__ = ["OUTPUTS", "FlowContent", "NerfContent", "SdfContent", "VideoContent", "content_for"]

OUTPUTS = ("rgb", "depth", "normals")  # what a NeRF view can show
Kind = Literal["views", "image", "mesh"]
_MODEL_LOCK = threading.Lock()


@dataclass
class NerfContent:
    """A fitted dynamic NeRF (:class:`~resfields.tasks.nerf.fitted.FittedNerf`) rendered from the user's camera."""

    scene: Any
    label: str
    kind: Kind = "views"

    @property
    def n_frames(self) -> int:
        return int(self.scene.n_frames)

    @property
    def training_cameras(self) -> dict[str, Camera]:
        """The training data's cameras by name (``cam00``, ...), as stored in the checkpoint."""
        return dict(self.scene.dataset_cameras or {})

    def start_position(self) -> np.ndarray:
        """(3,) where the first view stands: a three-quarter view of the bunny
        (:func:`~resfields.tasks.common.cameras.overview_camera`) turned off the training camera that
        stands on the default view's line, and stepped back to 6 units so that the training cameras
        (about 3 units out) are in sight around the scene."""
        center = overview_camera(azimuth_degrees=250.0, elevation_degrees=30.0).center
        return 6.0 * center / np.linalg.norm(center)

    def render(self, camera: Camera, frame: int, output: str) -> np.ndarray:
        """``output`` ("rgb", "depth" or "normals") of ``camera`` at ``frame`` -> (H, W, 3) float in [0, 1],
        coloured as ``resfields render`` colours it (depth grey, near bright; normals over white)."""
        from resfields.tasks.nerf.views import colour_outputs

        with _MODEL_LOCK:
            views = self.scene.render(camera, frame=frame)
        return colour_outputs({key: value[None] for key, value in views.items()}, [output])[0]


@dataclass
class VideoContent:
    """A video field: frame ``f`` is the field at every pixel of the training video's grid."""

    pretrained: Any
    task: Any
    label: str
    kind: Kind = "image"
    _frames: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def n_frames(self) -> int:
        return int(self.task.data.n_frames)

    def image(self, frame: int) -> np.ndarray:
        """Frame ``frame`` as the field reconstructs it: (H, W, 3) float in [0, 1] (kept once computed)."""
        from resfields.tasks.common.config import field_keys

        if frame not in self._frames:
            data = self.task.data
            ids = np.full(data.height * data.width, frame, dtype=np.int64)
            keys = field_keys(self.task.model, ids, data.n_frames)
            with _MODEL_LOCK:
                rgb = self.pretrained.predict(data.frame_coordinates(frame), **keys)
            self._frames[frame] = np.clip(rgb.reshape(data.height, data.width, 3), 0.0, 1.0)
        return self._frames[frame]


@dataclass
class SdfContent:
    """A temporal SDF field: the mesh of its zero level set over [-1, 1]^3 at a frame."""

    pretrained: Any
    task: Any
    label: str
    kind: Kind = "mesh"
    _meshes: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def n_frames(self) -> int:
        return int(self.task.sequence.n_frames)

    def mesh(self, frame: int, resolution: int) -> tuple[np.ndarray, np.ndarray]:
        """Marching cubes of the field at ``frame`` on a ``resolution``^3 grid: vertices (V, 3), faces (F, 3)
        (both empty when the field has no zero crossing)."""
        from resfields.tasks.common.config import time_and_points
        from resfields.tasks.common.geometry import extract_mesh, grid_points

        key = (frame, resolution)
        if key not in self._meshes:
            points = grid_points(resolution)
            ids = np.full(len(points), frame, dtype=np.int64)
            with _MODEL_LOCK:
                values = self.pretrained.predict(**time_and_points(self.task.model, ids, points, self.n_frames))
            self._meshes[key] = extract_mesh(values[:, 0].reshape(resolution, resolution, resolution))
        return self._meshes[key]


@dataclass
class FlowContent:
    """A scene-flow field (forward and backward 3D flow per point and frame): the first frame's mesh,
    moved frame by frame along the field's forward flow, so frame ``f`` shows where the field carries
    the surface. A flow field has no level set of its own to mesh."""

    pretrained: Any
    task: Any
    label: str
    kind: Kind = "mesh"
    _vertices: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def n_frames(self) -> int:
        return int(self.task.sequence.n_frames)

    def mesh(self, frame: int, resolution: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The carried mesh at ``frame``: vertices (V, 3), faces (F, 3) of the sequence's shared topology.
        ``resolution`` is ignored (there is no grid)."""
        from resfields.tasks.common.config import time_and_points

        sequence = self.task.sequence
        if not self._vertices:
            self._vertices.append(np.asarray(sequence.vertices[0], dtype=np.float32))
        while len(self._vertices) <= frame:  # each frame's flow starts from the previous frame's points
            f, points = len(self._vertices) - 1, self._vertices[-1]
            ids = np.full(len(points), f, dtype=np.int64)
            with _MODEL_LOCK:
                flow = self.pretrained.predict(**time_and_points(self.task.model, ids, points, self.n_frames))
            self._vertices.append((points + flow[:, :3]).astype(np.float32))  # columns 0-2: the forward flow
        return self._vertices[frame], np.asarray(sequence.faces[0])


Content = NerfContent | VideoContent | SdfContent | FlowContent


def content_for(pretrained: Any, label: str, data: str | None = None) -> Content:
    """What to show of ``pretrained`` (a :class:`~resfields.zoo.pretrained.Pretrained`), named ``label``.

    Field tasks rebuild their task from the run config, as ``resfields eval`` does: the embedded data by
    default, or ``data`` (a path) for a checkpoint trained on a file of its own; a data path stored in a
    checkpoint is never read on its own (a checkpoint from elsewhere could name any file here).

    Raises:
        DataError: a field checkpoint trained on a file and no ``data`` given.
        CheckpointError: a task the viewer does not know, or data whose field is not the stored one.
    """
    task_name = pretrained.task
    if task_name == "nerf":
        return NerfContent(pretrained.scene, label)
    kinds = {"video": VideoContent, "sdf": SdfContent, "flow": FlowContent}
    if task_name not in kinds:
        raise CheckpointError(f"{label}: the viewer shows tasks {['nerf', *kinds]}, not {task_name!r}")
    from resfields.tasks import get_task

    run = pretrained.run
    source = getattr(run.data, "source", None)
    if data is not None:
        run = replace(run, data=replace(run.data, source=data))
    elif source is not None:
        raise DataError(
            f"{label} was trained on data from {source!r}, and the viewer reads no file that a checkpoint names: "
            "pass --data PATH with your copy of that data"
        )
    task = get_task(run.task)(run.data, run.model)
    if task.field_spec() != pretrained.checkpoint.spec:
        differences = spec_differences(pretrained.checkpoint.spec, task.field_spec())
        raise CheckpointError(f"{label}: its field does not fit this data ({differences})")
    return kinds[task_name](pretrained, task, label)
