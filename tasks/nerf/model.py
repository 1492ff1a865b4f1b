"""Dynamic SDF-based NeRF models (TNeRF, DyNeRF, DNeRF) as one :class:`~resfields.spec.ModelSpec`, and
their forward pass, written once for every backend.

Every method shares the upstream recipe: an SDF MLP (positional encoding, 8 hidden layers of 128 with
a skip, Softplus(β=100), geometric init) whose hidden layers 1–7 may be ResField layers, a colour MLP
fed with the point, its normal, the view direction and an SDF feature, and VolSDF's learnable β.
What differs is how time enters the SDF network:

* ``tnerf``: the normalised time ``t`` is a fourth input (encoded like the position);
* ``dynerf``: a learnt latent code per frame is appended to the position;
* ``dnerf``: a deformation MLP maps ``(x, t)`` to an offset into a canonical space;
* ``nerfies``: a deformation MLP maps ``(x, code_f)`` (a learnt code per frame) to a rigid motion
  (axis-angle rotation and translation) of ``x`` into the canonical space (Park et al. 2021);
* ``hypernerf``: Nerfies plus an ambient MLP ``(x, code_f) -> w`` whose output is appended to the
  canonical point, so the canonical SDF is a slice of a higher-dimensional one (Park et al. 2021b).

Normals and the eikonal term use forward differences of the SDF (three extra evaluations), which
needs no second-order autograd and so runs the same on both backends. The encoding is annealed
coarse to fine over ``anneal_steps`` (:mod:`resfields.encoding`). ResField layers take the
normalised time (interpolation mode, one coefficient per frame by default), so a frame's time gives
exactly that frame's weights and times in between blend the two neighbours. Simplification against
upstream: the time/latent inputs are encoded together with the position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from resfields.errors import SpecError
from resfields.spec import ArraySpec, Init, MLPSpec, ModelSpec, ResFieldSpec

from .render import accumulate_along_rays, laplace_density, render_weight_from_density

__all__ = [
    "LATENT_METHODS",
    "METHODS",
    "NerfModelConfig",
    "difference_offsets",
    "nerf_forward",
    "nerf_loss",
    "nerf_spec",
    "render_batch",
    "sdf_and_feature",
    "sdf_inputs",
    "sdf_network",
]

METHODS = ("tnerf", "dynerf", "dnerf", "nerfies", "hypernerf")
LATENT_METHODS = ("dynerf", "nerfies", "hypernerf")  # one learnt code per frame: times on frames only
BETA_MIN = 1e-4  # keeps the density finite when the learnt beta passes through 0


@dataclass(frozen=True)
class NerfModelConfig:
    """The dynamic NeRF: ``method`` and the sizes of its networks. ``resfield_layers`` are SDF-MLP
    layer indices (empty: the vanilla method); ``capacity`` None means one coefficient per frame."""

    method: Literal["tnerf", "dynerf", "dnerf", "nerfies", "hypernerf"] = "tnerf"
    width: int = 128
    n_layers: int = 9  # 8 hidden layers
    n_frequencies: int = 6
    resfield_layers: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)
    rank: int = 10
    capacity: int | None = None
    feature_dim: int = 64
    color_width: int = 128
    latent_dim: int = 16
    ambient_dim: int = 2  # HyperNeRF's extra canonical coordinates
    beta_init: float = 0.1
    fd_step: float = 1e-3  # forward-difference step for normals, in scene units
    anneal_steps: int = 500  # coarse-to-fine: all encoding bands are open after this many steps (0: from the start)
    mask_weight: float = 0.1
    eikonal_weight: float = 0.1
    depth_weight: float = 0.0  # RGB-D: L1 between rendered and measured ray distance (needs depth maps)
    sparse_weight: float = 0.0  # RGB-D: exp(-sparse_scale |sdf|) on samples of background rays
    sparse_scale: float = 100.0
    # appearance detail: a small PE-MLP of the SDF network's inputs (n_frequencies 0: none), whose
    # features join the colour network's input; the SDF feature alone is as smooth as the geometry
    texture_frequencies: int = 0
    texture_width: int = 64
    texture_features: int = 16

    def __post_init__(self) -> None:
        for name in (
            "anneal_steps",
            "mask_weight",
            "eikonal_weight",
            "depth_weight",
            "sparse_weight",
            "texture_frequencies",
        ):
            if getattr(self, name) < 0:
                raise SpecError(f"nerf model: {name} must be >= 0, got {getattr(self, name)!r}")
        if self.method not in METHODS:
            raise SpecError(f"nerf model: method must be one of {METHODS}, got {self.method!r}")


def _sdf_inputs(config: NerfModelConfig) -> int:
    extra = {"tnerf": 1, "dynerf": config.latent_dim, "dnerf": 0, "nerfies": 0, "hypernerf": config.ambient_dim}
    return 3 + extra[config.method]


def nerf_spec(config: NerfModelConfig, n_frames: int) -> ModelSpec:
    """The model for a scene of ``n_frames`` frames: fields ``sdf``, ``color`` (and ``deform`` for
    DNeRF), arrays ``beta`` (and ``latents`` ``(T, latent_dim)`` for DyNeRF)."""
    resfield = None
    if config.resfield_layers:
        capacity = n_frames if config.capacity is None else config.capacity
        resfield = ResFieldSpec(capacity=capacity, rank=config.rank, mode="interpolation")
    sdf = MLPSpec(
        _sdf_inputs(config),
        1 + config.feature_dim,
        hidden_features=config.width,
        n_layers=config.n_layers,
        activation="softplus",
        softplus_beta=100.0,
        n_frequencies=config.n_frequencies,
        skips=(config.n_layers // 2,),
        init="geometric",
        sphere_radius=0.5,
        coordinate_features=3,  # time or latent inputs start at zero weight: the initial sphere is the same at every t
        resfield_layers=tuple(config.resfield_layers),
        resfield=resfield,
    )
    texture_dim = config.texture_features if config.texture_frequencies > 0 else 0
    color = MLPSpec(
        9 + config.feature_dim + texture_dim, 3, hidden_features=config.color_width, n_layers=3, activation="relu"
    )
    fields: list[tuple[str, Any]] = [("sdf", sdf), ("color", color)]
    if texture_dim:
        texture = MLPSpec(
            _sdf_inputs(config),
            texture_dim,
            hidden_features=config.texture_width,
            n_layers=2,
            activation="relu",
            n_frequencies=config.texture_frequencies,
        )
        fields.append(("texture", texture))
    arrays: list[tuple[str, ArraySpec]] = [("beta", ArraySpec((1,), Init("constant", config.beta_init)))]
    if config.method == "dnerf":
        fields.append(("deform", MLPSpec(4, 3, hidden_features=64, n_layers=4, n_frequencies=4)))
    if config.method in ("nerfies", "hypernerf"):
        # axis-angle rotation (3) and translation (3) of each point, from the point and its frame's code
        fields.append(("deform", MLPSpec(3 + config.latent_dim, 6, hidden_features=64, n_layers=4, n_frequencies=4)))
    if config.method == "hypernerf":
        ambient = MLPSpec(3 + config.latent_dim, config.ambient_dim, hidden_features=64, n_layers=4, n_frequencies=4)
        fields.append(("ambient", ambient))
    if config.method in LATENT_METHODS:
        arrays.append(("latents", ArraySpec((n_frames, config.latent_dim), Init("normal", 0.0, 0.01))))
    return ModelSpec(tuple(fields), tuple(arrays))


def sdf_inputs(model: Any, config: NerfModelConfig, points: Any, batch: dict[str, Any], concat: Any) -> Any:
    """What the SDF network sees at ``points`` (F, P, S, 3): the point with time (TNeRF) or its frame's
    code (DyNeRF), or the point carried into the canonical space (DNeRF, Nerfies, HyperNeRF) ->
    (F, P, S, sdf inputs). Reads ``time`` (F, 1, 1, 1) and ``frame`` (F, 1, 1)."""
    ones = points[..., :1] * 0 + 1  # broadcasts per-frame inputs (F, 1, 1, C) to every sample
    if config.method == "tnerf":
        return concat([points, batch["time"] * ones], -1)
    if config.method == "dnerf":
        return points + model.deform(concat([points, batch["time"] * ones], -1), validate=False)
    # gathered inside the forward so the codes get gradients: (F, 1, 1) ids -> (F, 1, 1, D)
    code = model.latents[batch["frame"]] * ones
    if config.method == "dynerf":
        return concat([points, code], -1)
    conditioned = concat([points, code], -1)
    inputs = rigid_motion(model.deform(conditioned, validate=False), points, concat)
    if config.method == "hypernerf":
        inputs = concat([inputs, model.ambient(conditioned, validate=False)], -1)
    return inputs


def sdf_network(model: Any, config: NerfModelConfig, inputs: Any, batch: dict[str, Any]) -> Any:
    """The SDF network on :func:`sdf_inputs`: (F, P, S, 1 + feature_dim). Reads ``time`` (ResField
    layers) and, when present, ``window`` (n_frequencies,) the coarse-to-fine band weights."""
    keys = {"times": batch["time"][..., 0]} if config.resfield_layers else {}
    if "window" in batch:
        keys["encoding_window"] = batch["window"]
    return model.sdf(inputs, validate=False, **keys)


def sdf_and_feature(model: Any, config: NerfModelConfig, points: Any, batch: dict[str, Any], concat: Any) -> Any:
    """The SDF network at ``points`` (F, P, S, 3): returns (F, P, S, 1 + feature_dim)."""
    return sdf_network(model, config, sdf_inputs(model, config, points, batch, concat), batch)


def rigid_motion(motion: Any, points: Any, concat: Any) -> Any:
    """Apply per-point rigid motions: ``motion`` (..., 6) = axis-angle rotation ``r`` and translation
    ``v``, ``points`` (..., 3) -> ``R(r) x + v`` (..., 3) by Rodrigues' formula (branch-free: the angle
    is ``sqrt(|r|^2 + eps)``, so a zero rotation is the identity to within eps)."""
    r, v = motion[..., :3], motion[..., 3:]
    angle = (r.square().sum(-1) + 1e-12).sqrt().unsqueeze(-1)
    k = r / angle
    k0, k1, k2 = k[..., 0:1], k[..., 1:2], k[..., 2:3]
    x0, x1, x2 = points[..., 0:1], points[..., 1:2], points[..., 2:3]
    cross = concat([k1 * x2 - k2 * x1, k2 * x0 - k0 * x2, k0 * x1 - k1 * x0], -1)
    dot = (k * points).sum(-1).unsqueeze(-1)
    cos, sin = angle.cos(), angle.sin()
    return points * cos + cross * sin + k * dot * (1 - cos) + v


def render_batch(model: Any, batch: dict[str, Any], config: NerfModelConfig, concat: Any) -> dict[str, Any]:
    """Render a frame-major ray batch; one definition for torch and tinygrad.

    ``batch`` (tensors): ``points`` (F, P, S, 3) interval midpoints, ``dirs`` (F, P, S, 3) unit view
    directions, ``t_starts``/``t_ends`` (F, P, S), ``time`` (F, 1, 1, 1) normalised frame times,
    ``frame`` (F, 1, 1) integer frame ids (ResField lookup, DyNeRF codes), ``offsets`` (3, 1, 1, 1, 3)
    the forward-difference steps (:func:`difference_offsets`). ``concat`` is the backend's
    ``concat(tensors, axis)``.
    Returns ``rgb`` (F, P, 3), ``opacity`` (F, P, 1), ``depth`` (F, P, 1), ``normals`` (F, P, 3) and
    ``eikonal`` (a scalar: mean of (|grad sdf| - 1)^2) and ``sdf`` (F, P, S, 1) at the samples.
    """
    points = batch["points"]
    s = points.shape[2]
    # forward differences along x, y, z give the gradient without second-order autograd; the points and
    # their three neighbours go through the SDF network as one (F, P, 4 S) batch: one call of every layer
    # instead of four (fewer, larger GEMMs on torch; a quarter of the kernels for tinygrad to compile)
    probes = concat([points] + [points + batch["offsets"][i] for i in range(3)], 2)
    probe_inputs = sdf_inputs(model, config, probes, batch, concat)
    out = sdf_network(model, config, probe_inputs, batch)
    inputs, sdf, feature = probe_inputs[..., :s, :], out[..., :s, :1], out[..., :s, 1:]
    grads = [(out[..., (i + 1) * s : (i + 2) * s, :1] - sdf) / config.fd_step for i in range(3)]
    grad = concat(grads, -1)
    grad_norm = (grad.square().sum(-1) + 1e-12).sqrt()
    normals = grad / grad_norm.unsqueeze(-1)
    appearance = [points, normals, batch["dirs"], feature]
    if config.texture_frequencies > 0:  # fine surface detail the smooth SDF feature cannot carry
        appearance.append(model.texture(inputs, validate=False))
    color = model.color(concat(appearance, -1), validate=False).sigmoid()
    sigma = laplace_density(sdf[..., 0], density_scale(model))
    weights, _, _ = render_weight_from_density(batch["t_starts"], batch["t_ends"], sigma)
    mids = ((batch["t_starts"] + batch["t_ends"]) * 0.5).unsqueeze(-1)
    return {
        "rgb": accumulate_along_rays(weights, color),
        "opacity": accumulate_along_rays(weights),
        "depth": accumulate_along_rays(weights, mids),
        "normals": accumulate_along_rays(weights, normals),
        "eikonal": (grad_norm - 1).square().mean(),
        "sdf": sdf,
    }


def density_scale(model: Any) -> Any:
    """VolSDF's Laplace scale ``beta`` (1,) as the model renders it: the learnt value, kept positive."""
    return model.beta.abs() + BETA_MIN


def nerf_forward(config: NerfModelConfig, concat: Any) -> Callable[[Any, dict[str, Any]], dict[str, Any]]:
    """The model's forward on a batch, for every backend (``concat`` is the backend's concatenation).

    A batch with intervals (``t_starts``) is a ray batch: :func:`render_batch`. One without is an SDF
    query (``points`` (F, P, N, 3), ``time``, ``frame``): ``{"sdf": (F, P, N, 1), "beta": (1,)}``, what
    the sampler needs (:mod:`resfields.tasks.nerf.pipeline`)."""

    def forward(model: Any, batch: dict[str, Any]) -> dict[str, Any]:
        if "t_starts" not in batch:
            sdf = sdf_and_feature(model, config, batch["points"], batch, concat)[..., :1]
            return {"sdf": sdf, "beta": density_scale(model)}
        return render_batch(model, batch, config, concat)

    return forward


def difference_offsets(step: float) -> np.ndarray:
    """``(3, 1, 1, 1, 3)`` forward-difference offsets ``step * e_i``, shaped to add to (F, P, S, 3)."""
    return (np.eye(3) * step).reshape(3, 1, 1, 1, 3).astype(np.float32)


def nerf_loss(pred: dict[str, Any], batch: dict[str, Any], config: NerfModelConfig) -> Any:
    """The upstream recipe: L1 colour on foreground rays, mask BCE on the opacity, eikonal; RGB-D adds
    L1 on the rendered ray distance where depth is known and a sparseness term.

    ``batch``: ``rgb`` (F, P, 3) targets on a black background, ``mask`` (F, P, 1) in {0, 1}; with
    ``depth_weight`` > 0 also ``depth`` (F, P, 1) ray distances and ``depth_valid`` (F, P, 1) in {0, 1}.
    Sparseness is ``exp(-sparse_scale |sdf|)`` averaged over the samples of background rays: the
    mask says those rays cross no surface, so the SDF should stay away from zero along them.
    """
    mask = batch["mask"]
    rgb = ((pred["rgb"] - batch["rgb"]).abs() * mask).sum() / (mask.sum() * 3 + 1e-6)
    opacity = pred["opacity"].clip(1e-4, 1 - 1e-4)
    bce = -(mask * opacity.log() + (1 - mask) * (1 - opacity).log()).mean()
    loss = rgb + config.mask_weight * bce + config.eikonal_weight * pred["eikonal"]
    if config.depth_weight > 0:
        valid = batch["depth_valid"] * mask
        depth = ((pred["depth"] - batch["depth"]).abs() * valid).sum() / (valid.sum() + 1e-6)
        loss = loss + config.depth_weight * depth
    if config.sparse_weight > 0:
        background = (1 - mask).unsqueeze(-1)  # (F, P, 1, 1) against sdf (F, P, S, 1)
        near_zero = (pred["sdf"].abs() * -config.sparse_scale).exp() * background
        samples = background.sum() * pred["sdf"].shape[-2] + 1e-6
        loss = loss + config.sparse_weight * near_zero.sum() / samples
    return loss
