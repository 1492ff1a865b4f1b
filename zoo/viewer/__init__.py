"""``resfields view``: a fitted scene in the browser, on viser (the library nerfstudio's viewer is built on).

>>> # resfields view resfields/nerf-bunny --port 8080, then open http://127.0.0.1:8080/   # doctest: +SKIP

A NeRF is rendered from the camera the user drags, progressively (a small preview while the camera or
the time slider moves, the full size once it rests), as rgb, depth or normals, with its training
cameras as frustums; a video field plays as an image; an SDF or scene-flow field shows its mesh at
the chosen frame. Models load through :func:`~resfields.zoo.pretrained.from_pretrained` (a folder, a
zoo id or a Hub id; ``HF_HUB_OFFLINE`` applies). Modules: :mod:`.content` (what each task shows, NumPy
only), :mod:`.cameras` (browser camera <-> library camera), :mod:`.progressive` (the render thread),
:mod:`.app` (the viser scene and controls), :mod:`.command` (the command line).
"""

from __future__ import annotations

from .command import add_view_arguments, check_port, view_command

__all__ = ["add_view_arguments", "check_port", "view_command"]
