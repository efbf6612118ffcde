"""The documentation site's cheap checks; the strict build itself (``mkdocs build --strict``) runs in .ci/run."""

from __future__ import annotations

import importlib.util
import re

from conftest import ROOT


def _hooks():
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "scripts" / "mkdocs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_links_to_pages_that_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", readme) if "://" not in t]
    assert targets, "the README links into the documentation"
    assert [t for t in targets if not (ROOT / t).exists()] == []


def test_the_cli_reference_is_generated_from_every_command():
    """Every command and sub-command of the app gets a section, with each option it takes."""
    import typer

    from dmpf_cli.cli import app

    text = _hooks().cli_reference()
    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="dmpf")
    for name in root.list_commands(ctx):
        command = root.get_command(ctx, name)
        assert f"`dmpf {name}`" in text
        sub_ctx = command.context_class(command, info_name=name, parent=ctx)
        for param in command.get_params(sub_ctx):
            if getattr(param, "param_type_name", "") == "option" and not param.hidden:
                assert param.opts[0] in text, (name, param.opts)
        for sub in getattr(command, "list_commands", lambda _ctx: [])(sub_ctx):
            assert f"`dmpf {name} {sub}`" in text


def test_the_cli_reference_page_has_its_marker():
    hooks = _hooks()
    assert hooks.MARKER in (ROOT / "docs" / hooks.PAGE).read_text(encoding="utf-8")


def test_the_configuration_reference_lists_every_key():
    from dmpf_cli.config import load_config

    def keys(tree, prefix=""):
        for name, value in tree.items():
            yield from keys(value, f"{prefix}{name}.") if isinstance(value, dict) and value else [prefix + name]

    hooks = _hooks()
    text = hooks.config_reference()
    assert [k for k in keys(load_config().model_dump()) if f"| `{k}` |" not in text] == []
    assert hooks.CONFIG_MARKER in (ROOT / "docs" / hooks.CONFIG_PAGE).read_text(encoding="utf-8")
