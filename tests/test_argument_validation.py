"""The compiled argument check must agree with jsonschema's Draft 2020-12 validator on every schema it accepts.

Differential: schemas drawn from the keyword subset the compiler implements, instances drawn from all JSON
values (with the number edge cases: bools, integral floats, bounds), and the verdicts compared one by one. A
schema outside the subset must be left to jsonschema, and the errors a client reads are jsonschema's either way.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from refserver.app import load_catalogs
from refserver.argument_validation import ArgumentValidator, NotCompilable, compile_schema

NAMES = st.sampled_from(["a", "b", "message", "n"])
NUMBERS = st.one_of(
    st.integers(-5, 5), st.sampled_from([0.0, 1.0, 2.5, -1.5, 3.0, 1e300]), st.floats(allow_nan=False, width=32)
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=4), st.sampled_from(["x", "yy", "zzz"]))
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(NAMES, inner, max_size=4)),
    max_leaves=12,
)
TYPES = st.sampled_from(["string", "number", "integer", "boolean", "object", "array", "null"])


def _schemas() -> st.SearchStrategy[Any]:
    leaf = st.fixed_dictionaries(
        {},
        optional={
            "type": st.one_of(TYPES, st.lists(TYPES, min_size=1, max_size=3, unique=True)),
            "minimum": st.integers(-3, 3),
            "maximum": st.sampled_from([0, 2, 2.5]),
            "exclusiveMinimum": st.sampled_from([-1, 0.5]),
            "exclusiveMaximum": st.sampled_from([3, 4.5]),
            "minLength": st.integers(0, 3),
            "maxLength": st.integers(0, 3),
            "enum": st.lists(st.sampled_from(["x", "yy", "zzz", ""]), min_size=1, max_size=3),
            "description": st.text(max_size=3),
            "default": SCALARS,
            "format": st.sampled_from(["uri", "email", "date-time"]),
        },
    )
    return st.recursive(
        st.one_of(leaf, st.booleans()),
        lambda inner: st.fixed_dictionaries(
            {},
            optional={
                "type": st.sampled_from(["object", "array"]),
                "properties": st.dictionaries(NAMES, inner, max_size=3),
                "required": st.lists(NAMES, max_size=3, unique=True),
                "additionalProperties": st.one_of(st.booleans(), inner),
                "items": inner,
                "minItems": st.integers(0, 2),
                "maxItems": st.integers(0, 3),
            },
        ),
        max_leaves=6,
    )


@settings(max_examples=3000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(schema=_schemas(), instance=JSON_VALUES)
@example(schema={"type": "integer"}, instance=True)
@example(schema={"type": "integer"}, instance=2.0)
@example(schema={"type": "number"}, instance=False)
@example(schema={"maximum": 2}, instance=True)
@example(schema={"enum": ["x"]}, instance=1)
@example(schema={"properties": {"a": False}}, instance={"a": None})
@example(schema={"additionalProperties": False, "properties": {"a": True}}, instance={"a": 1, "b": 2})
@example(schema={"minLength": 2}, instance="\U0001f600")
def test_compiled_check_agrees_with_jsonschema(schema: Any, instance: Any) -> None:
    check = compile_schema(schema)
    assert check(instance) == jsonschema.Draft202012Validator(schema).is_valid(instance), (schema, instance)


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#/$defs/x", "$defs": {"x": {"type": "string"}}},
        {"anyOf": [{"type": "string"}]},
        {"pattern": "^a"},
        {"const": 1},
        {"enum": [1, "a"]},
        {"patternProperties": {"^a": {}}, "additionalProperties": False},
        {"properties": {"a": {"oneOf": [{"type": "string"}]}}},
        {"uniqueItems": True},
    ],
)
def test_schemas_outside_the_subset_are_left_to_jsonschema(schema: dict[str, Any]) -> None:
    with pytest.raises(NotCompilable):
        compile_schema(schema)
    validator = ArgumentValidator(schema)
    assert not validator.compiled
    expected = sorted(jsonschema.Draft202012Validator(schema).iter_errors("aaa"), key=lambda e: list(e.path))
    assert [p.message for p in validator.problems("aaa")] == [e.message for e in expected]


def test_invalid_arguments_get_jsonschemas_errors_in_path_order() -> None:
    schema = {
        "type": "object",
        "properties": {"b": {"type": "integer", "minimum": 0}, "a": {"type": "string"}},
        "required": ["a", "b"],
    }
    validator = ArgumentValidator(schema)
    assert validator.compiled
    assert validator.problems({"a": "x", "b": 1}) == []
    problems = validator.problems({"a": 3, "b": -1})
    assert [(list(p.path), p.validator) for p in problems] == [(["a"], "type"), (["b"], "minimum")]
    assert [p.message for p in validator.problems({})] == ["'a' is a required property", "'b' is a required property"]


def test_the_shipped_tools_are_compiled_but_the_2020_12_showcase() -> None:
    tools = [tool for catalog in load_catalogs(("reference", "conformance")) for tool in catalog.tools]
    left_to_jsonschema = {t.definition.name for t in tools if not ArgumentValidator(t.definition.input_schema).compiled}
    assert left_to_jsonschema == {"json_schema_2020_12_tool"}
