"""How options are built and checked: from executor arguments and from request parameters.

Every options dataclass (`speech2image.asr.options`, `speech2image.imaging.options`,
`speech2image.limits`) holds its defaults and its bounds, the one place of each: a field is
``option(default, help, ge=…, le=…, choices=…, max_length=…, multiple_of=…)``. :func:`check`
refuses a value outside them in `__post_init__`, however the object was made, and
:func:`request_field` states the same bounds in the HTTP request models (`speech2image.api.openai`),
so the OpenAPI document says what is checked. Three layers: the dataclass defaults ← the
executor's arguments (:func:`configure`: config.yml `with:`, flow.yml `uses_with`; strictly
typed) ← a request's `parameters` (:func:`merge`: converting what JSON and protobuf bring). What
an executor takes is one dataclass whose fields are those options dataclasses
(`WhisperArguments`, `DiffusionArguments`).

Why dataclasses checked from their metadata rather than pydantic models: an options object
built anywhere (an executor argument, a request, a test) must refuse a bad value with the
project's one-line InvalidRequest, which `configure` turns into a ConfigurationError; pydantic
turns every error raised inside validation into its own ValidationError, and its strict mode
would refuse protobuf's 4.0 for an int while its lax mode would turn an argument's "/srv/audio"
into a tuple of characters. So pydantic does the two things it does well here: converting a
request's values (lax: protobuf Struct sends every number as a float, 4.0 is 4; a form's "4" is
4), and the HTTP request models and their schema; the bounds stay in one place, the metadata.
"""

import dataclasses
import functools
import typing
from typing import Any, Literal, Mapping, Optional, TypeVar

import pydantic

from .errors import ConfigurationError, InvalidRequest

T = TypeVar("T")


def option(default: Any, help: str, *, ge=None, le=None, choices: Optional[tuple] = None,
           max_length: Optional[int] = None, multiple_of: Optional[int] = None):
    """A dataclass field with its default, what it means (shown by client.py and the API docs) and
    its bounds: `ge`..`le` (both, or neither), one of `choices`, at most `max_length` characters, or
    a positive multiple of `multiple_of`."""
    bounds = {"ge": ge, "le": le, "choices": choices, "max_length": max_length, "multiple_of": multiple_of}
    return dataclasses.field(default=default, metadata={"help": help, **{k: v for k, v in bounds.items()
                                                                          if v is not None}})


def check(options) -> None:
    """Refuse (InvalidRequest, one line) a field of an options dataclass outside its bounds; unset
    (None) is always allowed."""
    for field in dataclasses.fields(options):
        value, bounds = getattr(options, field.name), field.metadata
        if value is None:
            continue
        if "choices" in bounds:
            check_choice(field.name, value, bounds["choices"])
        if "ge" in bounds:
            check_range(field.name, value, bounds["ge"], bounds["le"])
        if "max_length" in bounds and len(value) > bounds["max_length"]:
            raise InvalidRequest(f"invalid {field.name}: {len(value)} characters, allowed up to {bounds['max_length']}")
        multiple = bounds.get("multiple_of")
        if multiple and (value <= 0 or value % multiple):
            raise InvalidRequest(f"invalid {field.name}={value!r}: must be a positive multiple of {multiple}")


def request_field(option_class: type, name: str) -> Any:
    """One option's type for a pydantic request model: its choices (an enum), bounds and help, from
    the dataclass field; None (unset) is left to the model to allow. An integer may come as a whole
    float (4.0: JSON Schema's integer, and what protobuf makes of one), in strict models too."""
    field = option_class.__dataclass_fields__[name]
    bounds = field.metadata
    kind = _without_none(typing.get_type_hints(option_class)[name])
    whole = [pydantic.BeforeValidator(_whole)] if kind is int else []
    if "choices" in bounds:
        kind = Literal[tuple(bounds["choices"])]
    multiple = bounds.get("multiple_of")
    return typing.Annotated[kind, pydantic.Field(
        description=bounds.get("help"), ge=bounds.get("ge"), le=bounds.get("le"),
        max_length=bounds.get("max_length"), multiple_of=multiple, gt=0 if multiple else None), *whole]


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def merge(defaults: T, parameters: Mapping[str, Any]) -> T:
    """`defaults` with the fields named in `parameters` replaced (other keys are ignored:
    Jina hands every executor the whole request's parameters)."""
    hints = typing.get_type_hints(type(defaults))
    changes = {
        field.name: converted(field.name, parameters[field.name], hints[field.name])
        for field in dataclasses.fields(defaults)
        if field.name in parameters
    }
    return dataclasses.replace(defaults, **changes) if changes else defaults


def converted(name: str, value: Any, annotation) -> Any:
    """A request's value as its field's type, by pydantic's lax rules (JSON and protobuf bring ints
    as floats: 4.0 is 4, 4.5 is refused; "true" is True)."""
    try:
        return _adapter(annotation).validate_python(value)
    except pydantic.ValidationError as e:
        reason = e.errors()[0]["msg"]
        raise InvalidRequest(f"invalid {name}={shown(value)}: {reason[0].lower()}{reason[1:]}") from None


@functools.cache
def _adapter(annotation) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(annotation)


def _without_none(annotation):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if typing.get_origin(annotation) is typing.Union and len(args) == 1 else annotation


def shown(value: Any, limit: int = 60) -> str:
    """A value as a one-line message shows it: its repr, cut short (a client chooses its size)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}…"


def check_range(name: str, value, low, high) -> None:
    """Raise InvalidRequest unless low <= value <= high."""
    if not low <= value <= high:
        raise InvalidRequest(f"invalid {name}={shown(value)}: allowed {low}..{high}")


def check_choice(name: str, value, choices) -> None:
    """Raise InvalidRequest unless value is one of choices (a long list is shown by its start)."""
    if value not in choices:
        listed = ", ".join(map(str, choices[:8])) + (f", … ({len(choices)} in all)" if len(choices) > 8 else "")
        raise InvalidRequest(f"invalid {name}={shown(value)}: allowed {listed}")


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
