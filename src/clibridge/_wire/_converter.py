"""The one cattrs converter for inbound JSON, and its error reporting.

Theory of operation
-------------------
Each dialect describes the request bodies it accepts as frozen attrs classes (the
``*_shapes`` modules) that mirror the API's schema, loose where clients are loose: every
field a client may omit has a default, and unknown keys are ignored because clients send
new fields all the time. :func:`structure` turns a decoded JSON value into such a class.

The converter is stricter than cattrs' defaults on purpose. cattrs would happily call
``str({"a": 1})`` or iterate a string into a list; a JSON API must instead say *what* was
wrong and *where*. So primitives, lists, objects and literals get strict hooks that raise
:class:`WireValueError` with a message saying what was expected, and unions are resolved
by the JSON kind of the value (string / array / object / ...) and, among several object
classes, by their ``type`` tag. Detailed validation records the path of every failure;
:func:`structure` renders the first one with :func:`cattrs.transform_error` into a
:class:`~clibridge._errors.RequestError` whose ``param`` is a JSON path such as
``$.messages[2].content``.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeVar, get_args, get_origin

import attrs
import cattrs
import cattrs.cols
from cattrs.gen import make_dict_structure_fn

from .._errors import RequestError

T = TypeVar("T")

#: a JSON object kept as-is (JSON Schemas, metadata)
JsonObject: typing.TypeAlias = dict[str, Any]

_NoneType = type(None)


class WireValueError(ValueError):
    """A value of the wrong JSON kind or outside the allowed set; the message says what was expected."""


def _kind_of(value: object) -> str:
    """The JSON kind of a decoded value, as a client would name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _kind_of_type(tp: Any) -> str:
    """The JSON kind a Python annotation accepts."""
    if tp is _NoneType or tp is None:
        return "null"
    if tp is bool:
        return "boolean"
    if tp is str:
        return "string"
    if tp is int or tp is float:
        return "number"
    origin = get_origin(tp)
    if origin is Literal:
        return _kind_of(get_args(tp)[0])
    if origin is list or origin is tuple:
        return "array"
    if origin is dict or attrs.has(tp):
        return "object"
    if tp is Any or tp is object:
        return "any"
    raise TypeError(f"no JSON kind for {tp!r}")


def _expected(kind: str) -> str:
    return {"array": "an array", "object": "an object", "null": "null"}.get(kind, f"a {kind}")


def _got(value: object) -> str:
    return f"got {_kind_of(value)}"


# --------------------------------------------------------------------------- strict hooks


def _structure_str(value: object, _: Any) -> str:
    if not isinstance(value, str):
        raise WireValueError(f"expected a string, {_got(value)}")
    return value


def _structure_int(value: object, _: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WireValueError(f"expected an integer, {_got(value)}")
    if isinstance(value, float):
        if not value.is_integer():
            raise WireValueError(f"expected an integer, got {value!r}")
        return int(value)
    return value


def _structure_float(value: object, _: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WireValueError(f"expected a number, {_got(value)}")
    return float(value)


def _structure_bool(value: object, _: Any) -> bool:
    if not isinstance(value, bool):
        raise WireValueError(f"expected a boolean, {_got(value)}")
    return value


def _structure_none(value: object, _: Any) -> None:
    if value is not None:
        raise WireValueError(f"expected null, {_got(value)}")


def _structure_any(value: object, _: Any) -> object:
    return value


def _list_factory(tp: Any, conv: cattrs.BaseConverter) -> Callable[[object, Any], list[Any]]:
    inner = cattrs.cols.list_structure_factory(tp, conv)

    def structure_list(value: object, t: Any) -> list[Any]:
        if not isinstance(value, list):
            raise WireValueError(f"expected an array, {_got(value)}")
        result: list[Any] = inner(value, t)
        return result

    return structure_list


def _dict_factory(tp: Any, conv: cattrs.BaseConverter) -> Callable[[object, Any], dict[str, Any]]:
    args = get_args(tp)
    value_type = args[1] if len(args) == 2 else Any

    def structure_dict(value: object, _: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise WireValueError(f"expected an object, {_got(value)}")
        if value_type is Any or value_type is object:
            return dict(value)
        return {str(k): conv.structure(v, value_type) for k, v in value.items()}

    return structure_dict


def _literal_factory(tp: Any, conv: cattrs.BaseConverter) -> Callable[[object, Any], object]:
    allowed = get_args(tp)
    shown = ", ".join(repr(a) for a in allowed)

    def structure_literal(value: object, _: Any) -> object:
        # type() check: JSON true must not pass for a Literal[1], nor 1 for Literal[True]
        for a in allowed:
            if type(a) is type(value) and a == value:
                return a
        raise WireValueError(f"expected one of {shown}, got {value!r}"[:300])

    return structure_literal


def _attrs_factory(tp: Any, conv: cattrs.BaseConverter) -> Callable[[object, Any], object]:
    inner = make_dict_structure_fn(tp, conv)

    def structure_object(value: object, t: Any) -> object:
        if not isinstance(value, dict):
            raise WireValueError(f"expected an object, {_got(value)}")
        return inner(value, t)

    return structure_object


def _is_list(tp: Any) -> bool:
    return get_origin(tp) is list


def _is_dict(tp: Any) -> bool:
    return get_origin(tp) is dict


def _is_literal(tp: Any) -> bool:
    return get_origin(tp) is Literal


def _is_union(tp: Any) -> bool:
    return get_origin(tp) is typing.Union or isinstance(tp, types.UnionType)


def _tag_values(cls: type) -> tuple[tuple[str, ...], bool]:
    """The ``type`` literals an attrs class accepts, and whether ``type`` may be omitted."""
    attrs.resolve_types(cls)
    for field in attrs.fields(cls):
        if field.name == "type" and get_origin(field.type) is Literal:
            return tuple(str(a) for a in get_args(field.type)), field.default is not attrs.NOTHING
    raise TypeError(f"{cls.__name__} is in a union with other objects but has no Literal `type`")


def _union_factory(tp: Any, conv: cattrs.BaseConverter) -> Callable[[object, Any], object]:
    """Resolve a union by the JSON kind of the value, then by the ``type`` tag of objects."""
    by_kind: dict[str, list[Any]] = {}
    for member in get_args(tp):
        by_kind.setdefault(_kind_of_type(member), []).append(member)
    tagged: dict[str, Any] = {}
    untagged_default: Any = None
    objects = by_kind.get("object", [])
    if len(objects) > 1:
        for cls in objects:
            values, optional = _tag_values(cls)
            for v in values:
                tagged[v] = cls
            if optional:
                untagged_default = cls
    expected = " or ".join(
        dict.fromkeys(
            "an integer" if m is int else _expected(_kind_of_type(m)) for m in get_args(tp)
        )
    )

    def structure_union(value: object, _: Any) -> object:
        if "any" in by_kind:
            return value
        kind = _kind_of(value)
        candidates = by_kind.get(kind)
        if not candidates:
            raise WireValueError(f"expected {expected}, {_got(value)}")
        if len(candidates) == 1:
            return conv.structure(value, candidates[0])
        assert isinstance(value, dict)
        tag = value.get("type")
        if tag is None and untagged_default is not None:
            return conv.structure(value, untagged_default)
        cls = tagged.get(tag) if isinstance(tag, str) else None
        if cls is None:
            names = ", ".join(repr(t) for t in tagged)
            raise WireValueError(f"unsupported type {tag!r}; expected one of {names}"[:300])
        return conv.structure(value, cls)

    return structure_union


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(detailed_validation=True, forbid_extra_keys=False)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook_func(lambda t: t is _NoneType, _structure_none)
    conv.register_structure_hook_func(lambda t: t is Any or t is object, _structure_any)
    conv.register_structure_hook_factory(_is_list, _list_factory)
    conv.register_structure_hook_factory(_is_dict, _dict_factory)
    conv.register_structure_hook_factory(_is_literal, _literal_factory)
    conv.register_structure_hook_factory(_is_union, _union_factory)
    conv.register_structure_hook_factory(attrs.has, _attrs_factory)
    return conv


#: the converter every inbound request shape goes through
converter = _make_converter()


def _format_exception(exc: BaseException, tp: type | None) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, WireValueError):
        return str(exc)
    return cattrs.v.format_exception(exc, tp)


_SURROGATE = re.compile("[\ud800-\udfff]")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCAN_ENCODER = json.JSONEncoder(ensure_ascii=False, check_circular=False)


def _path_text(parts: list[str | int]) -> str:
    out = ["$"]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENTIFIER.fullmatch(part):
            out.append(f".{part}")
        else:
            out.append(f"[{json.dumps(part)}]")
    return "".join(out)


def _has_surrogate(text: str) -> bool:
    # isascii() is O(1); only non-ASCII text is searched
    return not text.isascii() and _SURROGATE.search(text) is not None


def find_lone_surrogate(value: object) -> str | None:
    """The JSON path of the first string or object key holding a lone UTF-16 surrogate.

    ``json.loads`` turns a ``"\\ud800"`` escape without its pair (or the bytes of an
    encoded surrogate) into a lone surrogate, which is not Unicode text: it cannot be
    encoded as UTF-8 for a CLI's stdin. Python strings keep a valid pair as one code
    point, so any surrogate left in a decoded string is a lone one.

    Re-encoding the whole value in C (to JSON, then UTF-8, which fails on a surrogate)
    costs about what ``json.loads`` did, a Python walk several times more: the walk that
    finds the path runs only when there is something to find.
    """
    try:
        text = _SCAN_ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError):
        pass  # not plain JSON data: walk it
    else:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            pass  # find it
        else:
            return None
    return _walk_for_surrogate(value)


def _walk_for_surrogate(value: object) -> str | None:
    # iterative, so a deep body cannot overflow the stack; ``trail`` holds (parent index,
    # path part) per visited child, so the path is built only for the hit
    trail: list[tuple[int, str | int]] = []
    stack: list[tuple[object, int]] = [(value, -1)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            if _has_surrogate(item):
                return _trail_path(trail, at)
        elif isinstance(item, dict):
            for key, child in item.items():
                trail.append((at, key))
                if isinstance(key, str) and _has_surrogate(key):
                    return _trail_path(trail, len(trail) - 1)
                if isinstance(child, str | list | dict):
                    stack.append((child, len(trail) - 1))
        elif isinstance(item, list):
            for index, child in enumerate(item):
                if isinstance(child, str | list | dict):
                    trail.append((at, index))
                    stack.append((child, len(trail) - 1))
    return None


def _trail_path(trail: list[tuple[int, str | int]], at: int) -> str:
    parts: list[str | int] = []
    while at >= 0:
        at, part = trail[at]
        parts.append(part)
    return _path_text(parts[::-1])


def check_text(body: object) -> None:
    """Raise a RequestError naming the field if ``body`` holds a lone surrogate anywhere."""
    path = find_lone_surrogate(body)
    if path is not None:
        raise RequestError(
            f"{path}: contains a lone UTF-16 surrogate (a \\ud800-\\udfff escape without "
            "its pair), which is not valid Unicode and cannot be passed to the model; send "
            "well-formed text (pair the surrogate, or replace it with U+FFFD)",
            param=path,
        )


def structure(body: object, cls: type[T]) -> T:
    """Structure a decoded JSON value into ``cls``, or raise a path-naming RequestError.

    Text anywhere in ``body`` must be valid Unicode (:func:`check_text`), so that no field
    that reaches a CLI can fail to encode on the way there.
    """
    check_text(body)
    try:
        return converter.structure(body, cls)
    except (cattrs.BaseValidationError, WireValueError) as exc:
        lines = cattrs.transform_error(exc, path="$", format_exception=_format_exception)
        first = lines[0] if lines else "invalid request body"
        message, _, path = first.rpartition(" @ ")
        if not message:
            message, path = first, "$"
        more = f" (and {len(lines) - 1} more problem{'s' if len(lines) > 2 else ''})"
        raise RequestError(
            f"{path}: {message}{more if len(lines) > 1 else ''}", param=path
        ) from exc
