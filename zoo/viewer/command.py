"""``resfields view CHECKPOINT_OR_ID``: serve a fitted scene to the browser until Ctrl+C.

Everything cheap is checked before the model loads (the numbers, that viser is installed, that the
port is free), so a mistake is one line ``resfields: error: ...`` at once.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import socket
import sys
import threading
from typing import Any

from resfields.backends import INFERENCE_BACKENDS
from resfields.errors import DataError, ResFieldsError

from .app import ViewOptions

__all__ = ["add_view_arguments", "check_port", "view_command"]

_SMALLEST_SIDE = 8  # pixels: below this a view shows nothing recognisable


def add_view_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``resfields view``."""
    parser.add_argument("checkpoint", help="a run or checkpoint folder, a zoo id (resfields zoo list) or a Hub repo id")
    parser.add_argument("--revision", default=None, help="pin a Hub revision (branch, tag or commit)")
    parser.add_argument("--backend", choices=INFERENCE_BACKENDS, default="torch")
    parser.add_argument("--device", default=None, help="cpu (default), cuda or cuda:N")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8080, help="port to serve on (default 8080; 0: any free port)")
    parser.add_argument("--size", type=int, default=256, metavar="PX", help="nerf: longest side of a finished view")
    parser.add_argument("--preview-size", type=int, default=64, metavar="PX", help="nerf: longest side while moving")
    parser.add_argument("--mesh-resolution", type=int, default=64, metavar="R", help="sdf: marching-cubes grid R^3")
    parser.add_argument("--fps", type=float, default=4.0, help="frames per second of the Play button")
    parser.add_argument("--data", default=None, metavar="PATH", help="field tasks: your copy of a checkpoint's data")


def check_options(args: Any) -> ViewOptions:
    """The viewer's options from the parsed ``args``; DataError for a number out of range."""
    if not 0 <= args.port <= 65535:
        raise DataError(f"--port must be in [0, 65535], got {args.port}")
    for name in ("size", "preview_size"):
        if getattr(args, name) < _SMALLEST_SIDE:
            raise DataError(
                f"--{name.replace('_', '-')} must be at least {_SMALLEST_SIDE} pixels, got {getattr(args, name)}"
            )
    if args.preview_size > args.size:
        raise DataError(f"--preview-size {args.preview_size} is larger than --size {args.size}")
    if args.mesh_resolution < 8:
        raise DataError(f"--mesh-resolution must be at least 8, got {args.mesh_resolution}")
    if not 0 < args.fps <= 60:
        raise DataError(f"--fps must be in (0, 60], got {args.fps}")
    return ViewOptions(
        size=args.size,
        preview=args.preview_size,
        mesh_resolution=args.mesh_resolution,
        mesh_preview=max(8, args.mesh_resolution // 2),
        fps=args.fps,
    )


def check_port(host: str, port: int) -> None:
    """DataError ``port P is in use`` if a server already listens on ``host``:``port``.

    viser would quietly move on to the next port, and the printed address would not be the one asked
    for. SO_REUSEADDR is set as viser's own server sets it, so a port left in TIME_WAIT by a viewer
    that just ended counts as free.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise DataError(f"--host {host}: no such address ({err.strerror})") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise DataError(f"port {port} is in use; choose another with --port (0: any free port)") from None
            if err.errno == errno.EACCES:
                raise DataError(
                    f"port {port} needs privileges to serve on; choose one above 1023 with --port"
                ) from None
            raise DataError(f"--host {host} --port {port}: cannot serve there ({err.strerror})") from None


def view_command(args: Any, ready: threading.Event | None = None, stop: threading.Event | None = None) -> int:
    """Run ``resfields view`` from parsed arguments (:func:`add_view_arguments`); serves until Ctrl+C or
    until ``stop`` is set. Prints the address once the viewer is up (and sets ``ready``)."""
    options = check_options(args)
    try:
        import viser
    except ImportError:
        raise ResFieldsError("resfields view needs viser: pip install 'resfields[viewer]'") from None
    check_port(args.host, args.port)
    from resfields.zoo.pretrained import from_pretrained

    from .app import Viewer
    from .content import content_for

    pretrained = from_pretrained(args.checkpoint, backend=args.backend, device=args.device, revision=args.revision)
    content = content_for(pretrained, args.checkpoint, data=args.data)
    with contextlib.redirect_stdout(io.StringIO()):  # viser's banner, whatever `verbose`; the line below says it
        server = viser.ViserServer(host=args.host, port=args.port, verbose=False)
    viewer = Viewer(server, content, options)
    host = f"[{args.host}]" if ":" in args.host else args.host
    n = content.n_frames
    print(
        f"resfields view: {args.checkpoint} ({pretrained.task}, {n} frame{'s' if n != 1 else ''}, {args.backend}) "
        f"at http://{host}:{server.get_port()}/ (Ctrl+C stops it)",
        flush=True,
    )
    if ready is not None:
        ready.set()
    try:
        (stop or threading.Event()).wait()
    except KeyboardInterrupt:
        pass
    finally:
        viewer.close()
        server.stop()
        sys.stdout.flush()
    return 0
