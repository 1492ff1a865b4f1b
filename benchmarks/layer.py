"""Benchmarks: the torch ResField layer vs ``torch.nn.Linear``, and a Siren training step in
tinygrad (TinyJit) vs torch. Ratios are measured in one run, interleaved; nothing here is a test.

    resfields bench                 # everything, prints a Markdown table
    resfields bench --quick         # fewer repeats
    resfields bench --json out.json # also write the numbers

Peak memory is the growth of the process's peak resident set during one forward+backward, measured
in a fresh subprocess per (case, implementation) on CPU (Linux VmHWM, reset before the step), and
``torch.cuda.max_memory_allocated`` on CUDA.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from resfields.backends.torch import ResFieldLinear
from resfields.spec import frame_to_time

WIDTH, RANK, CAPACITY = 128, 10, 100


@dataclass(frozen=True)
class LayerCase:
    """x is ``shape + (128,)``; ``key`` builds frame ids or times for it, sorted by frame as a
    frame-major sampler gives them (the "random" order shuffles the rows, as a user's sampler would)."""

    name: str
    shape: tuple[int, ...]
    mode: str
    key: Callable[[torch.Generator], torch.Tensor]


def _sorted_rows(n_rows: int, n_frames: int) -> Callable[[torch.Generator], torch.Tensor]:
    return lambda g: torch.randint(0, n_frames, (n_rows,), generator=g).sort().values.view(n_rows, 1)


def _knot_times(n: int) -> Callable[[torch.Generator], torch.Tensor]:
    frames = lambda g: torch.randint(0, CAPACITY, (n,), generator=g).sort().values  # noqa: E731
    return lambda g: torch.tensor([frame_to_time(int(f), CAPACITY) for f in frames(g)], dtype=torch.float32)


CASES = [
    LayerCase("1100 rays x 64 samples, 100 frames", (1100, 64), "lookup", _sorted_rows(1100, 100)),
    LayerCase("100 rays x 1024, 60 frames", (100, 1024), "lookup", _sorted_rows(100, 60)),
    LayerCase("4096 rays x 32, 100 frames", (4096, 32), "lookup", _sorted_rows(4096, 100)),
    LayerCase("32 rows x 2048, 32 frames", (32, 2048), "lookup", lambda g: torch.arange(32).view(32, 1)),
    LayerCase("interp, 65536 per-sample times on knots", (65536,), "interpolation", _knot_times(65536)),
    LayerCase(
        "interp, 65536 per-sample times anywhere",
        (65536,),
        "interpolation",
        lambda g: (torch.rand(65536, generator=g) * 2 - 1).sort().values,
    ),
]
IMPLS = ("linear", "resfield-random", "resfield-sorted")


def _setup(case: LayerCase, impl: str, device: str):
    g = torch.Generator().manual_seed(0)
    if impl == "linear":
        layer = torch.nn.Linear(WIDTH, WIDTH, device=device)
    else:
        layer = ResFieldLinear(WIDTH, WIDTH, rank=RANK, capacity=CAPACITY, mode=case.mode, device=device)
        with torch.no_grad():
            layer.matrices.normal_(0.0, 0.01)
    x = torch.randn(*case.shape, WIDTH, generator=g).to(device).requires_grad_(True)
    key = case.key(g)
    if impl == "resfield-random":
        key = key[torch.randperm(key.shape[0], generator=g)]
    grad = torch.randn(*case.shape, WIDTH, generator=g).to(device)
    kw = (
        {}
        if impl == "linear"
        else ({"frame_ids": key.to(device)} if case.mode == "lookup" else {"times": key.to(device)})
    )

    def step() -> None:
        layer(x, **kw).backward(grad)
        x.grad = None
        layer.zero_grad(set_to_none=True)

    return step


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_case(case: LayerCase, device: str, repeats: int) -> dict[str, float]:
    """Median seconds of forward+backward per implementation, interleaved so drift hits all alike."""
    steps = {impl: _setup(case, impl, device) for impl in IMPLS}
    samples: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    for step in steps.values():
        step()
    for _ in range(repeats):
        for impl, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            samples[impl].append(time.perf_counter() - start)
    return {impl: statistics.median(v) for impl, v in samples.items()}


def _vm_hwm_kib() -> int:
    return int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1))


def peak_memory_here(case_index: int, impl: str, device: str) -> float:
    """Peak extra memory (MiB) of one forward+backward, in this process."""
    step = _setup(CASES[case_index], impl, device)
    step()  # first call allocates caches that stay; measure the steady state
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    rss = int(open("/proc/self/statm").read().split()[1]) * 4  # KiB, pages of 4 KiB
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    step()
    return (_vm_hwm_kib() - rss) / 1024


def peak_memory(case_index: int, impl: str, device: str) -> float:
    """:func:`peak_memory_here` in a fresh interpreter, so cases do not share allocator state."""
    out = subprocess.run(
        [sys.executable, "-m", "resfields.benchmarks.layer", "--memory-probe", str(case_index), impl, device],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def layer_table(device: str, repeats: int) -> list[dict]:
    rows = []
    for index, case in enumerate(CASES):
        times = time_case(case, device, repeats)
        memory = {impl: peak_memory(index, impl, device) for impl in IMPLS}
        rows.append(
            {"case": case.name, "device": device, "ms": {k: v * 1e3 for k, v in times.items()}, "peak_mib": memory}
        )
        t, m = times, memory
        print(
            f"  {case.name}: linear {t['linear'] * 1e3:.1f} ms, random order "
            f"{t['resfield-random'] / t['linear']:.2f}x, sorted {t['resfield-sorted'] / t['linear']:.2f}x; "
            f"memory {m['resfield-random'] / max(m['linear'], 1e-9):.2f}x",
            file=sys.stderr,
        )
    return rows


def launch_table(device: str, present: tuple[int, ...] = (1, 10, 100)) -> list[dict]:
    """Matmul kernels per forward+backward of one layer as the frames present grow, from
    ``torch.profiler``: the strategy a GPU picks (forced on any device) and the CPU's grouped one."""
    from torch.profiler import ProfilerActivity, profile

    from resfields.backends.torch import choose, plan_frames
    from resfields.backends.torch.strategy import forced

    layer = ResFieldLinear(WIDTH, WIDTH, rank=RANK, capacity=CAPACITY, device=device)
    x = torch.randn(4096, 32, WIDTH, device=device, requires_grad=True)
    rows = []
    for frames in present:
        ids = torch.randperm(4096).remainder(frames).view(4096, 1).to(device)
        plan = plan_frames(layer.spec.resfield, (4096, 32), ids, None, x.device)
        counts = {}
        for label, strategy in (("gpu strategy", choose(layer, plan, "cuda")), ("grouped", "grouped")):
            with forced(strategy), profile(activities=[ProfilerActivity.CPU]) as prof:
                layer(x, frame_ids=ids).sum().backward()
            names = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")
            counts[label] = (strategy, sum(e.count for e in prof.key_averages() if e.key in names))
        rows.append({"frames_present": frames, **{k: {"strategy": v[0], "matmuls": v[1]} for k, v in counts.items()}})
        print(f"  {frames} frames present: {counts}", file=sys.stderr)
    return rows


def compiled_table(device: str, repeats: int) -> list[dict]:
    """A user's MLP with three ResField layers under ``torch.compile(fullgraph=True)`` against the
    same MLP with ``nn.Linear`` layers, compiled alike: training step time and recompiles over
    ``repeats`` steps with new random frame ids each step."""
    import torch._dynamo

    from resfields.benchmarks.user_mlp import UserMLP

    out = []
    for resfield in (True, False):
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        model = UserMLP(WIDTH, CAPACITY, resfield=resfield).to(device)
        compiled = torch.compile(model, fullgraph=True)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(0)
        x = torch.rand(1100, 64, 3, generator=g).to(device)

        def step(compiled=compiled, optimizer=optimizer, x=x, g=g) -> None:
            ids = torch.randint(0, CAPACITY, (1100, 1), generator=g).to(device)
            compiled(x, ids).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        start = time.perf_counter()
        step()
        compile_s = time.perf_counter() - start
        samples = []
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            samples.append(time.perf_counter() - start)
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        out.append(
            {"resfield": resfield, "ms": 1e3 * statistics.median(samples), "compile_s": compile_s, "graphs": graphs}
        )
        print(f"  compiled {'ResField' if resfield else 'vanilla'} MLP: {out[-1]}", file=sys.stderr)
    return out


def markdown(rows: list[dict], training: list[dict], launches: list[dict], compiled: list[dict]) -> str:
    lines = [
        "| case (128→128, rank 10, capacity 100) | device | nn.Linear ms | random order | sorted by frame "
        "| peak MiB Linear | peak MiB ResField | memory ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ms, mem = r["ms"], r["peak_mib"]
        lines.append(
            f"| {r['case']} | {r['device']} | {ms['linear']:.1f} | {ms['resfield-random'] / ms['linear']:.2f}× | "
            f"{ms['resfield-sorted'] / ms['linear']:.2f}× | {mem['linear']:.0f} | {mem['resfield-random']:.0f} | "
            f"{mem['resfield-random'] / max(mem['linear'], 1e-9):.2f}× |"
        )
    if launches:
        lines += [
            "",
            "| frames present (4096 x 32) | GPU strategy: matmuls | grouped (CPU): matmuls |",
            "|---|---|---|",
        ]
        for r in launches:
            gpu, grouped = r["gpu strategy"], r["grouped"]
            lines.append(f"| {r['frames_present']} | {gpu['matmuls']} ({gpu['strategy']}) | {grouped['matmuls']} |")
    if compiled:
        res, van = (next(c for c in compiled if c["resfield"] is k) for k in (True, False))
        lines += [
            "",
            "| torch.compile(fullgraph=True), 1100 x 64 samples | step ms | graphs | compile s |",
            "|---|---|---|---|",
            f"| MLP with 3 ResField layers | {res['ms']:.1f} ({res['ms'] / van['ms']:.2f}× vanilla) | "
            f"{res['graphs']} | {res['compile_s']:.0f} |",
            f"| vanilla MLP | {van['ms']:.1f} | {van['graphs']} | {van['compile_s']:.0f} |",
        ]
    if training:
        lines += [
            "",
            "| Siren training step | device | torch ms | tinygrad (TinyJit) ms | tinygrad / torch |",
            "|---|---|---|---|---|",
        ]
        for r in training:
            cells = f"{r['torch_ms']:.1f} | {r['tinygrad_ms']:.1f} | {r['ratio']:.2f}×"
            lines.append(f"| {r['case']} | {r['device']} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="resfields bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    parser.add_argument("--skip-layer", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-compile", action="store_true", help="skip the torch.compile case (minutes on a CPU)")
    parser.add_argument("--skip-launches", action="store_true")
    parser.add_argument("--json", help="write the measured numbers to this file")
    parser.add_argument("--memory-probe", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe:
        index, impl, device = args.memory_probe
        print(peak_memory_here(int(index), impl, device))
        return 0
    repeats = 3 if args.quick else args.repeats
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"device {args.device}",
        file=sys.stderr,
    )
    rows = [] if args.skip_layer else layer_table(args.device, repeats)
    launches = [] if args.skip_launches else launch_table(args.device)
    compiled = [] if args.skip_compile else compiled_table(args.device, repeats)
    training = []
    if not args.skip_training:
        from resfields.benchmarks.training import training_table

        training = training_table(repeats, args.device)
    print(markdown(rows, training, launches, compiled))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "torch": torch.__version__,
                    "layer": rows,
                    "launches": launches,
                    "compiled": compiled,
                    "training": training,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
