"""lossweave.arguments: the one validator of constructor arguments (backend-independent)."""

import math

import numpy as np
import pytest

from conftest import one_backend
from lossweave import arguments

pytestmark = one_backend

INTEGERS = [3, np.int32(3), np.int64(3)]
FLOATS = [0.5, np.float32(0.5), np.float64(0.5)]
NOT_NUMBERS = [True, False, np.bool_(True), "0.5", "3", None, [0.5], b"1"]
NON_FINITE = [float("nan"), float("inf"), -float("inf"), np.float32("nan"), np.float64("inf")]


def _refused(call, *parts):
    """``call()`` raises a ValueError whose message has every part (owner, argument, received...)."""
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


# ------------------------------------------------------------------ number
@pytest.mark.parametrize("value", INTEGERS + FLOATS)
def test_number_accepts_python_and_numpy_scalars_and_returns_a_python_float(value):
    result = arguments.number(value, "margin", "ArcFace")
    assert type(result) is float
    assert result == float(value)


@pytest.mark.parametrize("value", NOT_NUMBERS + NON_FINITE)
def test_number_refuses_bools_strings_and_non_finite_values(value):
    _refused(lambda: arguments.number(value, "margin", "ArcFace"), "ArcFace", "`margin`", "number",
             f"received {value!r}")


@pytest.mark.parametrize(
    "value, bounds, expected",
    [
        (-0.1, {"low": 0.0}, ">= 0"),
        (0.0, {"low": 0.0, "low_open": True}, "> 0"),
        (1.5, {"high": 1.0}, "<= 1"),
        (1.0, {"high": 1.0, "high_open": True}, "< 1"),
        (np.float32(2.0), {"low": 0.0, "high": 1.0}, ">= 0 and <= 1"),
    ],
)
def test_number_refuses_values_out_of_bounds_and_says_the_bounds(value, bounds, expected):
    _refused(lambda: arguments.number(value, "beta", "MoCo", **bounds), "MoCo", "`beta`", expected, "received")


def test_number_keeps_values_on_a_closed_bound():
    assert arguments.number(0, "beta", "DBMTL", low=0.0, high=1.0, high_open=True) == 0.0
    assert arguments.number(np.float32(1.0), "beta", "MoCo", low=0.0, low_open=True, high=1.0) == 1.0


@pytest.mark.parametrize("value", INTEGERS + FLOATS)
def test_positive_accepts_positive_scalars(value):
    assert type(arguments.positive(value, "scale", "CosFace")) is float


@pytest.mark.parametrize("value", [0, 0.0, -1, np.float32(-0.5), np.int64(0)])
def test_positive_refuses_zero_and_negative_values(value):
    _refused(lambda: arguments.positive(value, "scale", "CosFace"), "CosFace", "`scale`", "> 0", "received")


@pytest.mark.parametrize("value", NOT_NUMBERS + NON_FINITE)
def test_positive_refuses_what_number_refuses(value):
    _refused(lambda: arguments.positive(value, "scale", "CosFace"), "CosFace", "`scale`", "received")


# ----------------------------------------------------------------- integer
@pytest.mark.parametrize("value", INTEGERS)
def test_integer_accepts_python_and_numpy_integers_and_returns_a_python_int(value):
    result = arguments.integer(value, "num_classes", "CenterLoss", low=1)
    assert type(result) is int and result == 3


@pytest.mark.parametrize("value", NOT_NUMBERS + NON_FINITE + [3.0, 2.5, np.float32(3.0), np.float64(3.0)])
def test_integer_refuses_bools_floats_strings_and_non_finite_values(value):
    _refused(lambda: arguments.integer(value, "num_classes", "CenterLoss"), "CenterLoss", "`num_classes`",
             "int", f"received {value!r}")


@pytest.mark.parametrize("value, bounds, expected", [
    (0, {"low": 1}, ">= 1"),
    (np.int64(13), {"low": 2, "high": 12}, ">= 2 and <= 12"),
    (np.int32(-1), {"low": 0}, ">= 0"),
])
def test_integer_refuses_values_out_of_bounds(value, bounds, expected):
    _refused(lambda: arguments.integer(value, "k", "MGDA", **bounds), "MGDA", "`k`", expected, "received")


@pytest.mark.parametrize("value", INTEGERS)
def test_positive_int_accepts_positive_integers(value):
    assert type(arguments.positive_int(value, "iterations", "NashMTL")) is int


@pytest.mark.parametrize("value", [0, -2, np.int64(0), 1.0, True, np.bool_(True), "1"])
def test_positive_int_refuses_the_rest(value):
    _refused(lambda: arguments.positive_int(value, "iterations", "NashMTL"), "NashMTL", "`iterations`",
             ">= 1", "received")


# -------------------------------------------------------------------- seed
@pytest.mark.parametrize("value", INTEGERS + [0, -7, np.int64(2**40)])
def test_seed_accepts_python_and_numpy_integers(value):
    result = arguments.seed(value, "RLW")
    assert type(result) is int and result == int(value)


def test_seed_accepts_none_for_a_random_seed():
    assert arguments.seed(None, "RLW") is None


@pytest.mark.parametrize("value", [True, np.bool_(False), 1.5, 1.0, np.float32(1.0), "1", float("nan")])
def test_seed_refuses_bools_floats_and_strings(value):
    _refused(lambda: arguments.seed(value, "PCGrad"), "PCGrad", "`seed`", "int or None", f"received {value!r}")


def test_seed_names_another_argument():
    _refused(lambda: arguments.seed(1.5, "Sampler", name="sample_seed"), "`sample_seed`")


# ----------------------------------------------------------------- boolean
@pytest.mark.parametrize("value, expected", [(True, True), (False, False), (np.bool_(True), True),
                                             (np.bool_(False), False)])
def test_boolean_accepts_python_and_numpy_bools_and_returns_a_python_bool(value, expected):
    result = arguments.boolean(value, "normalize", "MoCo")
    assert type(result) is bool and result is expected


@pytest.mark.parametrize("value", [0, 1, np.int64(1), 1.0, "yes", "True", None])
def test_boolean_refuses_numbers_strings_and_none(value):
    _refused(lambda: arguments.boolean(value, "normalize", "MoCo"), "MoCo", "`normalize`", "True or False",
             f"received {value!r}")


# ------------------------------------------------------------------ choice
def test_choice_returns_one_of_the_choices():
    assert arguments.choice("layer", ("whole", "layer"), "grouping", "GradVac") == "layer"
    assert arguments.choice(np.int64(1), (0, 1, 2), "rescale", "CAGrad") == 1


@pytest.mark.parametrize("value", ["layers", None, 3, True, np.bool_(True)])
def test_choice_refuses_other_values_and_lists_the_choices(value):
    message = _refused(lambda: arguments.choice(value, ("whole", "layer", 1), "grouping", "GradVac"),
                       "GradVac", "`grouping`", "one of", "'whole'", "'layer'", f"received {value!r}")
    assert "('whole', 'layer', 1)" in message


def test_choice_never_takes_a_bool_for_an_integer_choice():
    # True == 1 in Python: without the bool check, rescale=True would pass as 1.
    _refused(lambda: arguments.choice(True, (0, 1, 2), "rescale", "CAGrad"), "CAGrad", "`rescale`")


# ---------------------------------------------------------------- optional
def test_optional_passes_none_through_and_checks_the_rest():
    assert arguments.optional(arguments.positive_int, None, "batch_size", "EmbeddingEvaluation") is None
    result = arguments.optional(arguments.positive_int, np.int64(8), "batch_size", "EmbeddingEvaluation")
    assert type(result) is int and result == 8
    result = arguments.optional(arguments.number, np.float32(0.25), "far", "X", low=0.0, high=1.0)
    assert type(result) is float and result == 0.25
    _refused(lambda: arguments.optional(arguments.positive_int, 0, "batch_size", "EmbeddingEvaluation"),
             "EmbeddingEvaluation", "`batch_size`", "received 0")


# ------------------------------------------------------------------- owner
def test_the_owner_may_be_an_object_or_a_class_name():
    class ArcFace:
        pass

    _refused(lambda: arguments.number("x", "margin", ArcFace()), "ArcFace: `margin`")
    _refused(lambda: arguments.number("x", "margin", "ArcFace"), "ArcFace: `margin`")


# -------------------------------------------------------------- keywords
class _Base:
    def __init__(self, on="features", target="label", **kwargs):
        arguments.check_keywords(self, kwargs)
        self.on, self.target = on, target


class _Leaf(_Base):
    def __init__(self, num_classes, margin=0.5, *, scale=30.0, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.margin, self.scale = num_classes, margin, scale


def test_accepted_keywords_follow_the_bases_that_take_kwargs():
    assert arguments.accepted_keywords(_Leaf) == ["num_classes", "margin", "scale", "on", "target"]


def test_check_keywords_accepts_the_class_base_and_layer_arguments():
    _Leaf(4, margin=0.2, scale=8.0, on="x", target="y", name="leaf", dtype="float32", trainable=False)


def test_check_keywords_refuses_an_unknown_keyword_and_lists_the_accepted_ones():
    with pytest.raises(TypeError) as info:
        _Leaf(4, marign=0.2, bogus_argument=1)
    message = str(info.value)
    assert message.startswith("_Leaf: ")
    assert "['bogus_argument', 'marign']" in message
    for accepted in ("num_classes", "margin", "scale", "on", "target", *arguments.LAYER_ARGUMENTS):
        assert f"'{accepted}'" in message


def test_check_keywords_takes_the_class_itself():
    with pytest.raises(TypeError, match=r"_Base: unknown keyword argument\(s\) \['x'\]"):
        arguments.check_keywords(_Base, {"x": 1, "on": "z"})


def test_every_function_returns_plain_python_types_that_json_writes():
    import json

    values = [
        arguments.number(np.float32(0.1), "a", "X"),
        arguments.positive(np.float64(2), "b", "X"),
        arguments.integer(np.int32(-3), "c", "X"),
        arguments.positive_int(np.int64(7), "d", "X"),
        arguments.seed(np.int64(5), "X"),
        arguments.boolean(np.bool_(True), "e", "X"),
    ]
    assert [type(v) for v in values] == [float, float, int, int, int, bool]
    assert json.loads(json.dumps(values))[0] == pytest.approx(0.1)
    assert math.isclose(values[0], float(np.float32(0.1)))
