"""The ``resfields`` command line: ``conformance``, ``bench``, ``fit TASK``, ``eval RUN``, ``render RUN``."""

from __future__ import annotations

import argparse
import sys


def _conformance(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from resfields.backends import BACKENDS
    from resfields.conformance import format_table, run_suite, tolerance_note

    backends = BACKENDS if args.backend == "all" else (args.backend,)
    results = run_suite(backends, args.device, args.random, progress=lambda cases: tqdm(cases, leave=False))
    print(format_table(results, verbose=args.verbose))
    print(tolerance_note())
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _bench(argv: list[str]) -> int:
    from resfields.benchmarks.layer import main as bench_main

    return bench_main(argv)


def _render(args: argparse.Namespace) -> int:
    from resfields.tasks.common.media import write_video
    from resfields.tasks.nerf.task import export_mesh, render_novel_views

    if args.mesh is not None:
        print(f"wrote {export_mesh(args.run, args.frame, args.mesh, backend=args.backend, device=args.device)}")
    frame = None if args.time_sweep else args.frame
    images = render_novel_views(
        args.run, backend=args.backend, device=args.device, frame=frame, n_views=args.views, size=args.size
    )
    print(f"wrote {write_video(args.out, images, fps=args.fps)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resfields", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    conf = sub.add_parser("conformance", help="compare backends with the NumPy float64 reference")
    conf.add_argument("--backend", choices=("torch", "tinygrad", "all"), default="all")
    conf.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    conf.add_argument("--random", type=int, default=24, help="number of extra random layer cases")
    conf.add_argument("--verbose", action="store_true", help="print every case, not only failures")
    conf.set_defaults(func=_conformance)
    from resfields.tasks.common.cli import add_eval_parser, add_fit_parser

    add_fit_parser(sub)
    add_eval_parser(sub)
    render = sub.add_parser("render", help="render an orbit of novel views from a trained nerf run folder")
    render.add_argument("run", help="a run folder written by `resfields fit nerf`")
    render.add_argument("--backend", choices=("torch", "tinygrad"), default="torch")
    render.add_argument("--device", default=None)
    when = render.add_mutually_exclusive_group()
    when.add_argument("--frame", type=int, default=0, help="the frame to show (default 0)")
    when.add_argument("--time-sweep", action="store_true", help="advance one frame per view instead")
    render.add_argument("--views", type=int, default=24)
    render.add_argument("--size", type=int, default=96)
    render.add_argument("--fps", type=int, default=12)
    render.add_argument("--out", default="orbit.mp4", help=".mp4 or .gif")
    render.add_argument("--mesh", default=None, metavar="FILE.ply", help="also export --frame's mesh (128^3 grid)")
    render.set_defaults(func=_render)
    # `bench` owns its arguments (see `resfields bench --help`); main() forwards them untouched
    sub.add_parser("bench", help="layer and training-step benchmarks", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
