"""DarcySpec: defaults, validation naming the field, replace / to_dict / from_dict."""

import dataclasses
import json
import math

import numpy as np
import pytest

from stabilitykit.workloads.darcy.spec import DarcySpec

DEFAULTS = {
    "resolution": 85,
    "n_train": 1000,
    "n_test": 100,
    "seed": 0,
    "tau": 3.0,
    "alpha": 2.0,
    "a_high": 12.0,
    "a_low": 3.0,
}


def test_defaults_are_the_fno_benchmark():
    spec = DarcySpec()
    assert spec.to_dict() == DEFAULTS
    assert spec.channels == 1


BAD = [
    ("resolution", 7),
    ("resolution", 0),
    ("resolution", -85),
    ("resolution", 1025),
    ("resolution", True),
    ("resolution", 85.0),
    ("resolution", "85"),
    ("resolution", None),
    ("n_train", 0),
    ("n_train", -1),
    ("n_train", True),
    ("n_train", 1.5),
    ("n_test", 0),
    ("n_test", False),
    ("n_test", 2.0),
    ("seed", -1),
    ("seed", True),
    ("seed", 0.5),
    ("tau", 0.0),
    ("tau", -3.0),
    ("tau", math.inf),
    ("tau", math.nan),
    ("tau", True),
    ("tau", "3"),
    ("alpha", 0),
    ("alpha", -2.0),
    ("alpha", math.nan),
    ("alpha", None),
    ("a_high", 0.0),
    ("a_high", -12.0),
    ("a_high", math.inf),
    ("a_high", False),
    ("a_low", 0.0),
    ("a_low", -3.0),
    ("a_low", -math.inf),
    ("a_low", True),
]


@pytest.mark.parametrize(("field", "value"), BAD, ids=[f"{f}={v!r}" for f, v in BAD])
def test_bad_values_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^DarcySpec\.{field}: got ") as info:
        DarcySpec(**{field: value})
    assert repr(value) in str(info.value)
    assert "allowed:" in str(info.value)


def test_resolution_bounds_are_inclusive():
    assert DarcySpec(resolution=8).resolution == 8
    assert DarcySpec(resolution=1024).resolution == 1024


def test_numpy_scalars_are_normalised_to_python_types():
    spec = DarcySpec(resolution=np.int64(33), seed=np.int32(5), tau=np.float32(2.5), a_low=1)
    d = spec.to_dict()
    assert type(d["resolution"]) is int and type(d["seed"]) is int
    assert type(d["tau"]) is float and d["tau"] == 2.5
    assert type(d["a_low"]) is float
    json.dumps(d)


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DarcySpec().seed = 1  # type: ignore[misc]


def test_replace_validates_and_rejects_unknown_fields():
    spec = DarcySpec()
    assert spec.replace(seed=3).seed == 3
    assert spec.seed == 0
    with pytest.raises(ValueError, match=r"DarcySpec\.n_test"):
        spec.replace(n_test=0)
    with pytest.raises(ValueError, match=r"unknown field.*'nimgs'.*allowed.*'resolution'"):
        spec.replace(nimgs=3)


def test_dict_round_trip_through_json():
    spec = DarcySpec(resolution=33, n_train=4, n_test=2, seed=7, tau=2.0, alpha=2.5)
    d = json.loads(json.dumps(spec.to_dict()))
    assert DarcySpec.from_dict(d) == spec
    assert DarcySpec.from_dict({}) == DarcySpec()


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown field.*'s'.*allowed"):
        DarcySpec.from_dict({**DEFAULTS, "s": 85})
