"""The backend-agnostic specification: configs, time convention, parameter names, shapes and init.

Everything here is plain Python data. No array library is imported, so every backend, the
NumPy reference and the checkpoint code agree on one contract.

Time convention (the only one in the library)
---------------------------------------------
A sequence of ``T`` frames is placed on normalised time ``t`` in ``[-1, 1]``::

    t(f) = -1 + 2 f / (T - 1)          (t = 0 when T == 1)

A ResField layer has ``capacity`` time coefficients ``c_0 .. c_{C-1}``.

* ``mode="lookup"`` takes an integer frame id ``f`` in ``[0, C)`` and uses ``c_f``.
* ``mode="interpolation"`` takes a time ``t``, clamps it to ``[-1, 1]`` (``±inf`` included), maps
  it to the position ``p = (t + 1) / 2 * (C - 1)`` in ``[0, C - 1]`` and blends linearly between
  the two neighbouring coefficients. With ``C == T`` frame ``f`` lands exactly on coefficient ``f``.
  A position within the rounding of its time's dtype of a knot (:func:`knot_tolerance`: ``eps (C - 1)``
  knot spacings, at most ``1e-5``) is that knot: a frame's time computed in float32 then picks one
  coefficient on every backend, not a ``(1 - 1e-7, 1e-7)`` blend of two.

Weight of a ResField layer at time t (bias is static)::

    W(t) = W + dW(t)
    vm      dW(t) = sum_r c_r(t) M_r                       M: (R, O, I)
    none    dW(t) = D(t)                                   D: (C, O, I), one residual per frame
    cp      dW(t) = sum_r c_r(t) u_r v_r^T                 u: (R, O), v: (R, I)
    tucker  dW(t) = sum_abd G_abd c_a(t) u_b v_d^T         G: (R, R, R)

In interpolation mode ``c(t)`` (or ``D(t)``) is the linear blend of the two neighbouring knots.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass
from typing import Any, Literal

from resfields.decode import decode_dataclass, decode_value
from resfields.errors import SpecError, short_repr
from resfields.jsonio import loads_strict

__all__ = [
    "COMPRESSIONS",
    "LIMITS",
    "MODES",
    "SCHEMA_VERSION",
    "AnySpec",
    "ArraySpec",
    "FieldSpec",
    "Init",
    "Limits",
    "LinearSpec",
    "MLPSpec",
    "ModelSpec",
    "ResFieldSpec",
    "SirenSpec",
    "check_limit",
    "check_schema_version",
    "frame_to_time",
    "init_rules",
    "layer_specs",
    "parameter_count",
    "parameter_shapes",
    "spec_differences",
    "spec_from_dict",
    "spec_from_json",
    "spec_to_dict",
    "spec_to_json",
    "time_to_position",
]

SCHEMA_VERSION = 1
MODES = ("lookup", "interpolation")
COMPRESSIONS = ("vm", "none", "cp", "tucker")
ACTIVATIONS = ("relu", "softplus")
MLP_INITS = ("default", "geometric")


def _fail(owner: str, message: str) -> typing.NoReturn:
    raise SpecError(f"{owner}: {message}")


def _check_positive_int(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        _fail(owner, f"{name} must be a positive integer, got {short_repr(value)}")


# ----------------------------------------------------------------------------- size limits


@dataclass
class Limits:
    """Upper bounds on sizes, checked before anything is allocated.

    A few bytes of config (``n_layers=1e6``, ``capacity=2**62``, ``batch_size=1e12``) would
    otherwise cost minutes and gigabytes before failing, or hang. Every default is far above any
    published ResFields setup; a run that really needs more lifts one limit for the whole process:
    in Python by assignment (``resfields.spec.LIMITS.max_parameters = 2**33``), or for the CLI
    with the environment variable ``RESFIELDS_<NAME>`` (``RESFIELDS_MAX_PARAMETERS=8589934592``),
    read once when resfields is imported.

    Attributes:
        max_layers: linear layers of one field (``n_layers``).
        max_features: width of one layer's input or output (in/out/hidden features, the encoded
            input of a PE-MLP).
        max_capacity: time coefficients of a ResField layer (frames).
        max_rank: residual bases of a ResField layer.
        max_parameters: parameter elements of one spec (a layer, a field, a whole model with its
            arrays); 2**31 float32 parameters are 8 GiB before gradients and Adam's moments.
        max_batch_size: rows of one training batch (``TrainConfig.batch_size``; rays for NeRF).
        max_samples_per_ray: samples along one NeRF ray.
        max_chunk: rows (or rays) of one inference chunk.
    """

    max_layers: int = 1024
    max_features: int = 2**16
    max_capacity: int = 2**20
    max_rank: int = 1024
    max_parameters: int = 2**31
    max_batch_size: int = 2**22
    max_samples_per_ray: int = 1024
    max_chunk: int = 2**20


def _limits_from_environment() -> Limits:
    limits = Limits()
    for f in dataclasses.fields(Limits):
        variable = f"RESFIELDS_{f.name.upper()}"
        text = os.environ.get(variable)
        if text is None:
            continue
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise SpecError(f"environment variable {variable} must be a positive integer, got {short_repr(text)}")
        setattr(limits, f.name, value)
    return limits


LIMITS = _limits_from_environment()


def check_limit(owner: str, what: str, value: int, limit: str) -> None:
    """SpecError unless ``value <= LIMITS.<limit>``; the message says how to lift the limit."""
    bound = getattr(LIMITS, limit)
    if value > bound:
        _fail(
            owner,
            f"{what} {short_repr(value)} exceeds the limit {bound} (resfields.spec.LIMITS.{limit}); "
            f"if you need more, raise it or set RESFIELDS_{limit.upper()}",
        )


@dataclass(frozen=True)
class ResFieldSpec:
    """How a linear layer's weight varies in time.

    Attributes:
        capacity: number of time coefficients C (usually the number of frames).
        rank: R, the number of residual bases. Required for vm, cp and tucker; must be
            omitted (None) for ``compression="none"``, which stores one full residual per frame.
        mode: "lookup" (integer frame ids) or "interpolation" (continuous times in [-1, 1]).
        compression: "vm" (the paper's default), "none", "cp" or "tucker".
    """

    capacity: int
    rank: int | None = None
    mode: Literal["lookup", "interpolation"] = "lookup"
    compression: Literal["vm", "none", "cp", "tucker"] = "vm"

    def __post_init__(self) -> None:
        owner = "ResFieldSpec"
        _check_positive_int(owner, "capacity", self.capacity)
        check_limit(owner, "capacity", self.capacity, "max_capacity")
        if self.mode not in MODES:
            _fail(owner, f"mode must be one of {MODES}, got {short_repr(self.mode)}")
        if self.compression not in COMPRESSIONS:
            _fail(owner, f"compression must be one of {COMPRESSIONS}, got {short_repr(self.compression)}")
        if self.compression == "none":
            if self.rank is not None:
                _fail(owner, "rank is not used by compression='none' (one residual per frame); omit it")
        else:
            _check_positive_int(owner, "rank", self.rank)
            check_limit(owner, "rank", self.rank, "max_rank")


@dataclass(frozen=True)
class LinearSpec:
    """One linear layer, static (``resfield=None``) or a ResField layer.

    Maps ``(..., in_features) -> (..., out_features)``.
    """

    in_features: int
    out_features: int
    bias: bool = True
    resfield: ResFieldSpec | None = None
    type: Literal["linear"] = "linear"

    def __post_init__(self) -> None:
        for name in ("in_features", "out_features"):
            _check_positive_int("LinearSpec", name, getattr(self, name))
            check_limit("LinearSpec", name, getattr(self, name), "max_features")
        if self.type != "linear":
            _fail("LinearSpec", f"type must be 'linear', got {short_repr(self.type)}")
        check_limit("LinearSpec", "parameter count", parameter_count(self), "max_parameters")


def _check_resfield_layers(owner: str, n_layers: int, layers: tuple[int, ...], resfield: ResFieldSpec | None) -> None:
    if len(set(layers)) != len(layers):
        _fail(owner, f"resfield_layers has duplicates: {short_repr(layers)}")
    for i in layers:
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n_layers:
            _fail(owner, f"resfield layer index {short_repr(i)} is outside [0, {n_layers}) linear layers")
    if layers and resfield is None:
        _fail(owner, "resfield_layers is set but resfield is None; give a ResFieldSpec")
    if resfield is not None and not layers:
        _fail(owner, "resfield is set but resfield_layers is empty")


@dataclass(frozen=True)
class SirenSpec:
    """A Siren (Sitzmann et al. 2020): ``n_layers`` linear layers, ``sin(omega * .)`` between them.

    Layer 0 uses ``omega0``, the hidden layers ``hidden_omega0``; the last layer is linear.
    ``resfield_layers`` lists the linear-layer indices that are ResField layers
    (the paper uses 1, 2, 3 of 5).
    Maps ``(..., in_features) -> (..., out_features)``.
    """

    in_features: int
    out_features: int
    hidden_features: int = 256
    n_layers: int = 5
    omega0: float = 30.0
    hidden_omega0: float = 30.0
    resfield_layers: tuple[int, ...] = ()
    resfield: ResFieldSpec | None = None
    type: Literal["siren"] = "siren"

    def __post_init__(self) -> None:
        owner = "SirenSpec"
        for name in ("in_features", "out_features", "hidden_features"):
            _check_positive_int(owner, name, getattr(self, name))
            check_limit(owner, name, getattr(self, name), "max_features")
        if not isinstance(self.n_layers, int) or isinstance(self.n_layers, bool) or self.n_layers < 2:
            _fail(owner, f"n_layers must be an integer >= 2, got {short_repr(self.n_layers)}")
        check_limit(owner, "n_layers", self.n_layers, "max_layers")
        for name in ("omega0", "hidden_omega0"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                _fail(owner, f"{name} must be a positive finite number, got {short_repr(value)}")
        object.__setattr__(self, "resfield_layers", tuple(self.resfield_layers))
        _check_resfield_layers(owner, self.n_layers, self.resfield_layers, self.resfield)
        if self.type != "siren":
            _fail(owner, f"type must be 'siren', got {short_repr(self.type)}")
        check_limit(owner, "parameter count", parameter_count(self), "max_parameters")


@dataclass(frozen=True)
class MLPSpec:
    """A ReLU or Softplus MLP with optional positional encoding and skip connections.

    Positional encoding with ``L = n_frequencies`` maps ``x`` (D features) to
    ``[x, sin(2^0 x), cos(2^0 x), ..., sin(2^(L-1) x), cos(2^(L-1) x)]`` (x only if
    ``include_input``), D·(include_input + 2L) features. A layer index in ``skips`` receives
    ``concat(h, encoded_x) / sqrt(2)``. Softplus is ``log(1 + exp(beta x)) / beta``, linear where
    ``beta x > 20`` (as torch). ``init="geometric"`` is the IDR/NeuS sphere initialisation for SDFs
    (output ~ ``|x| - sphere_radius``); only the first ``coordinate_features`` inputs (default: all)
    start with non-zero weights, so extra inputs such as a time or a latent code leave the initial
    sphere intact. Maps ``(..., in_features) -> (..., out_features)``.
    """

    in_features: int
    out_features: int
    hidden_features: int = 128
    n_layers: int = 8
    activation: Literal["relu", "softplus"] = "relu"
    softplus_beta: float = 100.0
    n_frequencies: int = 0
    include_input: bool = True
    skips: tuple[int, ...] = ()
    init: Literal["default", "geometric"] = "default"
    sphere_radius: float = 0.5
    coordinate_features: int | None = None
    resfield_layers: tuple[int, ...] = ()
    resfield: ResFieldSpec | None = None
    type: Literal["mlp"] = "mlp"

    def __post_init__(self) -> None:
        owner = "MLPSpec"
        for name in ("in_features", "out_features", "hidden_features"):
            _check_positive_int(owner, name, getattr(self, name))
            check_limit(owner, name, getattr(self, name), "max_features")
        _check_positive_int(owner, "n_layers", self.n_layers)
        check_limit(owner, "n_layers", self.n_layers, "max_layers")
        if self.activation not in ACTIVATIONS:
            _fail(owner, f"activation must be one of {ACTIVATIONS}, got {short_repr(self.activation)}")
        if not math.isfinite(self.softplus_beta) or self.softplus_beta <= 0:
            _fail(owner, f"softplus_beta must be positive, got {short_repr(self.softplus_beta)}")
        if not isinstance(self.n_frequencies, int) or isinstance(self.n_frequencies, bool) or self.n_frequencies < 0:
            _fail(owner, f"n_frequencies must be a non-negative integer, got {short_repr(self.n_frequencies)}")
        # 2**k itself overflows float32 beyond k = 127 (and a Python float beyond 1023)
        if self.n_frequencies > _MAX_FREQUENCIES:
            _fail(owner, f"n_frequencies must be at most {_MAX_FREQUENCIES}, got {self.n_frequencies}")
        check_limit(owner, "encoded input width", self.encoded_features, "max_features")
        if not self.include_input and self.n_frequencies == 0:
            _fail(owner, "include_input=False with n_frequencies=0 leaves no input features")
        object.__setattr__(self, "skips", tuple(self.skips))
        object.__setattr__(self, "resfield_layers", tuple(self.resfield_layers))
        for i in self.skips:
            if not isinstance(i, int) or not 0 < i < self.n_layers:
                _fail(owner, f"skip index {short_repr(i)} must lie in [1, {self.n_layers})")
        if self.init not in MLP_INITS:
            _fail(owner, f"init must be one of {MLP_INITS}, got {short_repr(self.init)}")
        if self.init == "geometric" and not self.include_input:
            _fail(owner, "init='geometric' needs include_input=True")
        c = self.coordinate_features
        if c is not None and (isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= self.in_features):
            _fail(
                owner,
                f"coordinate_features must be None or in [1, in_features={self.in_features}], got {short_repr(c)}",
            )
        _check_resfield_layers(owner, self.n_layers, self.resfield_layers, self.resfield)
        if self.type != "mlp":
            _fail(owner, f"type must be 'mlp', got {short_repr(self.type)}")
        check_limit(owner, "parameter count", parameter_count(self), "max_parameters")

    @property
    def encoded_features(self) -> int:
        """Width of the positional encoding of the input."""
        return self.in_features * (int(self.include_input) + 2 * self.n_frequencies)


_MAX_FREQUENCIES = 127

FieldSpec = LinearSpec | SirenSpec | MLPSpec
_SPEC_TYPES: dict[str, type] = {"linear": LinearSpec, "siren": SirenSpec, "mlp": MLPSpec}


@dataclass(frozen=True)
class ModelSpec:
    """Several named fields and named free arrays, trained, saved and loaded as one model.

    A dynamic NeRF, say, is an SDF field, a colour field, a learnable β and per-frame latent codes.
    ``fields`` and ``arrays`` are ``(name, spec)`` pairs (JSON objects in files); names are Python
    identifiers, unique across both. Canonical parameter names are ``{field}.{parameter}`` (e.g.
    ``sdf.layers.0.weight``) and the array names themselves; see :func:`parameter_shapes`.
    """

    fields: tuple[tuple[str, FieldSpec], ...]
    arrays: tuple[tuple[str, ArraySpec], ...] = ()
    type: Literal["model"] = "model"

    def __post_init__(self) -> None:
        owner = "ModelSpec"
        object.__setattr__(self, "fields", tuple((n, f) for n, f in self.fields))
        object.__setattr__(self, "arrays", tuple((n, a) for n, a in self.arrays))
        if not self.fields:
            _fail(owner, "a model needs at least one field")
        names = [n for n, _ in self.fields] + [n for n, _ in self.arrays]
        for name in names:
            if not isinstance(name, str) or not name.isidentifier():
                _fail(owner, f"names must be Python identifiers (no dots), got {short_repr(name)}")
        duplicates = sorted(n for n, count in collections.Counter(names).items() if count > 1)
        if duplicates:
            _fail(owner, f"duplicate name(s) {short_repr(duplicates)}")
        for name, field_spec in self.fields:
            if not isinstance(field_spec, _FIELD_CLASSES):
                _fail(owner, f"field {name!r} must be a LinearSpec, SirenSpec or MLPSpec")
        for name, array in self.arrays:
            if not isinstance(array, ArraySpec):
                _fail(owner, f"array {name!r} must be an ArraySpec")
        if self.type != "model":
            _fail(owner, f"type must be 'model', got {short_repr(self.type)}")
        check_limit(owner, "parameter count", parameter_count(self), "max_parameters")

    def field(self, name: str) -> FieldSpec:
        """The spec of field ``name``; SpecError if there is none."""
        for n, f in self.fields:
            if n == name:
                return f
        raise SpecError(f"ModelSpec has no field {name!r}; it has {[n for n, _ in self.fields]}")


_FIELD_CLASSES = (LinearSpec, SirenSpec, MLPSpec)
AnySpec = FieldSpec | ModelSpec


# ----------------------------------------------------------------------------- time convention


def frame_to_time(frame: float, n_frames: int) -> float:
    """Normalised time of frame ``frame`` of ``n_frames``: ``-1 + 2 f / (T - 1)`` (0 if T == 1)."""
    _check_positive_int("frame_to_time", "n_frames", n_frames)
    return 0.0 if n_frames == 1 else -1.0 + 2.0 * frame / (n_frames - 1)


KNOT_SNAP = 1e-5  # the largest distance to a knot, in knot spacings, that still counts as on it


def knot_tolerance(key_eps: float, capacity: int) -> float:
    """How close (in knot spacings) a time's position must be to a knot to count as on it: the rounding
    ``key_eps (C - 1)`` of a time stored with machine epsilon ``key_eps``, at most :data:`KNOT_SNAP`."""
    return min(KNOT_SNAP, key_eps * max(capacity - 1, 1))


def time_to_position(t: float, capacity: int) -> float:
    """Coefficient position of time ``t``: ``(t + 1) / 2 * (C - 1)``, clamped to ``[0, C - 1]``.

    ``t`` is clamped to ``[-1, 1]`` first, which is the same for finite times and keeps ``±inf``
    finite (``inf * 0`` would be NaN when ``C == 1``)."""
    _check_positive_int("time_to_position", "capacity", capacity)
    return (min(max(t, -1.0), 1.0) + 1.0) / 2.0 * (capacity - 1)


# ----------------------------------------------------------------------------- parameter contract


def layer_specs(spec: FieldSpec) -> list[LinearSpec]:
    """The linear layers of a field, in order; index i has parameters named ``layers.{i}.*``."""
    if isinstance(spec, LinearSpec):
        return [spec]
    if isinstance(spec, SirenSpec):
        widths = [spec.in_features] + [spec.hidden_features] * (spec.n_layers - 1) + [spec.out_features]
        in_widths = widths[:-1]
    else:
        widths = [spec.encoded_features] + [spec.hidden_features] * (spec.n_layers - 1) + [spec.out_features]
        in_widths = [w + (spec.encoded_features if i in spec.skips else 0) for i, w in enumerate(widths[:-1])]
    return [
        LinearSpec(in_widths[i], widths[i + 1], True, spec.resfield if i in spec.resfield_layers else None)
        for i in range(spec.n_layers)
    ]


def _linear_shapes(layer: LinearSpec) -> dict[str, tuple[int, ...]]:
    out, inp = layer.out_features, layer.in_features
    shapes: dict[str, tuple[int, ...]] = {"weight": (out, inp)}
    if layer.bias:
        shapes["bias"] = (out,)
    rf = layer.resfield
    if rf is None:
        return shapes
    if rf.compression == "none":
        shapes["residuals"] = (rf.capacity, out, inp)
        return shapes
    rank = typing.cast(int, rf.rank)
    shapes["coefficients"] = (rf.capacity, rank)
    if rf.compression == "vm":
        shapes["matrices"] = (rank, out, inp)
    else:
        if rf.compression == "tucker":
            shapes["core"] = (rank, rank, rank)
        shapes["out_factors"] = (rank, out)
        shapes["in_factors"] = (rank, inp)
    return shapes


def parameter_shapes(spec: AnySpec) -> dict[str, tuple[int, ...]]:
    """Canonical parameter names and shapes: the checkpoint contract shared by every backend.

    A lone ``LinearSpec`` has bare names (``weight``, ``bias``, ``coefficients``, ...);
    a field prefixes them with ``layers.{i}.``; a :class:`ModelSpec` prefixes each field's names
    with ``{field}.`` and adds its arrays under their own names.
    """
    if isinstance(spec, ModelSpec):
        shapes = {f"{n}.{k}": shape for n, f in spec.fields for k, shape in parameter_shapes(f).items()}
        return shapes | {n: a.shape for n, a in spec.arrays}
    if isinstance(spec, LinearSpec):
        return _linear_shapes(spec)
    return {
        f"layers.{i}.{name}": shape
        for i, layer in enumerate(layer_specs(spec))
        for name, shape in _linear_shapes(layer).items()
    }


def parameter_count(spec: AnySpec) -> int:
    """Number of parameter elements of ``spec`` (every tensor of :func:`parameter_shapes`), computed
    from the shapes alone, so a spec can be priced before anything is allocated."""
    return sum(math.prod(shape) for shape in parameter_shapes(spec).values())


@dataclass(frozen=True)
class Init:
    """How to draw one parameter: ``kind`` is "uniform" (a=low, b=high), "normal" (a=mean,
    b=std) or "constant" (a=value). ``zero_columns`` lists ``(start, stop)`` column ranges of a
    2-D weight that are set to zero after drawing (used by the geometric SDF init)."""

    kind: Literal["uniform", "normal", "constant"]
    a: float = 0.0
    b: float = 0.0
    zero_columns: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("uniform", "normal", "constant"):
            _fail("Init", f"kind must be uniform, normal or constant, got {short_repr(self.kind)}")
        object.__setattr__(self, "zero_columns", tuple(tuple(c) for c in self.zero_columns))


@dataclass(frozen=True)
class ArraySpec:
    """A free parameter array of a :class:`ModelSpec` (not part of any field): shape and initial
    distribution, e.g. VolSDF's β ``(1,)`` or per-frame latent codes ``(T, D)``."""

    shape: tuple[int, ...]
    init: Init

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in self.shape):
            _fail("ArraySpec", f"shape must be positive integers, got {short_repr(self.shape)}")
        # numpy stops at 64 dimensions; nothing a model stores needs more than a few
        if len(self.shape) > _MAX_ARRAY_DIMS:
            _fail("ArraySpec", f"shape has {len(self.shape)} dimensions, at most {_MAX_ARRAY_DIMS} are allowed")
        check_limit("ArraySpec", "parameter count", math.prod(self.shape), "max_parameters")


_MAX_ARRAY_DIMS = 16
_RESIDUAL_SCALE = 0.01


def _resfield_rules(rf: ResFieldSpec) -> dict[str, Init]:
    # Residuals start at exactly zero, so a ResField field starts as its vanilla twin; the other
    # factor is small and random so that gradients reach the zero factor from the first step.
    zero, small = Init("constant", 0.0), Init("normal", 0.0, _RESIDUAL_SCALE)
    if rf.compression == "none":
        return {"residuals": zero}
    if rf.compression == "vm":
        return {"coefficients": small, "matrices": zero}
    rules = {"coefficients": zero, "out_factors": Init("normal", 0.0, 0.1), "in_factors": Init("normal", 0.0, 0.1)}
    if rf.compression == "tucker":
        rules["core"] = Init("normal", 0.0, 0.1)
    return rules


def _torch_default(fan_in: int) -> Init:
    bound = 1.0 / math.sqrt(fan_in)
    return Init("uniform", -bound, bound)


def init_rules(spec: AnySpec) -> dict[str, Init]:
    """The initial distribution of every parameter, keyed like :func:`parameter_shapes`.

    Static weights and biases: torch.nn.Linear's default U(-1/sqrt(I), 1/sqrt(I)), except Siren
    weights (Sitzmann et al.) and the geometric SDF init (Atzmon & Lipman; IDR/NeuS). A model's
    arrays carry their own rule.
    """
    if isinstance(spec, ModelSpec):
        rules = {f"{n}.{k}": rule for n, f in spec.fields for k, rule in init_rules(f).items()}
        return rules | {n: a.init for n, a in spec.arrays}
    layers = layer_specs(spec)
    rules: dict[str, Init] = {}
    for i, layer in enumerate(layers):
        fan_in, fan_out = layer.in_features, layer.out_features
        weight, bias = _torch_default(fan_in), _torch_default(fan_in)
        if isinstance(spec, SirenSpec):
            bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / spec.hidden_omega0
            weight = Init("uniform", -bound, bound)
        elif isinstance(spec, MLPSpec) and spec.init == "geometric":
            if i == len(layers) - 1:
                weight = Init("normal", math.sqrt(math.pi) / math.sqrt(fan_in), 1e-4)
                bias = Init("constant", -spec.sphere_radius)
            else:
                # only the raw coordinates (the first columns of the encoding) start non-zero
                coords = spec.in_features if spec.coordinate_features is None else spec.coordinate_features
                zero: tuple[tuple[int, int], ...] = ()
                if i == 0 and coords < spec.encoded_features:
                    zero = ((coords, spec.encoded_features),)
                elif i in spec.skips:
                    zero = ((fan_in - spec.encoded_features + coords, fan_in),)
                weight = Init("normal", 0.0, math.sqrt(2.0) / math.sqrt(fan_out), zero)
                bias = Init("constant", 0.0)
        layer_rules = {"weight": weight, "bias": bias} if layer.bias else {"weight": weight}
        if layer.resfield is not None:
            layer_rules.update(_resfield_rules(layer.resfield))
        prefix = "" if isinstance(spec, LinearSpec) else f"layers.{i}."
        rules.update({prefix + name: rule for name, rule in layer_rules.items()})
    return rules


# ----------------------------------------------------------------------------- JSON round trip


def spec_to_dict(spec: AnySpec | ResFieldSpec | ArraySpec | Init) -> dict[str, Any]:
    """A JSON-ready dict of a spec (tuples become lists, nested specs become dicts; a model's
    fields and arrays become objects keyed by name)."""
    if isinstance(spec, ModelSpec):
        return {
            "type": "model",
            "fields": {n: spec_to_dict(f) for n, f in spec.fields},
            "arrays": {n: spec_to_dict(a) for n, a in spec.arrays},
        }
    if isinstance(spec, ArraySpec):
        return {"shape": list(spec.shape), "init": spec_to_dict(spec.init)}
    if isinstance(spec, Init):
        return {"kind": spec.kind, "a": spec.a, "b": spec.b, "zero_columns": [list(c) for c in spec.zero_columns]}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if isinstance(value, ResFieldSpec):
            value = spec_to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def _leaves(data: Any, path: str) -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_leaves(value, f"{path}.{key}" if path else str(key)))
        return out
    return {path: data}


def spec_differences(stored: AnySpec, expected: AnySpec, limit: int = 4) -> str:
    """What differs between a stored spec and the one a run config builds, for an error message:
    ``"resfield.capacity: 30 stored, 60 from the run config; ..."`` (at most ``limit``, then a count)."""
    a, b = _leaves(spec_to_dict(stored), ""), _leaves(spec_to_dict(expected), "")
    missing = object()
    diffs = [
        f"{key}: {a[key] if key in a else 'absent'} stored, {b[key] if key in b else 'absent'} from the run config"
        for key in sorted(set(a) | set(b))
        if a.get(key, missing) != b.get(key, missing)
    ]
    more = f"; and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return "; ".join(diffs[:limit]) + more if diffs else "no difference"


def _model_from_dict(data: dict[str, Any]) -> ModelSpec:
    unknown = sorted(set(data) - {"type", "fields", "arrays"})
    if unknown:
        _fail("ModelSpec", f"unknown key(s) {short_repr(unknown)}; allowed: ['arrays', 'fields', 'type']")
    fields, arrays = data.get("fields"), data.get("arrays", {})
    if not isinstance(fields, dict) or not isinstance(arrays, dict):
        _fail("ModelSpec", "'fields' and 'arrays' must be objects keyed by name")
    parsed_arrays = []
    for name, array in arrays.items():
        if not isinstance(array, dict) or set(array) != {"shape", "init"}:
            _fail("ModelSpec", f"array {short_repr(name)} must be an object with exactly 'shape' and 'init'")
        if not isinstance(array["init"], dict):
            _fail("ModelSpec", f"array {short_repr(name)}: 'init' must be an object")
        where = f"ModelSpec.arrays.{name}"
        shape = decode_value(tuple[int, ...], array["shape"], f"{where}.shape")
        parsed_arrays.append((name, ArraySpec(shape, decode_dataclass(Init, array["init"], f"{where}.init"))))
    return ModelSpec(tuple((n, spec_from_dict(f)) for n, f in fields.items()), tuple(parsed_arrays))


def spec_from_dict(data: dict[str, Any]) -> AnySpec:
    """Build a spec from a dict carrying ``type`` ("linear", "siren", "mlp" or "model"); strict."""
    if not isinstance(data, dict):
        raise SpecError(f"a field spec must be a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    if kind == "model":
        return _model_from_dict(data)
    if kind not in _SPEC_TYPES:
        raise SpecError(f"spec 'type' must be one of {sorted([*_SPEC_TYPES, 'model'])}, got {short_repr(kind)}")
    return decode_dataclass(_SPEC_TYPES[kind], data)


def spec_to_json(spec: AnySpec) -> str:
    """Serialise a field spec with the schema version: ``{"schema_version": 1, "field": {...}}``."""
    return json.dumps({"schema_version": SCHEMA_VERSION, "field": spec_to_dict(spec)}, indent=2)


def spec_from_json(text: str) -> AnySpec:
    """Parse :func:`spec_to_json` output; wrong schema versions and unknown keys raise SpecError."""
    data = loads_strict(text, "spec", SpecError)
    if not isinstance(data, dict):
        raise SpecError("spec JSON must be an object")
    check_schema_version(data.get("schema_version"))
    unknown = sorted(set(data) - {"schema_version", "field"})
    if unknown:
        raise SpecError(f"unknown top-level key(s) {short_repr(unknown)}")
    if "field" not in data:
        raise SpecError("spec JSON has no 'field'")
    return spec_from_dict(data["field"])


def check_schema_version(version: Any) -> None:
    """Raise SpecError unless ``version`` is the integer schema version this library reads.

    Only an ``int`` counts: ``True`` and ``1.0`` compare equal to 1 in Python but are not a version."""
    if type(version) is not int or version != SCHEMA_VERSION:
        raise SpecError(f"unsupported schema_version {version!r}; this resfields reads version {SCHEMA_VERSION}")
