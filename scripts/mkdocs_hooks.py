"""MkDocs hook: the CLI reference page, generated from the Typer app at build time (``mkdocs.yml``: ``hooks:``).

``docs/reference/cli.md`` holds a hand-written overview and the marker ``<!-- dmpf-cli-reference -->``; when MkDocs
reads that page, the marker is replaced by one section per command of ``dmpf``'s command tree (``typer.main.
get_command``), sub-apps included: its usage line, its help, and a table of its arguments and options with their
help and default. So the reference is what ``dmpf COMMAND --help`` says, never a copy that drifts. In the same way
``docs/reference/configuration.md``'s marker ``<!-- dmpf-config-keys -->`` becomes the table of every config key,
from the pydantic schema (``dmpf_cli.config.ExperimentConfig``): its type and limits, the embedded default's value,
its description.

Docstrings written for Sphinx as well (``:class:`~dmpf_cli.errors.DmpfError```) reach the API page as a bare role
before the code span; ``on_page_content`` drops the role and shortens a ``~``-name to its last part, as Sphinx does.

    .venv/bin/python scripts/mkdocs_hooks.py          # print the generated CLI reference
    .venv/bin/python scripts/mkdocs_hooks.py config   # print the generated table of config keys
"""

from __future__ import annotations

import re
from typing import Any

MARKER = "<!-- dmpf-cli-reference -->"
PAGE = "reference/cli.md"
CONFIG_MARKER = "<!-- dmpf-config-keys -->"
CONFIG_PAGE = "reference/configuration.md"
_DEFAULT = re.compile(r"\s*\[default: (.*?)\]\s*$", re.S)
_SPHINX_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|exc|data|obj|const):<code>(~?)([^<]*)</code>")


def _cell(text: str) -> str:
    """Text for one Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(param: Any, help_text: str) -> tuple[str, str]:
    """(help without its ``[default: …]`` suffix, the default as shown, or '')."""
    help_text = re.sub(r"\s*\[required\]", "", help_text)
    found = _DEFAULT.search(help_text)
    if found:
        default, _, limits = found.group(1).partition("; ")  # "0; x>=0": the default, then the range
        return help_text[: found.start()] + (f" [{limits}]" if limits else ""), default
    value = getattr(param, "default", None)
    if getattr(param, "is_flag", False) or value in (None, (), []) or callable(value):
        return help_text, ""
    return help_text, str(getattr(value, "value", value))


def _params_table(command: Any, ctx: Any) -> list[str]:
    rows = []
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        name, help_text = record
        help_text, default = _default(param, help_text or "")
        kind = "argument" if getattr(param, "param_type_name", "") == "argument" else "option"
        if kind == "argument" and not help_text:
            help_text = getattr(param, "help", "") or ""
        required = " (required)" if getattr(param, "required", False) else ""
        rows.append(f"| `{_cell(name)}`{required} | {_cell(help_text)} | {f'`{_cell(default)}`' if default else ''} |")
    if not rows:
        return []
    return ["| argument or option | what it does | default |", "|---|---|---|", *rows]


def _walk(command: Any, ctx: Any, path: list[str], out: list[str]) -> None:
    name = " ".join(path)
    level = "#" * min(len(path) + 1, 4)
    out += [f"{level} `{name}`", ""]
    if getattr(command, "help", None):
        out += [" ".join(line.strip() for line in command.help.strip().splitlines()).strip(), ""]
    usage = command.get_usage(ctx).removeprefix("Usage:").strip()
    out += ["```text", usage, "```", ""]
    table = _params_table(command, ctx)
    if table:
        out += [*table, ""]
    list_commands = getattr(command, "list_commands", None)
    if list_commands is None:
        return
    children = [(sub, command.get_command(ctx, sub)) for sub in list_commands(ctx)]
    children = [(sub, child) for sub, child in children if child is not None and not child.hidden]
    if len(path) == 1:  # the root: say how `dmpf --help` groups the commands
        panels: dict[str, list[str]] = {}
        for sub, child in children:
            panels.setdefault(getattr(child, "rich_help_panel", None) or "Commands", []).append(sub)
        out += ["| group | commands |", "|---|---|"]
        out += [f"| {panel} | {', '.join(f'`{name} {sub}`' for sub in subs)} |" for panel, subs in panels.items()]
        out.append("")
    for sub, child in children:
        _walk(child, child.context_class(child, info_name=sub, parent=ctx), [*path, sub], out)


def cli_reference() -> str:
    """The Markdown reference of every ``dmpf`` command, from the app itself."""
    import typer

    from dmpf_cli.cli import app

    root = typer.main.get_command(app)
    out: list[str] = []
    _walk(root, root.context_class(root, info_name="dmpf"), ["dmpf"], out)
    return "\n".join(out).rstrip() + "\n"


_BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "length ≥"}


def _type(annotation: Any, metadata: list[Any] = ()) -> str:
    """A config field's type in words: ``int ≥ 1``, ``one of sigmoid, tanh``, ``list of int ≥ 0``, ``… or null``."""
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0], [*getattr(args[1], "metadata", [args[1]]), *args[2:], *metadata])
    limits = [f"{word} {getattr(m, k)}" for m in metadata for k, word in _BOUNDS.items() if hasattr(m, k)]
    if origin is typing.Literal:
        text = "one of " + ", ".join(f"`{a}`" for a in args)
    elif origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        text = " or ".join(_type(a) for a in rest) + (" or null" if len(rest) < len(args) else "")
    elif origin in (list, tuple, dict):
        inner = [_type(a) for a in args if a is not Ellipsis]
        text = {list: "list of ", tuple: "pair of " if len(inner) == 2 else "tuple of ", dict: "mapping "}[origin]
        text += " to ".join(dict.fromkeys(inner)) if origin is dict else inner[0]
    else:
        text = getattr(annotation, "__name__", str(annotation).replace("typing.", ""))
    if limits and origin in (list, tuple, dict):  # the container's own limits, after its items'
        return f"{text} ({', '.join(limits)})"
    return f"{text} {', '.join(limits)}".strip()


def _config_rows(model: Any, instance: Any, prefix: str) -> list[str]:
    from pydantic import BaseModel

    rows = []
    for name, field in model.model_fields.items():
        value = getattr(instance, name)
        if isinstance(value, BaseModel):
            rows += _config_rows(type(value), value, f"{prefix}{name}.")
            continue
        shown = value.value if hasattr(value, "value") else value
        shown = list(shown) if isinstance(shown, tuple) else shown
        shown = "null" if shown is None else str(shown).lower() if isinstance(shown, bool) else str(shown)
        rows.append(f"| `{prefix}{name}` | {_cell(_type(field.annotation, field.metadata))} | `{_cell(shown)}` | "
                    f"{_cell(field.description or '')} |")
    return rows


def config_reference() -> str:
    """The Markdown table of every config key, from the schema and the embedded default."""
    from dmpf_cli.config import ExperimentConfig

    return "\n".join(["| key | type | embedded default | what it does |", "|---|---|---|---|",
                      *_config_rows(ExperimentConfig, ExperimentConfig(), "")]) + "\n"


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """MkDocs event: fill the generated pages' markers."""
    for where, marker, generate in ((PAGE, MARKER, cli_reference), (CONFIG_PAGE, CONFIG_MARKER, config_reference)):
        if page.file.src_uri == where:
            if marker not in markdown:
                raise ValueError(f"docs/{where}: the marker {marker} is missing; the generated text has nowhere to go")
            markdown = markdown.replace(marker, generate())
    return markdown


def on_page_content(html: str, **kwargs: Any) -> str:
    """MkDocs event: Sphinx roles in rendered docstrings become plain code spans."""
    return _SPHINX_ROLE.sub(lambda m: f"<code>{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}</code>", html)


if __name__ == "__main__":
    import sys

    print(config_reference() if sys.argv[1:] == ["config"] else cli_reference(), end="")
