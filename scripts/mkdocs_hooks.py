"""MkDocs hook: the CLI reference page, generated from the Typer app at build time (``mkdocs.yml``: ``hooks:``).

``docs/reference/cli.md`` holds a hand-written overview and the marker ``<!-- dmpf-cli-reference -->``; when MkDocs
reads that page, the marker is replaced by one section per command of ``dmpf``'s command tree (``typer.main.
get_command``), sub-apps included: its usage line, its help, and a table of its arguments and options with their
help and default. So the reference is what ``dmpf COMMAND --help`` says, never a copy that drifts.

Docstrings written for Sphinx as well (``:class:`~dmpf_cli.errors.DmpfError```) reach the API page as a bare role
before the code span; ``on_page_content`` drops the role and shortens a ``~``-name to its last part, as Sphinx does.

    .venv/bin/python scripts/mkdocs_hooks.py      # print the generated Markdown
"""

from __future__ import annotations

import re
from typing import Any

MARKER = "<!-- dmpf-cli-reference -->"
PAGE = "reference/cli.md"
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


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """MkDocs event: fill the CLI reference page's marker."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"docs/{PAGE}: the marker {MARKER} is missing; the CLI reference has nowhere to go")
    return markdown.replace(MARKER, cli_reference())


def on_page_content(html: str, **kwargs: Any) -> str:
    """MkDocs event: Sphinx roles in rendered docstrings become plain code spans."""
    return _SPHINX_ROLE.sub(lambda m: f"<code>{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}</code>", html)


if __name__ == "__main__":
    print(cli_reference(), end="")
