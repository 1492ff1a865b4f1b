"""The ``resfields`` command line: ``conformance``, ``bench``, ``fit TASK``, ``eval RUN``, ``render RUN``,
``view ID``."""

from __future__ import annotations

import argparse
import sys

from resfields.backends import BACKENDS
from resfields.errors import ResFieldsError, SpecError


def _conformance(args: argparse.Namespace) -> int:
    if args.checkpoint is not None:
        from resfields.report import report as show
        from resfields.zoo.check import check_checkpoint

        backends = BACKENDS if args.backend == "all" else (args.backend,)
        report = check_checkpoint(
            args.checkpoint, backends, device=None if args.device == "cpu" else args.device, size=args.size
        )
        lines = [report["summary"]]
        for name, result in report["backends"].items():
            numbers = ", ".join(f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, float))
            lines.append(f"  {name}: {'passed' if result['passed'] else 'FAILED'} ({numbers})")
        show(report, lines, as_json=args.json)
        return 0 if report["passed"] else 1
    from tqdm import tqdm

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
    from resfields.tasks.nerf.views import render_command

    return render_command(args)


def _view(args: argparse.Namespace) -> int:
    from resfields.zoo.viewer import view_command

    return view_command(args)


def build_parser() -> argparse.ArgumentParser:
    from resfields import __version__

    parser = argparse.ArgumentParser(prog="resfields", description=__doc__)
    parser.add_argument("--version", action="version", version=f"resfields {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    conf = sub.add_parser("conformance", help="compare backends with the NumPy float64 reference")
    conf.add_argument("--backend", choices=(*BACKENDS, "all"), default="all")
    conf.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    conf.add_argument("--random", type=int, default=24, help="number of extra random layer cases")
    conf.add_argument("--verbose", action="store_true", help="print every case, not only failures")
    conf.add_argument(
        "--checkpoint", default=None, metavar="ID", help="check one checkpoint (zoo id, Hub id or folder) instead"
    )
    conf.add_argument("--size", type=int, default=32, help="--checkpoint: image size of the NeRF views compared")
    conf.add_argument("--json", action="store_true", help="--checkpoint: print the report as JSON")
    conf.set_defaults(func=_conformance)
    from resfields.tasks.common.cli import add_eval_parser, add_fit_parser

    add_fit_parser(sub)
    add_eval_parser(sub)
    from resfields.zoo.cli import add_zoo_parser

    add_zoo_parser(sub)
    from resfields.tasks.nerf.views import add_render_arguments

    render = sub.add_parser("render", help="render novel views (RGB, depth, normals) of a trained nerf run folder")
    add_render_arguments(render)
    render.set_defaults(func=_render)
    from resfields.zoo.viewer import add_view_arguments

    view = sub.add_parser("view", help="view a fitted scene in the browser (nerf, video, sdf, flow; needs viser)")
    add_view_arguments(view)
    view.set_defaults(func=_view)
    # `bench` owns its arguments (see `resfields bench --help`); main() forwards them untouched
    sub.add_parser("bench", help="layer and training-step benchmarks", add_help=False)
    return parser


def check_device(backend: str, device: str | None) -> None:
    """SpecError unless ``backend`` ("torch", "tinygrad", "numpy" or "all") can run on ``device`` here.

    Checked before any work (the same check each backend makes when it builds a model), so
    ``--device cuda`` on a machine without a GPU is one line naming the devices there are.
    """
    if device is None:
        return
    from resfields.backends import get_backend

    for name in BACKENDS if backend == "all" else (backend,):
        try:
            get_backend(name).check_device(device)
        except SpecError as err:  # name the option the user typed
            raise SpecError(f"--device {device}: {err}") from None


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Bad input (a library error) and a failed file operation on a user's path (permission denied, a
    full disk, ...) print one line ``resfields: error: ...`` and return 2.
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "device"):
            check_device(getattr(args, "backend", "torch"), args.device)
        if args.command in ("eval", "render"):  # ids resolve through the zoo, which the tasks' commands never import
            from resfields.zoo.pretrained import resolve

            args.resolve = lambda: resolve(args.run, revision=args.revision)  # called where the command needs it
        return args.func(args)
    except ResFieldsError as err:  # bad input: one line naming the problem, no traceback
        print(f"resfields: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `resfields zoo list | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except OSError as err:
        if err.filename is None:  # not about a path the user gave: a bug, keep its traceback
            raise
        print(f"resfields: error: {err.filename}: {err.strerror or err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
