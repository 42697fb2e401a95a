"""The one cattrs converter: how YAML and JSON values become orchestratr's models and back.

Hooks are strict where YAML is loose: ``ready_timeout_ms: soon`` or ``detached: "no"`` are
errors, not silent coercions. Numbers are accepted where a string is expected (``chord: 1``),
as the Go orchestratr's YAML decoder accepted them.

Messages quote what was given, clipped (``_shown``): an API client's 1 MB string or key must
not come back in a 1 MB error (the Go orchestratr's bug B2).
"""

from __future__ import annotations

import enum
import reprlib
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.v import transform_error

from orchestratr.errors import BadRequestError, clip

T = TypeVar("T")
MAX_SHOWN = 40  # characters of a quoted value or key in an error message
MAX_UNKNOWN_SHOWN = 5  # unknown keys named in one message


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = MAX_SHOWN
_REPR.maxlevel = 2


def _shown(value: object) -> str:
    """``repr(value)``, clipped, and bounded before it is built: a YAML file's shared aliases
    make a small value whose full repr is gigabytes (a billion-laughs drop-in)."""
    return clip(_REPR.repr(value), MAX_SHOWN)


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _int(value: Any, _: type) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError(f"expected an integer, got {_type_name(value)} {_shown(value)}")


def _float(value: Any, _: type) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"expected a number, got {_type_name(value)} {_shown(value)}")


def _bool(value: Any, _: type) -> bool:
    if isinstance(value, bool):
        return value
    raise TypeError(f"expected true or false, got {_type_name(value)} {_shown(value)}")


def _strict_str(value: Any, _: type) -> str:
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a string, got {_type_name(value)} {_shown(value)}")


def _str(value: Any, cls: type) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return _strict_str(value, cls)


def _enum(value: Any, cls: type[enum.Enum]) -> enum.Enum:
    """A member by its value (``restart: on-failure``), naming every choice when it is none."""
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(str(member.value) for member in cls)
        raise ValueError(f"expected one of {choices}, got {_shown(value)}") from None


def _is_enum(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, enum.Enum)


def _env(value: Any, _: type) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a mapping of variable names to values, got {_type_name(value)}")
    result = {}
    for key, item in value.items():
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise TypeError(f"{clip(str(key), MAX_SHOWN)}: expected a string or number, "
                            f"got {_type_name(item)} {_shown(item)}")
        result[str(key)] = str(item)
    return result


def _object(value: Any, _: type) -> dict[str, Any]:
    """Any JSON object (an event's ``data``), kept as it is."""
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a JSON object, got {_type_name(value)} {_shown(value)}")
    return dict(value)


def field_keys(cls: type) -> dict[str, str]:
    """Key -> field name, for a class with a field whose key is no Python name (``class``):
    such a field says its key in ``metadata["key"]``."""
    return {f.metadata.get("key", f.name): f.name for f in attrs.fields(cls)}


def _keyed(cls: type) -> bool:
    return attrs.has(cls) and any("key" in f.metadata for f in attrs.fields(cls))


def _structure_keyed(cls: type) -> Any:
    """A mapping whose keys are no Python names (``window: {class: ..., title: ...}``, a
    message's ``from``); unknown keys are errors (no older manifest has any). Text fields
    take strings only; the others are structured by their type."""
    keys = field_keys(cls)
    types = typing.get_type_hints(cls)
    text = {name for name, kind in types.items() if kind in (str, str | None)}

    def structure(value: Any, _: type) -> Any:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a mapping with {' and/or '.join(keys)}, "
                            f"got {_type_name(value)} {_shown(value)}")
        unknown = sorted(str(k) for k in value if k not in keys)
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(clip(k, MAX_SHOWN) for k in unknown)}"
                             f"; expected {' and/or '.join(keys)}")
        fields = {}
        for key, item in value.items():
            if item is not None:
                name = keys[key]
                try:
                    fields[name] = (_strict_str(item, str) if name in text
                                    else _typed(item, types[name]))
                except (TypeError, ValueError) as exc:
                    raise TypeError(f"{key}: {exc}") from None
        return cls(**fields)

    def _typed(item: Any, kind: Any) -> Any:
        return item if kind is Any else strict_converter.structure(item, kind)

    return structure


def _unstructure_keyed(cls: type) -> Any:
    keys = field_keys(cls)
    return lambda value: {key: getattr(value, name) for key, name in keys.items()}


def configure_converter(converter: cattrs.Converter) -> None:
    """Add orchestratr's hooks to ``converter``."""
    converter.register_structure_hook(int, _int)
    converter.register_structure_hook(float, _float)
    converter.register_structure_hook(bool, _bool)
    converter.register_structure_hook(str, _str)
    converter.register_structure_hook_func(_is_enum, _enum)
    converter.register_structure_hook_func(lambda t: t == Mapping[str, str], _env)
    converter.register_unstructure_hook_func(lambda t: t == Mapping[str, str], dict)
    converter.register_structure_hook_func(lambda t: t == dict[str, Any], _object)
    converter.register_structure_hook_factory(_keyed, _structure_keyed)
    converter.register_unstructure_hook_factory(_keyed, _unstructure_keyed)


def make_converter(strict: bool = False) -> cattrs.Converter:
    """Manifests tolerate unknown keys (newer tools write them) and YAML's unquoted numbers
    where strings are meant (``chord: 1``); JSON API bodies get neither."""
    converter = cattrs.Converter(forbid_extra_keys=strict, use_alias=True)
    configure_converter(converter)
    if strict:
        converter.register_structure_hook(str, _strict_str)
    return converter


def structure_body(data: Any, cls: type[T]) -> T:
    """An API request body as ``cls``, strictly.

    Raises:
        BadRequestError: naming every field that is missing, unknown or of the wrong type.
    """
    if not isinstance(data, dict):
        raise BadRequestError(f"expected a JSON object, got {_type_name(data)}")
    try:
        return strict_converter.structure(data, cls)
    except cattrs.BaseValidationError as exc:
        problems = "; ".join(f"{field or 'body'}: {msg}" for field, msg in describe_errors(exc))
        raise BadRequestError(problems) from None
    except (TypeError, ValueError) as exc:  # a keyed class's own hook, at the top level
        raise BadRequestError(str(exc)) from None


def describe_errors(exc: BaseException) -> list[tuple[str, str]]:
    """Flatten a cattrs validation error into ``(field path, message)`` pairs."""
    pairs = []
    for line in transform_error(exc, path="$", format_exception=_describe):
        message, _, path = line.rpartition(" @ ")
        path = path.removeprefix("$").lstrip(".")
        pairs.append((clip(path, MAX_SHOWN), message))
    return pairs


def _describe(exc: BaseException, _: type | None) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        extra = sorted(exc.extra_fields)
        named = ", ".join(clip(k, MAX_SHOWN) for k in extra[:MAX_UNKNOWN_SHOWN])
        more = len(extra) - MAX_UNKNOWN_SHOWN
        return f"unknown field(s): {named}" + (f" and {more} more" if more > 0 else "")
    return str(exc)


converter = make_converter()
strict_converter = make_converter(strict=True)
