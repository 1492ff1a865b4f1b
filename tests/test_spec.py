"""The spec: validation, JSON round trip, time convention, canonical names and shapes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resfields.errors import SpecError
from resfields.spec import (
    COMPRESSIONS,
    MODES,
    LinearSpec,
    MLPSpec,
    ResFieldSpec,
    SirenSpec,
    frame_to_time,
    init_rules,
    layer_specs,
    parameter_shapes,
    spec_from_dict,
    spec_from_json,
    spec_to_dict,
    spec_to_json,
    time_to_position,
)

resfield_specs = st.builds(
    lambda c, r, m, comp: ResFieldSpec(capacity=c, rank=None if comp == "none" else r, mode=m, compression=comp),
    st.integers(1, 50),
    st.integers(1, 8),
    st.sampled_from(MODES),
    st.sampled_from(COMPRESSIONS),
)


@given(rf=resfield_specs, hidden=st.integers(1, 64), n=st.integers(2, 8), data=st.data())
def test_siren_json_round_trip(rf, hidden, n, data):
    layers = tuple(data.draw(st.sets(st.integers(0, n - 1), min_size=1)))
    spec = SirenSpec(3, 2, hidden_features=hidden, n_layers=n, resfield_layers=layers, resfield=rf)
    assert spec_from_json(spec_to_json(spec)) == spec


@given(rf=resfield_specs, freq=st.integers(0, 6), skip=st.booleans())
def test_mlp_json_round_trip_and_shapes(rf, freq, skip):
    spec = MLPSpec(
        3,
        4,
        hidden_features=16,
        n_layers=5,
        n_frequencies=freq,
        skips=(2,) if skip else (),
        activation="softplus",
        resfield_layers=(1, 2),
        resfield=rf,
    )
    assert spec_from_json(spec_to_json(spec)) == spec
    shapes = parameter_shapes(spec)
    encoded = 3 * (1 + 2 * freq)
    assert shapes["layers.0.weight"] == (16, encoded)
    assert shapes["layers.2.weight"] == (16, 16 + encoded if skip else 16)
    assert shapes["layers.4.weight"] == (4, 16)
    assert set(init_rules(spec)) == set(shapes)


def test_parameter_names_per_compression():
    def names(compression):
        rf = ResFieldSpec(capacity=7, rank=None if compression == "none" else 3, compression=compression)
        return parameter_shapes(LinearSpec(5, 4, True, rf))

    assert names("vm") == {"weight": (4, 5), "bias": (4,), "coefficients": (7, 3), "matrices": (3, 4, 5)}
    assert names("none") == {"weight": (4, 5), "bias": (4,), "residuals": (7, 4, 5)}
    assert names("cp") == {
        "weight": (4, 5),
        "bias": (4,),
        "coefficients": (7, 3),
        "out_factors": (3, 4),
        "in_factors": (3, 5),
    }
    assert names("tucker")["core"] == (3, 3, 3)


def test_time_convention():
    assert frame_to_time(0, 10) == -1.0 and frame_to_time(9, 10) == 1.0
    assert frame_to_time(0, 1) == 0.0
    for f in range(10):  # frame f of T == C lands exactly on coefficient f
        assert time_to_position(frame_to_time(f, 10), 10) == pytest.approx(f)
    assert time_to_position(-3.0, 10) == 0.0 and time_to_position(3.0, 10) == 9.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"capacity": 0, "rank": 2}, "capacity"),
        ({"capacity": 4, "rank": 0}, "rank"),
        ({"capacity": 4, "rank": 2, "mode": "nearest"}, "mode"),
        ({"capacity": 4, "rank": 2, "compression": "svd"}, "compression"),
        ({"capacity": 4, "rank": 2, "compression": "none"}, "rank is not used"),
        ({"capacity": 4.0, "rank": 2}, "capacity"),
    ],
)
def test_resfield_spec_rejects_impossible_values(kwargs, message):
    with pytest.raises(SpecError, match=message):
        ResFieldSpec(**kwargs)


def test_field_spec_rejections():
    rf = ResFieldSpec(capacity=4, rank=2)
    with pytest.raises(SpecError, match="outside"):
        SirenSpec(3, 1, n_layers=3, resfield_layers=(3,), resfield=rf)
    with pytest.raises(SpecError, match="resfield is None"):
        SirenSpec(3, 1, resfield_layers=(1,))
    with pytest.raises(SpecError, match="skip"):
        MLPSpec(3, 1, n_layers=3, skips=(0,))
    with pytest.raises(SpecError, match="duplicates"):
        SirenSpec(3, 1, resfield_layers=(1, 1), resfield=rf)


def test_strict_dict_and_json_parsing():
    good = spec_to_dict(SirenSpec(3, 1))
    with pytest.raises(SpecError, match="unknown key"):
        spec_from_dict({**good, "hiden_features": 3})
    with pytest.raises(SpecError, match="expected an integer"):
        spec_from_dict({**good, "hidden_features": "64"})
    with pytest.raises(SpecError, match="expected an integer"):
        spec_from_dict({**good, "n_layers": True})
    with pytest.raises(SpecError, match="missing key"):
        spec_from_dict({"type": "siren", "in_features": 3})
    with pytest.raises(SpecError, match="type"):
        spec_from_dict({**good, "type": "nerf"})
    with pytest.raises(SpecError, match="schema_version"):
        spec_from_json(json.dumps({"schema_version": 99, "field": good}))
    with pytest.raises(SpecError, match="unknown key"):
        spec_from_json(
            json.dumps({"schema_version": 1, "field": {**good, "resfield": {"capacity": 2, "rank": 1, "bogus": 1}}})
        )
    with pytest.raises(SpecError, match="not valid JSON"):
        spec_from_json("{")


def test_layer_specs_mark_resfield_layers():
    rf = ResFieldSpec(capacity=4, rank=2)
    layers = layer_specs(SirenSpec(3, 1, n_layers=5, resfield_layers=(1, 2, 3), resfield=rf))
    assert [layer.resfield is not None for layer in layers] == [False, True, True, True, False]


def test_geometric_init_keeps_non_coordinate_inputs_at_zero_weight():
    from resfields.spec import MLPSpec, SpecError, init_rules, spec_from_json, spec_to_json

    spec = MLPSpec(
        4, 1, hidden_features=8, n_layers=4, n_frequencies=2, skips=(2,), init="geometric", coordinate_features=3
    )
    rules = init_rules(spec)
    assert rules["layers.0.weight"].zero_columns == ((3, spec.encoded_features),)
    fan_in = 8 + spec.encoded_features
    assert rules["layers.2.weight"].zero_columns == ((fan_in - spec.encoded_features + 3, fan_in),)
    assert spec_from_json(spec_to_json(spec)) == spec
    with pytest.raises(SpecError, match="coordinate_features"):
        MLPSpec(4, 1, init="geometric", coordinate_features=5)


def test_spec_json_nested_too_deep_is_one_spec_error():
    from resfields.errors import SpecError
    from resfields.spec import spec_from_json

    for text in ("[" * 100_000 + "]" * 100_000, '{"a":' * 200 + "1" + "}" * 200, '{"x": NaN}'):
        with pytest.raises(SpecError):
            spec_from_json(text)
