"""How options are built: from executor arguments and from request parameters.

Every options dataclass (`speech2image.asr.options`, `speech2image.imaging.options`,
`speech2image.limits`) holds its defaults — the one source of each — and validates itself in
`__post_init__`, so a request is checked in one place, before any model work. Three
layers: the dataclass defaults ← the executor's arguments (:func:`configure`: config.yml
`with:`, flow.yml `uses_with`; strictly typed) ← a request's `parameters` (:func:`merge`:
converting what JSON and protobuf bring). What an executor takes is one dataclass whose fields
are those options dataclasses (`WhisperArguments`, `DiffusionArguments`).
"""

import dataclasses
import typing
from typing import Any, Mapping, TypeVar

from .errors import ConfigurationError, InvalidRequest

T = TypeVar("T")


def option(default: Any, help: str):
    """A dataclass field with its default and what it means (shown by client.py and the API docs)."""
    return dataclasses.field(default=default, metadata={"help": help})


def merge(defaults: T, parameters: Mapping[str, Any]) -> T:
    """`defaults` with the fields named in `parameters` replaced (other keys are ignored:
    Jina hands every executor the whole request's parameters)."""
    hints = typing.get_type_hints(type(defaults))
    changes = {
        field.name: coerce(field.name, parameters[field.name], hints[field.name])
        for field in dataclasses.fields(defaults)
        if field.name in parameters
    }
    return dataclasses.replace(defaults, **changes) if changes else defaults


def coerce(name: str, value: Any, annotation) -> Any:
    """Convert a parameter to its field's type (JSON and protobuf turn ints into floats)."""
    args = typing.get_args(annotation)
    if type(None) in args:
        if value is None:
            return None
        annotation = next(a for a in args if a is not type(None))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(annotation) is tuple and isinstance(value, (list, tuple)):
        return tuple(value)
    else:
        return value
    raise InvalidRequest(f"invalid {name}={value!r}: expected {getattr(annotation, '__name__', annotation)}")


def check_range(name: str, value, low, high) -> None:
    """Raise InvalidRequest unless low <= value <= high."""
    if not low <= value <= high:
        raise InvalidRequest(f"invalid {name}={value!r}: allowed {low}..{high}")


def check_choice(name: str, value, choices) -> None:
    """Raise InvalidRequest unless value is one of choices."""
    if value not in choices:
        raise InvalidRequest(f"invalid {name}={value!r}: allowed {', '.join(map(str, choices))}")


# what Jina itself passes to every executor besides the arguments of its `with:`
JINA_ARGUMENTS = ("metas", "requests", "runtime_args", "workspace", "dynamic_batching")


def configure(arguments: dict, arguments_class: type[T]) -> tuple[T, dict]:
    """An executor's `arguments_class` (a dataclass of options dataclasses), each of its options
    built from the executor arguments that name its fields, and Jina's own arguments. Stops with
    ConfigurationError (one line) on an argument no class takes, a value of the wrong type (a
    string where a list belongs, a bool where a number does) or out of its range."""
    rest = dict(arguments)
    groups = option_classes(arguments_class)
    built = {}
    for group, option_class in groups.items():
        hints = typing.get_type_hints(option_class)
        values = {f.name: _typed(f.name, rest.pop(f.name), hints[f.name])
                  for f in dataclasses.fields(option_class) if f.name in rest}
        try:
            built[group] = option_class(**values)
        except InvalidRequest as e:
            raise ConfigurationError(f"executor argument: {e}") from e
    unknown = sorted(set(rest) - set(JINA_ARGUMENTS))
    if unknown:
        known = sorted(f.name for option_class in groups.values() for f in dataclasses.fields(option_class))
        raise ConfigurationError(f"unknown executor argument {unknown[0]!r}: this executor takes {', '.join(known)}")
    return arguments_class(**built), rest


def option_classes(arguments_class) -> dict[str, type]:
    """The options dataclass of each field of an executor's arguments class, by field name."""
    hints = typing.get_type_hints(arguments_class)
    return {field.name: hints[field.name] for field in dataclasses.fields(arguments_class)}


def _typed(name: str, value: Any, annotation) -> Any:
    """An executor argument checked against its field's type (YAML and JSON lists become tuples)."""
    args = typing.get_args(annotation)
    if type(None) in args:
        if value is None:
            return None
        annotation = next(a for a in args if a is not type(None))
    if typing.get_origin(annotation) is tuple:
        if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
            return tuple(value)
        needed = "a list of strings, e.g. [/srv/audio] in YAML"
    elif annotation is bool:
        if isinstance(value, bool):
            return value
        needed = "true or false"
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        needed = "an integer"
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        needed = "a number"
    elif annotation is str:
        if isinstance(value, str):
            return value
        needed = "a string"
    else:
        return value
    raise ConfigurationError(f"executor argument {name}={value!r} must be {needed}; "
                             "fix it in config.yml `with:` or flow.yml `uses_with`")
