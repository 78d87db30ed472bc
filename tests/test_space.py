"""Search-space validation: every bad point is refused with the field and what is allowed."""

import math

import pytest

from sdl.errors import InvalidInput
from sdl.space import ChoiceParameter, Composition, FixedParameter, RangeParameter, SearchSpace


@pytest.fixture
def space():
    return SearchSpace(
        parameters=[
            RangeParameter(name="A", lower=0, upper=1),
            RangeParameter(name="B", lower=0, upper=1),
            RangeParameter(name="C", lower=0, upper=1),
            RangeParameter(name="temperature", lower=150, upper=650, units="degC"),
            RangeParameter(name="steps", lower=1, upper=10, value_type="int"),
            ChoiceParameter(name="solvent", values=["water", "ethanol"]),
            FixedParameter(name="pressure", value=1.0),
        ],
        compositions=[Composition(components=["A", "B", "C"])],
    )


GOOD = {"A": 0.2, "B": 0.3, "C": 0.5, "temperature": 400, "steps": 3, "solvent": "water"}


def test_valid_point_gets_fixed_values_and_types(space):
    out = space.validate_point(dict(GOOD))
    assert out["pressure"] == 1.0
    assert isinstance(out["steps"], int) and out["temperature"] == 400.0


@pytest.mark.parametrize(
    "change, field, words",
    [
        ({"colour": 1}, "colour", "unknown parameter; allowed: ['A', 'B', 'C', 'temperature'"),
        ({"temperature": 900}, "temperature", "out of range: allowed [150.0, 650.0] degC"),
        ({"temperature": math.nan}, "temperature", "finite"),
        ({"temperature": "hot"}, "temperature", "must be a number"),
        ({"A": 0.5}, "composition", "must sum to 1"),
        ({"steps": 2.5}, "steps", "integer"),
        ({"solvent": "acetone"}, "solvent", "must be one of ['water', 'ethanol']"),
        ({"pressure": 2.0}, "pressure", "fixed at 1.0"),
    ],
)
def test_bad_points_name_field_and_allowed(space, change, field, words):
    with pytest.raises(InvalidInput) as info:
        space.validate_point({**GOOD, **change})
    assert info.value.field == field
    assert words in str(info.value)


def test_missing_parameter_is_named(space):
    point = dict(GOOD)
    del point["B"]
    with pytest.raises(InvalidInput, match="B: missing"):
        space.validate_point(point)


def test_space_definition_errors():
    with pytest.raises(ValueError, match="lower"):
        RangeParameter(name="x", lower=1, upper=0)
    with pytest.raises(ValueError, match="unknown parameters"):
        SearchSpace(parameters=[RangeParameter(name="x", lower=0, upper=1)],
                    compositions=[Composition(components=["x", "y"])])
    with pytest.raises(ValueError, match="duplicate"):
        SearchSpace(parameters=[RangeParameter(name="x", lower=0, upper=1)] * 2)


def test_pool_membership():
    space = SearchSpace(parameters=[RangeParameter(name="x", lower=0, upper=1)], pool=[{"x": 0.1}, {"x": 0.5}])
    assert space.validate_point({"x": 0.5}) == {"x": 0.5}
    with pytest.raises(InvalidInput, match="not in the candidate pool"):
        space.validate_point({"x": 0.3})
