"""A tool's arguments checked against its input schema: a compiled check first, jsonschema for the errors.

jsonschema walks the schema anew on every call (about a tenth of an echo call's time in our own code, the
profile showed). Most tool schemas use a handful of keywords: an object with typed properties, `required`,
bounds, string enums. Such a schema is compiled once into nested closures that answer "valid?" exactly as
jsonschema's Draft 2020-12 validator would; any keyword outside that set (references, combinators,
conditionals, patterns, ...) leaves the whole schema to jsonschema. When the compiled check says no, jsonschema
runs anyway to name every problem, so the errors a client reads are jsonschema's whatever path was taken.

Part of the request core: no async library here (a contract).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Final

import jsonschema

Check = Callable[[Any], bool]

ANNOTATIONS: Final = frozenset(
    {"title", "description", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly", "$schema"}
)
"""Keywords that never make an instance invalid. `format` is one of them too: our validators are built without
a format checker, so Draft 2020-12 treats it as an annotation."""
FORMAT_ANNOTATION: Final = "format"

_TYPE_CHECKS: Final[dict[str, Check]] = {
    "string": lambda value: isinstance(value, str),
    "boolean": lambda value: isinstance(value, bool),
    "null": lambda value: value is None,
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
    "number": lambda value: isinstance(value, int | float) and not isinstance(value, bool),
    "integer": lambda value: (
        (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())
    ),
}


def _always(value: Any) -> bool:
    return True


_ALWAYS: Final[Check] = _always


class NotCompilable(Exception):
    """The schema uses a keyword the compiled check does not implement: jsonschema alone decides."""


class ArgumentValidator:
    """Validates one tool's arguments; `problems` is empty when they are valid."""

    __slots__ = ("_check", "_validator")

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self._validator = jsonschema.Draft202012Validator(schema)
        try:
            self._check: Check | None = compile_schema(schema)
        except NotCompilable:
            self._check = None

    @property
    def compiled(self) -> bool:
        return self._check is not None

    def problems(self, arguments: Any) -> list[jsonschema.ValidationError]:
        if self._check is not None and self._check(arguments):
            return []
        return sorted(self._validator.iter_errors(arguments), key=lambda error: list(error.path))


def compile_schema(schema: Any) -> Check:
    """A predicate equal to Draft 2020-12 validity for `schema`, or `NotCompilable`."""
    if schema is True:
        return _ALWAYS
    if schema is False:
        return lambda value: False
    if not isinstance(schema, Mapping):
        raise NotCompilable(repr(schema))
    checks: list[Check] = []
    for keyword, argument in schema.items():
        if keyword in ANNOTATIONS or keyword == FORMAT_ANNOTATION or keyword.startswith("x-"):
            continue
        compiler = _KEYWORDS.get(keyword)
        if compiler is None:
            raise NotCompilable(keyword)
        checks.append(compiler(argument, schema))
    checks = [check for check in checks if check is not _ALWAYS]
    if not checks:
        return _ALWAYS
    if len(checks) == 1:
        return checks[0]

    def every(value: Any) -> bool:
        return all(check(value) for check in checks)

    return every


def _type(argument: Any, schema: Mapping[str, Any]) -> Check:
    names = [argument] if isinstance(argument, str) else argument
    if not isinstance(names, list) or not names or any(name not in _TYPE_CHECKS for name in names):
        raise NotCompilable(f"type {argument!r}")
    if len(names) == 1:
        return _TYPE_CHECKS[names[0]]
    alternatives = [_TYPE_CHECKS[name] for name in names]
    return lambda value: any(check(value) for check in alternatives)


def _properties(argument: Any, schema: Mapping[str, Any]) -> Check:
    if not isinstance(argument, Mapping):
        raise NotCompilable("properties")
    compiled = {name: compile_schema(sub) for name, sub in argument.items()}
    checked = [(name, check) for name, check in compiled.items() if check is not _ALWAYS]

    def properties(value: Any) -> bool:
        if not isinstance(value, dict):
            return True
        return all(check(value[name]) for name, check in checked if name in value)

    return properties


def _required(argument: Any, schema: Mapping[str, Any]) -> Check:
    if not isinstance(argument, list) or not all(isinstance(name, str) for name in argument):
        raise NotCompilable("required")
    names = tuple(argument)
    return lambda value: not isinstance(value, dict) or all(name in value for name in names)


def _additional_properties(argument: Any, schema: Mapping[str, Any]) -> Check:
    if "patternProperties" in schema:
        raise NotCompilable("additionalProperties with patternProperties")
    declared = frozenset(schema.get("properties") or ())
    check = compile_schema(argument)
    if check is _ALWAYS:
        return _ALWAYS

    def additional(value: Any) -> bool:
        if not isinstance(value, dict):
            return True
        return all(check(item) for name, item in value.items() if name not in declared)

    return additional


def _number_bound(compare: Callable[[float, float], bool]) -> Callable[[Any, Mapping[str, Any]], Check]:
    def compile_bound(argument: Any, schema: Mapping[str, Any]) -> Check:
        if isinstance(argument, bool) or not isinstance(argument, int | float) or not math.isfinite(argument):
            raise NotCompilable("numeric bound")
        bound = argument

        def within(value: Any) -> bool:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return True
            return compare(value, bound)

        return within

    return compile_bound


def _length_bound(kind: type[str] | type[list[Any]], at_least: bool) -> Callable[[Any, Mapping[str, Any]], Check]:
    def compile_bound(argument: Any, schema: Mapping[str, Any]) -> Check:
        if isinstance(argument, bool) or not isinstance(argument, int) or argument < 0:
            raise NotCompilable("length bound")
        bound = argument
        if at_least:
            return lambda value: not isinstance(value, kind) or len(value) >= bound
        return lambda value: not isinstance(value, kind) or len(value) <= bound

    return compile_bound


def _enum(argument: Any, schema: Mapping[str, Any]) -> Check:
    # Only strings: jsonschema's equality treats 1 and 1.0 as equal and True and 1 as different, which a set of
    # mixed JSON values would not reproduce.
    if not isinstance(argument, list) or not argument or not all(isinstance(item, str) for item in argument):
        raise NotCompilable("enum")
    allowed = frozenset(argument)
    return lambda value: isinstance(value, str) and value in allowed


def _items(argument: Any, schema: Mapping[str, Any]) -> Check:
    if "prefixItems" in schema:
        raise NotCompilable("items with prefixItems")
    check = compile_schema(argument)
    if check is _ALWAYS:
        return _ALWAYS
    return lambda value: not isinstance(value, list) or all(check(item) for item in value)


_KEYWORDS: Final[dict[str, Callable[[Any, Mapping[str, Any]], Check]]] = {
    "type": _type,
    "properties": _properties,
    "required": _required,
    "additionalProperties": _additional_properties,
    "minimum": _number_bound(lambda value, bound: value >= bound),
    "maximum": _number_bound(lambda value, bound: value <= bound),
    "exclusiveMinimum": _number_bound(lambda value, bound: value > bound),
    "exclusiveMaximum": _number_bound(lambda value, bound: value < bound),
    "minLength": _length_bound(str, at_least=True),
    "maxLength": _length_bound(str, at_least=False),
    "minItems": _length_bound(list, at_least=True),
    "maxItems": _length_bound(list, at_least=False),
    "enum": _enum,
    "items": _items,
}
