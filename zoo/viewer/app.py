"""The viser app: controls (frame slider, play, output), the scene (views, an image or a mesh) and its updates.

* nerf ("views"): each browser tab renders from its own camera, progressively (:mod:`.progressive`),
  into the viewport's background; the training cameras are frustums (click one to look through it).
* video ("image"): the reconstructed frame as an image plane.
* sdf, flow ("mesh"): the mesh of the chosen frame, a coarse grid first for sdf while the slider moves.

The status line of each tab names what it last drew, e.g. ``Rendered frame 3 at 256×144 (full) in
1.20 s``; a test (and a user) can tell a preview from the finished image by it.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from resfields.tasks.common.cameras import Camera, overview_camera

from .cameras import pose_of, viewport_camera
from .content import OUTPUTS, Content, FlowContent
from .progressive import Progressive

__all__ = ["ViewOptions", "Viewer"]

_MESH_COLOUR = (214, 178, 140)


@dataclass(frozen=True)
class ViewOptions:
    """``size``/``preview``: longest image side (pixels) of a finished / moving NeRF view;
    ``mesh_resolution``/``mesh_preview``: marching-cubes grids of an SDF; ``fps``: frames per second of Play."""

    size: int = 256
    preview: int = 64
    mesh_resolution: int = 64
    mesh_preview: int = 32
    fps: float = 4.0


def _uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float in [0, 1] -> uint8, as viser sends images."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class Viewer:
    """``content`` on ``server`` (a ``viser.ViserServer``). :meth:`close` stops its threads.

    ``frame`` (slider), ``play`` (button) and, for video and meshes, ``status`` (the shared status line)
    are the viser handles; a NeRF's status lines are per tab."""

    def __init__(self, server: Any, content: Content, options: ViewOptions) -> None:
        self.server, self.content, self.options = server, content, options
        self._renderers: dict[int, tuple[Progressive, Any]] = {}  # client id -> (renderer, its state)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        server.scene.set_up_direction("+z")  # the tasks' scenes stand on world z
        self._add_controls()
        if content.kind == "views":
            self._add_views()
        elif content.kind == "image":
            self._add_image()
        else:
            self._add_mesh()
        self._player = threading.Thread(target=self._play, name="resfields-viewer-play", daemon=True)
        self._player.start()

    # ------------------------------------------------------------------ controls shared by every task

    def _add_controls(self) -> None:
        gui, n = self.server.gui, self.content.n_frames
        gui.add_markdown(f"**{self.content.label}** · {n} frame{'s' if n != 1 else ''}")
        self.frame = gui.add_slider("Frame", min=0, max=max(n - 1, 1), step=1, initial_value=0, disabled=n == 1)
        self.play = gui.add_button("Play", disabled=n == 1)
        self._playing = False

        @self.play.on_click
        def _(_: Any) -> None:
            self._playing = not self._playing
            self.play.label = "Pause" if self._playing else "Play"

        self.frame.on_update(lambda _: self._changed())

    def _play(self) -> None:
        """Advance the frame slider while Play is on. Frames come faster than full renders, so a NeRF plays
        as previews; the frame that Pause stops on is drawn in full."""
        while not self._stop.wait(1.0 / self.options.fps):
            if self._playing:
                self.frame.value = (int(self.frame.value) + 1) % self.content.n_frames

    def _changed(self) -> None:
        """A control changed: every tab wants its picture again."""
        with self._lock:
            renderers = list(self._renderers.values())
        for renderer, state in renderers:
            renderer.request(state())

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            renderers, self._renderers = list(self._renderers.values()), {}
        for renderer, _ in renderers:
            renderer.close(timeout=5.0)

    def _start_view(self, position: np.ndarray, fov_y: float) -> None:
        """Open new tabs at ``position`` (3,), looking at the scene's centre with a vertical ``fov_y`` (radians)."""
        initial = self.server.initial_camera
        initial.position = tuple(float(v) for v in position)
        initial.look_at = (0.0, 0.0, 0.0)
        initial.up = (0.0, 0.0, 1.0)
        initial.fov = fov_y

    def _track(self, key: int, renderer: Progressive, state: Any) -> None:
        with self._lock:
            self._renderers[key] = (renderer, state)
        renderer.request(state())

    # ------------------------------------------------------------------ nerf: rendered views per tab

    def _add_views(self) -> None:
        content = self.content
        self.output = self.server.gui.add_dropdown("Output", OUTPUTS, initial_value="rgb")
        self.output.on_update(lambda _: self._changed())
        show = self.server.gui.add_checkbox("Training cameras", initial_value=True)
        frustums = [self._add_frustum(name, camera) for name, camera in content.training_cameras.items()]

        @show.on_update
        def _(_: Any) -> None:
            for frustum in frustums:
                frustum.visible = show.value

        self._start_view(content.start_position(), math.radians(40.0))
        self.server.on_client_connect(self._connect_view)
        self.server.on_client_disconnect(self._disconnect)

    def _add_frustum(self, name: str, camera: Camera) -> Any:
        wxyz, position, fov, aspect = pose_of(camera)
        frustum = self.server.scene.add_camera_frustum(
            f"/training_cameras/{name}",
            fov=fov,
            aspect=aspect,
            scale=0.15,
            thickness=0.008,
            color=(70, 70, 70),
            wxyz=wxyz,
            position=position,
        )

        @frustum.on_click
        def _(event: Any) -> None:  # look through the training camera
            with event.client.atomic():
                event.client.camera.wxyz, event.client.camera.position = wxyz, position
                event.client.camera.fov = fov

        return frustum

    def _connect_view(self, client: Any) -> None:
        status = client.gui.add_markdown("Rendering…")
        options = self.options

        def state() -> tuple:
            camera = client.camera
            return (
                tuple(np.round(camera.wxyz, 6)),
                tuple(np.round(camera.position, 6)),
                round(float(camera.fov), 6),
                round(float(camera.aspect), 4),
                int(self.frame.value),
                str(self.output.value),
            )

        def render(snapshot: tuple, level: int) -> np.ndarray:
            wxyz, position, fov, aspect, frame, output = snapshot
            return self.content.render(viewport_camera(wxyz, position, fov, aspect, level), frame, output)

        def publish(image: np.ndarray, snapshot: tuple, level: int, seconds: float) -> None:
            h, w = image.shape[:2]
            client.scene.set_background_image(_uint8(image), format="jpeg", jpeg_quality=92)
            quality = "full" if level == options.size else "preview"
            status.content = f"Rendered frame {snapshot[4]} at {w}×{h} ({quality}) in {seconds:.2f} s"

        renderer = Progressive(render, publish, (options.preview, options.size))
        client.camera.on_update(lambda _: renderer.request(state()))
        self._track(client.client_id, renderer, state)

    def _disconnect(self, client: Any) -> None:
        with self._lock:
            entry = self._renderers.pop(client.client_id, None)
        if entry is not None:
            entry[0].close(timeout=0)

    # ------------------------------------------------------------------ video: one image plane

    def _add_image(self) -> None:
        first = self.content.image(0)
        h, w = first.shape[:2]
        # viser lays an image in its x-y plane with the columns along +x and the rows along +y (OpenCV's
        # image axes), so a camera on -z with -y up sees it upright and unmirrored
        handle = self.server.scene.add_image("/video", _uint8(first), render_width=2.0 * w / h, render_height=2.0)
        self.status = status = self.server.gui.add_markdown("")
        self.server.scene.set_up_direction("-y")
        initial = self.server.initial_camera
        initial.position, initial.look_at, initial.up = (0.0, 0.0, -2.6), (0.0, 0.0, 0.0), (0.0, -1.0, 0.0)

        def publish(image: np.ndarray, snapshot: tuple, level: int, seconds: float) -> None:
            handle.image = _uint8(image)
            status.content = (
                f"Rendered frame {snapshot[0]} at {image.shape[1]}×{image.shape[0]} (full) in {seconds:.2f} s"
            )

        self._shared(lambda snapshot, level: self.content.image(snapshot[0]), publish, (0,))

    def _shared(self, render: Any, publish: Any, levels: tuple[int, ...]) -> None:
        """One renderer for the whole scene (what every tab sees), driven by the frame slider."""
        self._track(-1, Progressive(render, publish, levels), lambda: (int(self.frame.value),))

    # ------------------------------------------------------------------ sdf, flow: the frame's mesh

    def _add_mesh(self) -> None:
        self.status = status = self.server.gui.add_markdown("")
        camera = overview_camera()
        self._start_view(camera.center, pose_of(camera)[2])
        options = self.options
        # an sdf is meshed on a coarse grid first; a flow's mesh is the data's own, at one cost
        grids = (0,) if isinstance(self.content, FlowContent) else (options.mesh_preview, options.mesh_resolution)

        def publish(mesh: tuple[np.ndarray, np.ndarray], snapshot: tuple, level: int, seconds: float) -> None:
            vertices, faces = mesh
            frame = snapshot[0]
            if len(faces) == 0:
                self.server.scene.remove_by_name("/mesh")
                status.content = f"Frame {frame}: the field has no surface in [-1, 1]^3"
                return
            self.server.scene.add_mesh_simple("/mesh", vertices.astype(np.float32), faces, color=_MESH_COLOUR)
            quality = "full" if level == grids[-1] else "preview"
            status.content = f"Meshed frame {frame}: {len(faces)} faces ({quality}) in {seconds:.2f} s"

        self._shared(lambda snapshot, level: self.content.mesh(snapshot[0], level), publish, grids)
