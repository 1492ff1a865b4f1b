"""Composite models: several named fields plus free arrays, one spec, one checkpoint, both backends."""

from __future__ import annotations

import json

import numpy as np
import pytest

from resfields.backends import get_backend, load_field
from resfields.checkpoint import load_checkpoint, save_checkpoint
from resfields.errors import CheckpointError, SpecError
from resfields.init import sample_parameters
from resfields.reference import field_forward
from resfields.spec import (
    ArraySpec,
    Init,
    MLPSpec,
    ModelSpec,
    ResFieldSpec,
    SirenSpec,
    init_rules,
    parameter_shapes,
    spec_from_json,
    spec_to_json,
)

SDF = MLPSpec(
    3,
    5,
    hidden_features=16,
    n_layers=3,
    n_frequencies=2,
    skips=(1,),
    activation="softplus",
    init="geometric",
    resfield_layers=(1,),
    resfield=ResFieldSpec(capacity=4, rank=2),
)
COLOR = SirenSpec(7, 3, hidden_features=8, n_layers=2)
MODEL = ModelSpec(
    (("sdf", SDF), ("color", COLOR)),
    (("beta", ArraySpec((1,), Init("constant", 0.1))), ("latents", ArraySpec((4, 6), Init("normal", 0.0, 0.01)))),
)


def test_names_shapes_and_init_follow_the_fields():
    shapes = parameter_shapes(MODEL)
    for name, shape in parameter_shapes(SDF).items():
        assert shapes[f"sdf.{name}"] == shape
    assert shapes["beta"] == (1,) and shapes["latents"] == (4, 6)
    assert set(init_rules(MODEL)) == set(shapes)
    assert init_rules(MODEL)["beta"] == Init("constant", 0.1)


def test_json_round_trip_and_strictness():
    assert spec_from_json(spec_to_json(MODEL)) == MODEL
    data = json.loads(spec_to_json(MODEL))
    data["field"]["arrays"]["beta"]["init"]["kind"] = "laplace"
    with pytest.raises(SpecError, match="kind"):
        spec_from_json(json.dumps(data))
    data = json.loads(spec_to_json(MODEL))
    data["field"]["colour"] = {}
    with pytest.raises(SpecError, match="unknown key"):
        spec_from_json(json.dumps(data))


@pytest.mark.parametrize(
    ("fields", "arrays", "message"),
    [
        ((), (), "at least one field"),
        ((("sdf.net", SDF),), (), "identifiers"),
        ((("sdf", SDF),), (("sdf", ArraySpec((1,), Init("constant"))),), "duplicate"),
    ],
)
def test_invalid_models_are_refused(fields, arrays, message):
    with pytest.raises(SpecError, match=message):
        ModelSpec(fields, arrays)


def test_invalid_arrays_are_refused():
    with pytest.raises(SpecError, match="positive"):
        ArraySpec((0,), Init("constant"))


def test_checkpoint_round_trip_and_field_views(tmp_path):
    arrays = sample_parameters(MODEL, seed=3)
    save_checkpoint(tmp_path, MODEL, arrays)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.spec == MODEL and set(ckpt.arrays) == set(arrays)
    sdf = ckpt.field("sdf")
    x = np.random.default_rng(0).uniform(-1, 1, (5, 3))
    ids = np.array([0, 1, 2, 3, 3])
    reference = get_backend("numpy")
    np.testing.assert_allclose(
        reference.predict(reference.build(sdf.spec, sdf.arrays), x, frame_ids=ids),
        field_forward(SDF, {k: v.astype(np.float64) for k, v in sdf.arrays.items()}, x, frame_ids=ids),
    )
    with pytest.raises(SpecError, match="several fields"):
        reference.build(MODEL, arrays)(x)
    with pytest.raises(SpecError, match="no field"):
        ckpt.field("deform")
    del arrays["beta"]
    with pytest.raises(CheckpointError, match="beta"):
        save_checkpoint(tmp_path / "bad", MODEL, arrays)


@pytest.mark.parametrize("backend", ["torch", "tinygrad"])
def test_backends_build_models_with_canonical_names(backend, tmp_path):
    pytest.importorskip(backend)
    impl = get_backend(backend)
    arrays = sample_parameters(MODEL, seed=1)
    model = impl.build(MODEL, arrays)
    out = impl.to_numpy(model)
    assert set(out) == set(arrays)
    for name in arrays:
        np.testing.assert_array_equal(out[name], arrays[name])
    # a field of the model computes what the reference computes with that field's parameters
    x = np.random.default_rng(0).uniform(-1, 1, (6, 3)).astype(np.float32)
    ids = np.array([0, 1, 1, 2, 3, 3])
    got = impl.predict(model.field("sdf"), x, ids)
    ref = field_forward(
        SDF,
        {k[4:]: v.astype(np.float64) for k, v in arrays.items() if k.startswith("sdf.")},
        x.astype(np.float64),
        frame_ids=ids,
    )
    np.testing.assert_allclose(got, ref, atol=1e-4)
    save_checkpoint(tmp_path, MODEL, out)
    again = load_field(tmp_path, backend=backend)
    assert set(impl.to_numpy(again)) == set(arrays)
    fresh = impl.build(MODEL)  # drawn from the spec's rules, β included
    assert float(impl.to_numpy(fresh)["beta"][0]) == pytest.approx(0.1)


def _forward(model, batch):
    # one definition for both backends: the colour field of the model, scaled by its β
    return model.field("color")(batch["x"], validate=False) * model.beta


def _loss(pred, batch):
    return (pred - batch["target"]).square().mean()


@pytest.mark.parametrize("backend", ["torch", "tinygrad"])
def test_trainer_drives_a_model_through_a_custom_forward(backend):
    pytest.importorskip(backend)
    impl = get_backend(backend)
    arrays = sample_parameters(MODEL, seed=2)
    trainer = impl.trainer(impl.build(MODEL, arrays), _loss, lr=1e-2, forward=_forward)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (64, 7)).astype(np.float32)
    batch = {"x": x, "target": np.sin(2 * x[:, :3]).astype(np.float32)}
    losses = [trainer.step(batch) for _ in range(40)]
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    state = impl.to_numpy(trainer.model)
    assert state["beta"][0] != pytest.approx(0.1)  # the free array is trained too
    assert np.array_equal(state["latents"], arrays["latents"])  # unused arrays stay put
