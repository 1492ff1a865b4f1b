"""The conformance case grid: every compression x mode, several ranks and capacities, frame
layouts (one frame, repeated frames, all-distinct frames, one frame per row in equal blocks), times
on and between knots and outside [-1, 1] (±inf included), single layers and whole fields."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from resfields.spec import COMPRESSIONS, MODES, FieldSpec, LinearSpec, MLPSpec, ResFieldSpec, SirenSpec, frame_to_time

__all__ = ["LAYOUTS", "Case", "grid", "make_inputs", "random_case", "strategy_cases"]

# lookup layouts and interpolation layouts; each case picks those of its mode
LAYOUTS = {
    "lookup": ("single", "repeated", "distinct", "blocks"),
    "interpolation": ("knots", "between", "outside"),
}


@dataclass(frozen=True)
class Case:
    """One comparison: a spec, an input layout and a dtype. ``seed`` fixes parameters and inputs."""

    name: str
    spec: FieldSpec
    layout: str
    dtype: str = "float32"
    batch: int = 6
    per_row: int = 5
    seed: int = 0
    encoding_alpha: float | None = None  # coarse-to-fine progress for PE-MLP fields (None: plain encoding)
    strategy: str = "auto"  # a backend's forced layer strategy (torch: resfields.backends.torch.STRATEGIES)


def make_inputs(case: Case) -> tuple[np.ndarray, dict[str, np.ndarray | None], np.ndarray]:
    """``x`` ``(B, S, I)``, the time keyword (``frame_ids`` or ``times``) and a cotangent
    ``(B, S, O)``, all drawn from ``case.seed``."""
    rng = np.random.default_rng(case.seed + 1000)
    spec, b, s = case.spec, case.batch, case.per_row
    x = rng.uniform(-1.0, 1.0, size=(b, s, spec.in_features))
    cot = rng.normal(size=(b, s, spec.out_features))
    rf = spec.resfield
    c = rf.capacity
    if case.layout == "single":
        key = np.asarray(rng.integers(0, c), dtype=np.int64)  # one frame for the whole batch
    elif case.layout == "repeated":
        key = rng.integers(0, min(c, 3), size=(b, 1)).astype(np.int64)  # few frames, unsorted rows
    elif case.layout == "blocks":
        key = rng.permutation(np.arange(b) % c).reshape(b, 1).astype(np.int64)  # one frame per row, equal rows
    elif case.layout == "distinct":
        key = rng.permutation(np.arange(b * s) % c).reshape(b, s).astype(np.int64)  # per-sample frames
    elif case.layout == "knots":
        key = np.array([frame_to_time(f, c) for f in rng.integers(0, c, size=b)]).reshape(b, 1)
    elif case.layout == "between":
        key = rng.uniform(-1.0, 1.0, size=(b, s))
    elif case.layout == "outside":
        key = np.concatenate([rng.uniform(-1.6, -1.0, size=b // 2), rng.uniform(1.0, 1.6, size=b - b // 2)])
        key[0], key[-1] = -np.inf, np.inf  # clamp too: inf * (C - 1) is NaN when C == 1
        key = rng.permutation(key).reshape(b, 1)
    else:
        raise ValueError(f"unknown layout {case.layout!r}")
    kw = {"frame_ids": key, "times": None} if rf.mode == "lookup" else {"frame_ids": None, "times": key}
    return x, kw, cot


def _resfield(compression: str, mode: str, rank: int, capacity: int) -> ResFieldSpec:
    return ResFieldSpec(
        capacity=capacity, rank=None if compression == "none" else rank, mode=mode, compression=compression
    )  # type: ignore[arg-type]


def grid(dtype: str = "float32") -> Iterator[Case]:
    """The fixed grid: layers (2 sizes x 3 layouts) and fields (Siren, two MLPs) per compression x mode."""
    for compression in COMPRESSIONS:
        for mode in MODES:
            for rank, capacity in ((1, 1), (3, 7), (4, 16)):
                rf = _resfield(compression, mode, rank, capacity)
                spec = LinearSpec(5, 4, True, rf)
                for layout in LAYOUTS[mode]:
                    yield Case(f"layer/{compression}/{mode}/R{rank}C{capacity}/{layout}", spec, layout, dtype)
            rf = _resfield(compression, mode, 3, 6)
            fields = {
                "siren": SirenSpec(3, 2, hidden_features=16, n_layers=4, resfield_layers=(1, 2), resfield=rf),
                "mlp-relu-pe": MLPSpec(
                    3,
                    2,
                    hidden_features=16,
                    n_layers=4,
                    n_frequencies=2,
                    skips=(2,),
                    resfield_layers=(1, 2, 3),
                    resfield=rf,
                ),
                "mlp-softplus": MLPSpec(
                    2,
                    3,
                    hidden_features=16,
                    n_layers=3,
                    activation="softplus",
                    softplus_beta=10.0,
                    resfield_layers=(0, 1),
                    resfield=rf,
                ),
            }
            for name, spec in fields.items():
                layout = LAYOUTS[mode][1]
                yield Case(f"{name}/{compression}/{mode}/{layout}", spec, layout, dtype)
            # half-open second band: the window's weights reach the forward and the gradients
            layout = LAYOUTS[mode][1]
            yield Case(
                f"mlp-relu-pe-annealed/{compression}/{mode}/{layout}",
                fields["mlp-relu-pe"],
                layout,
                dtype,
                encoding_alpha=1.5,
            )


def random_case(rng: np.random.Generator, index: int, dtype: str = "float32") -> Case:
    """A random layer case (the CLI's stand-in for the hypothesis-generated cases of the test suite)."""
    compression = COMPRESSIONS[rng.integers(len(COMPRESSIONS))]
    mode = MODES[rng.integers(len(MODES))]
    rf = _resfield(compression, mode, int(rng.integers(1, 6)), int(rng.integers(1, 20)))
    spec = LinearSpec(int(rng.integers(1, 9)), int(rng.integers(1, 9)), bool(rng.integers(2)), rf)
    layout = LAYOUTS[mode][rng.integers(3)]
    return Case(
        f"random-{index}/{compression}/{mode}/{layout}",
        spec,
        layout,
        dtype,
        batch=int(rng.integers(1, 8)),
        per_row=int(rng.integers(1, 6)),
        seed=int(rng.integers(1 << 30)),
    )


def strategy_cases(cases: list[Case], strategies: tuple[str, ...]) -> list[Case]:
    """``cases`` again under each forced strategy that applies to them, for a backend with several
    (torch): "single" needs one key for the whole batch, "lowrank" a low-rank residual."""
    out = []
    for case in cases:
        for strategy in strategies:
            if strategy == "single" and case.layout != "single":
                continue
            if strategy == "lowrank" and case.spec.resfield.compression == "none":
                continue
            out.append(replace(case, name=f"{case.name}/{strategy}", strategy=strategy))
    return out
