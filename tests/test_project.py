"""Project hygiene that users rely on: the README's quick start is what CI runs."""

from __future__ import annotations

import io
import re
import tokenize

import pytest

from conftest import ROOT


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_quick_start_is_two_commands_and_ci_runs_the_second():
    commands = quick_start_commands()
    assert len(commands) == 2
    assert commands[0].startswith("bash scripts/setup.sh") and "dmpf" in commands[0]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci.splitlines()


def test_setup_never_pins_torch_in_the_package():
    """A user's own (CUDA) torch must satisfy the package; only setup.sh pins, and only when torch is missing."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    torch_reqs = [r for r in project["dependencies"] if re.match(r"torch\b", r)]
    assert torch_reqs == ["torch>=2.10"]
    assert 'torch==2.13.0' in (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")


# -- the layout: dependencies point one way, each fact is spelled once ------------------------------

PACKAGE = ROOT / "dmpf_cli"
APPLICATION = {"checkpoints", "datasets", "runtime", "train", "runs", "evaluate", "bench", "metrics", "curriculum",
               "pretrain", "loggers", "stats", "report", "jobs", "grid", "sweep"}


def _layer(module: str) -> tuple[int, str]:
    """(layer, group) of a dmpf_cli module: base 0, library 1 (model, data), application 2, CLI 3."""
    top = module.split(".")[0]
    if top in ("model", "data"):
        return 1, top
    if top in APPLICATION:
        return 2, "application"
    if top == "cli" or top == "__main__":
        return 3, "cli"
    return 0, "base"  # streams, config, registry, errors, fileio, the package's __version__


def _imports(path) -> set[str]:
    """Every dmpf_cli module ``path`` imports, at the top or inside a function, relative to the package."""
    import ast

    here = list(path.relative_to(PACKAGE).parent.parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[: len(here) - node.level + 1]
            if node.module:
                found.add(".".join(base + node.module.split(".")))
            else:
                found.update(".".join(base + [alias.name]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dmpf_cli."):
            found.add(node.module.removeprefix("dmpf_cli."))
    return {name for name in found if name}


def test_dependencies_point_one_way():
    """cli → application → model, data → streams, config, registry; model and data never import each other.
    The one edge upward: config checks component names and MM layers against the backbone catalogue."""
    allowed_upward = {("config", "model.backbones")}
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        layer, group = _layer(module)
        for target in _imports(path):
            target_layer, target_group = _layer(target)
            if (module, target) in allowed_upward:
                continue
            if target_layer > layer or (target_layer == layer == 1 and target_group != group):
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def _code_tokens(path):
    """The tokens of a module's code: no comments, and no docstrings (strings that are whole statements)."""
    tokens = list(tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline))
    previous = tokenize.NEWLINE
    for tok in tokens:
        if tok.type in (tokenize.COMMENT, tokenize.NL):
            continue
        if not (tok.type == tokenize.STRING and previous in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)):
            yield tok  # not a docstring
        previous = tok.type


def test_stream_and_dataset_facts_are_spelled_out_in_streams_only():
    from dmpf_cli.streams import DATASETS, MODALITIES, REPRESENTATIONS, STREAMS

    modality_keys = {m.key for m in MODALITIES}  # also the MMSA format's keys, which the data layer reads by name
    names = {value for s in STREAMS for value in (s.name, s.display, s.tokens_key, s.encoder_key)} - modality_keys
    names |= set(REPRESENTATIONS) | {d.published_sha256 for d in DATASETS.values() if d.published_sha256}
    numbers = [tuple(str(n) for n in values) for d in DATASETS.values()
               for values in (d.feature_dims, d.padded_lengths) if values]
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "streams.py":
            continue
        tokens = list(_code_tokens(path))
        strings = {t.string.strip("\"'") for t in tokens if t.type == tokenize.STRING}
        found += [f"{path.name}: {name!r}" for name in sorted(strings & names)]
        plain = [t.string for t in tokens if t.type in (tokenize.NUMBER, tokenize.OP)]  # "74", ",", "35"
        for values in numbers:
            pattern = [part for value in values for part in (value, ",")][:-1]
            if any(plain[i:i + len(pattern)] == pattern for i in range(len(plain))):
                found.append(f"{path.name}: {', '.join(values)}")
    assert found == []


def test_every_subpackage_is_in_the_wheel():
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    packages = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")}
    assert packages <= listed


def test_the_readme_layout_names_every_module():
    layout = (ROOT / "README.md").read_text(encoding="utf-8").split("## Layout", 1)[1]
    named = set(re.findall(r"^\| `(dmpf_cli/[\w/]+\.py)` \|", layout, re.M))
    modules = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")}
    assert named == modules


@pytest.mark.slow
def test_the_suite_ignores_the_users_dmpf_variables(tmp_path):
    """A user's DMPF_DATA_DIR (or any DMPF_* setting) neither leaks into the tests nor is written to: a module's
    fixtures and its tests read the same directories (test_curriculum's stage fixture read the user's data once)."""
    import subprocess
    import sys

    elsewhere = tmp_path / "users-data"
    env = {**__import__("os").environ, "DMPF_DATA_DIR": str(elsewhere), "DMPF_MODEL_DIR": str(tmp_path / "models"),
           "DMPF_UNKNOWN_SETTING": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "base"),
         "tests/test_curriculum.py::test_the_stage_writes_a_finished_run_of_encoders_and_heads"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    assert not elsewhere.exists() and not (tmp_path / "models").exists()


# -- dependencies: what dmpf imports is what it declares ---------------------------------------------

def _imported_top_modules(path) -> set[str]:
    """The top-level names of every absolute import in ``path``, at the top or inside a function."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_every_third_party_module_dmpf_imports_is_declared():
    """A package that only arrives through another one (huggingface_hub through transformers) escapes the floors
    that the lowest-versions CI job checks, and vanishes when that package stops pulling it in."""
    import sys
    from importlib.metadata import packages_distributions

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    declared = {canonicalize_name(Requirement(r).name) for r in reqs}
    installed = packages_distributions()  # import name -> the distributions that provide it here (yaml -> PyYAML)
    undeclared = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for module in _imported_top_modules(path) - set(sys.stdlib_module_names) - {"dmpf_cli"}:
            if not {canonicalize_name(d) for d in installed.get(module, [module])} & declared:
                undeclared.add(f"{path.relative_to(ROOT)}: {module}")
    assert sorted(undeclared) == []
