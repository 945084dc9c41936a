"""docs/configuration.md, written from the code that holds every option: app.py's parser and the
option dataclasses of each executor (`speech2image.asr.options.WhisperArguments`,
`speech2image.imaging.options.DiffusionArguments`, the limits of `speech2image.limits`), so the page
lists every field with its type, default, allowed values and meaning, and cannot drift.

    python tools/configuration_doc.py > docs/configuration.md
    python tools/configuration_doc.py --check      # exit 1 when the committed page differs

Each field's meaning is its `help` metadata (`speech2image.options.option`), else its entry in
the class docstring (`name: meaning`), else the comment on its line. Allowed values are read
from the class's `check_range`/`check_choice` calls. A class named `...Options` holds request
parameters; the others are executor arguments.
"""

import argparse
import ast
import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # app.py and speech2image when run as a script

import app  # noqa: E402
from speech2image import limits  # noqa: E402
from speech2image.asr import options as asr_options  # noqa: E402
from speech2image.imaging import options as imaging_options  # noqa: E402
from speech2image.options import option_classes  # noqa: E402

PAGE = ROOT / "docs" / "configuration.md"
REGENERATE = "python tools/configuration_doc.py > docs/configuration.md"
# executor name in the Flow → (its class, its folder, the dataclass of the arguments it takes)
EXECUTORS = {
    "whisper": ("WhisperExecutor", "executors/whisper", asr_options.WhisperArguments),
    "diffusion": ("StableDiffusionExecutor", "executors/diffusion", imaging_options.DiffusionArguments),
}


def classes(arguments_class) -> list[type]:
    """The options dataclasses an executor's arguments are made of."""
    return list(option_classes(arguments_class).values())


def render() -> str:
    """The whole page."""
    parts = [
        "# Configuration",
        "",
        f"Generated from the code by `{REGENERATE}`; do not edit by hand "
        "(`tests/test_docs.py` checks it is current).",
        "",
        "Three layers, each default in one place: the option dataclasses below ← an executor's "
        "arguments (its `config.yml` `with:`, or flow.yml's `uses_with`; a wrong type or an unknown "
        "name stops start-up with one line) ← a request's parameters (request options only; "
        "`whisper__beam_size` reaches one executor, `beam_size` both). Limits are the operator's: "
        "requests cannot change them ([limits.md](limits.md) says how each is checked).",
        "",
        "- [app.py's options](#apppys-options)",
        *(f"- [{title} (`{folder}`)](#{anchor(f'{title} {folder}')})" for title, folder, _ in EXECUTORS.values()),
    ]
    extra = [cls for cls in dataclasses_of(limits) if not any(cls in classes(a) for *_, a in EXECUTORS.values())]
    if extra:
        parts.append("- [Other limits](#other-limits)")
    parts += ["", *app_section()]
    for name, (title, folder, module) in EXECUTORS.items():
        parts += ["", *executor_section(name, title, folder, module)]
    if extra:
        parts += ["", "## Other limits", ""]
        for cls in extra:
            parts += class_section(cls, "###")
    return re.sub(r"\n{3,}", "\n\n", "\n".join(parts)).rstrip("\n") + "\n"


def app_section() -> list[str]:
    """app.py's flags, from its parser."""
    parser = app.build_parser()
    rows = [("option", "default", "meaning")]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS or not action.option_strings:
            continue
        rows.append((code(flag_usage(action)), flag_default(action), flag_help(parser, action)))
    return [
        "## app.py's options",
        "",
        "`python app.py [options]` (or `speech2image-app`). The gateway's own arguments "
        "(flow.yml `gateway: uses_with`) are these flags' values; their defaults are listed in "
        "[gateway/config.yml](../gateway/config.yml). Every executor argument below is checked "
        "before anything starts: a problem stops app.py with one line and exit code 2.",
        "",
        *table(rows),
    ]


def flag_usage(action: argparse.Action) -> str:
    flags = ", ".join(action.option_strings)
    if action.nargs == 0:
        return flags
    if not action.metavar:  # argparse's DEST_NAME says nothing the flag does not
        return flags
    return f"{flags} [{action.metavar}]" if action.nargs == "?" else f"{flags} {action.metavar}"


def flag_default(action: argparse.Action) -> str:
    if action.nargs == 0:
        return "off"
    if action.default is None:
        return "—"
    return code(value_text(action.default))


def flag_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    meaning = action.help or ""
    if "%" in meaning:
        meaning = meaning % dict(vars(action), prog=parser.prog)
    if action.choices:
        meaning += f" (one of: {', '.join(map(str, action.choices))})"
    return meaning


def executor_section(name: str, title: str, folder: str, arguments_class) -> list[str]:
    """One executor: its arguments, then its request parameters."""
    arguments = [cls for cls in classes(arguments_class) if not is_request_options(cls)]
    requests = [cls for cls in classes(arguments_class) if is_request_options(cls)]
    lines = [
        f"## {title} (`{folder}`)",
        "",
        f"Its arguments are the fields of `{arguments_class.__module__}.{arguments_class.__name__}`'s parts: set them in "
        f"[{folder}/config.yml](../{folder}/config.yml) `with:` or flow.yml's `uses_with` for `{name}`.",
        "",
        "### Executor arguments",
        "",
    ]
    for cls in arguments:
        lines += class_section(cls, "####")
    lines += [
        "### Request parameters",
        "",
        f"A request's parameters, sent as `{name}__<name>` (or without the prefix to both executors); "
        "their defaults are executor arguments too. client.py takes each as a flag "
        f"({', '.join(code(flag_of(cls)) for cls in requests)}, …); the HTTP routes take those "
        "[api.md](api.md) lists.",
        "",
    ]
    for cls in requests:
        lines += class_section(cls, "####")
    return lines


def flag_of(cls) -> str:
    """client.py's flag for the class's first field."""
    return "--" + dataclasses.fields(cls)[0].name.replace("_", "-")


def is_request_options(cls) -> bool:
    return cls.__name__.endswith("Options")


def class_section(cls, heading: str) -> list[str]:
    """A dataclass: what its docstring says of it as a whole, then one row per field."""
    hints = typing.get_type_hints(cls)
    entries, intro = docstring_entries(cls)
    comments = line_comments(cls)
    allowed = allowed_values(cls)
    rows = [("name", "type", "default", "allowed", "meaning")]
    said: dict[str, str] = {}  # meaning → the first field it was given for
    for field in dataclasses.fields(cls):
        meaning = field.metadata.get("help") or entries.get(field.name) or comments.get(field.name, "")
        if meaning in said:  # one docstring entry for several fields ("device, dtype: …")
            meaning = f"as {code(said[meaning])}"
        elif meaning:
            said[meaning] = field.name
        rows.append((code(field.name), type_text(hints[field.name]), default_text(field),
                     allowed.get(field.name, ""), meaning))
    lines = [f"{heading} `{cls.__name__}` (`{cls.__module__}`)", ""]
    if intro:
        lines += [intro, ""]
    return lines + table(rows) + [""]


def docstring_entries(cls) -> tuple[dict[str, str], str]:
    """`name: meaning` entries of a class docstring (`a, b: meaning` names two), and its other
    paragraphs joined."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    if doc.startswith(f"{cls.__name__}("):  # dataclass's generated signature: no docstring
        return {}, ""
    entries: dict[str, str] = {}
    prose: list[str] = []
    names: list[str] = []
    for paragraph in doc.split("\n\n"):
        first = re.match(r"([a-z_]+(?:, [a-z_]+)*): (.*)", paragraph)
        if not first:
            prose.append(" ".join(paragraph.split()))
            continue
        for line in paragraph.splitlines():
            entry = re.match(r"([a-z_]+(?:, [a-z_]+)*): (.*)", line)
            if entry:
                names = entry.group(1).split(", ")
                for name in names:
                    entries[name] = entry.group(2).strip()
            else:
                for name in names:
                    entries[name] += " " + line.strip()
    return entries, " ".join(prose)


def line_comments(cls) -> dict[str, str]:
    """The comment at the end of each field's line in the class's source."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments, field = {}, None
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NEWLINE or token.type == tokenize.NL:
            field = None
        elif token.type == tokenize.NAME and token.start[1] == 4 and field is None:
            field = token.string
        elif token.type == tokenize.COMMENT and field:
            comments[field] = token.string.lstrip("# ").strip()
    return comments


def allowed_values(cls) -> dict[str, str]:
    """Ranges and choices from the class's check_range(name, value, low, high) and
    check_choice(name, value, choices) calls."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    namespace = vars(sys.modules[cls.__module__])
    allowed = {}
    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                and call.func.id in ("check_range", "check_choice") and call.args
                and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)):
            continue
        rest = ast.Expression(ast.Tuple(elts=call.args[2:], ctx=ast.Load()))
        try:
            values = eval(compile(ast.fix_missing_locations(rest), "<check>", "eval"), dict(namespace))
        except Exception:  # a bound computed from the instance: its help says it
            continue
        if call.func.id == "check_range":
            allowed[call.args[0].value] = f"{number_text(values[0])} – {number_text(values[1])}"
        else:
            allowed[call.args[0].value] = ", ".join(code(str(choice)) for choice in values[0])
    return allowed


def type_text(annotation) -> str:
    args = typing.get_args(annotation)
    if type(None) in args:
        return type_text(next(a for a in args if a is not type(None))) + " or unset"
    if typing.get_origin(annotation) is tuple:
        return f"list of {type_text(args[0])}"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def default_text(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    if value is None:
        return "unset"
    text = code(value_text(value))
    for unit, size in (("GiB", 2**30), ("MiB", 2**20)):
        if isinstance(value, int) and not isinstance(value, bool) and value >= size and value % size == 0:
            return f"{text} ({value // size} {unit})"
    return text


def value_text(value) -> str:
    """A value as YAML writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(map(value_text, value)) + "]"
    if isinstance(value, float):
        return f"{value:g}" if value < 1e6 else str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def number_text(value) -> str:
    """A bound as people read it: 10 000, 0.5."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:g}" if isinstance(value, float) else f"{value:,}".replace(",", " ")


def code(text: str) -> str:
    return f"`{text}`"


def table(rows: list[tuple[str, ...]]) -> list[str]:
    lines = [row_text(rows[0]), "|" + "---|" * len(rows[0])]
    return lines + [row_text(row) for row in rows[1:]]


def row_text(cells) -> str:
    return "| " + " | ".join(" ".join(str(cell).split()).replace("|", "\\|") for cell in cells) + " |"


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def dataclasses_of(module) -> list[type]:
    return [value for value in vars(module).values()
            if inspect.isclass(value) and dataclasses.is_dataclass(value) and value.__module__ == module.__name__]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help=f"exit 1 when {PAGE.relative_to(ROOT)} is not current")
    args = parser.parse_args(argv)
    page = render()
    if not args.check:
        sys.stdout.write(page)
        return 0
    if PAGE.exists() and PAGE.read_text() == page:
        return 0
    print(f"{PAGE.relative_to(ROOT)} is not current: run `{REGENERATE}`", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
