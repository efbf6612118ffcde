"""Project hygiene that users rely on: the README's quick start is what CI runs."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

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
# the application's rooms along a run's life, in the order they may import each other: one run directory and the
# directories of many (store), what one run does (recipes), many runs (experiments)
ROOMS = ("store", "recipes", "experiments")


def _layer(module: str) -> tuple[int, str]:
    """(layer, group) of a dmpf_cli module: base 0, library 1 (model, data), the rooms 2-4, the public Python API 5
    (``api``, the package that exports it, and ``plugin_kit``), CLI 6."""
    top = module.split(".")[0]
    if top in ("model", "data", "media"):
        return 1, top
    if top in ROOMS:
        return 2 + ROOMS.index(top), top
    # plugin_kit, the contracts a plugin author's component is checked against, is public Python API for plugin
    # authors like api: it builds components of every kind, so it reads the rooms below (recipes' Logger, store's
    # RunDir), and the CLI above runs it (dmpf plugins check)
    if top in ("api", "__init__", "plugin_kit"):
        return 2 + len(ROOMS), "api"
    if top == "cli" or top == "__main__":
        return 3 + len(ROOMS), "cli"
    return 0, "base"  # streams, config, registry, errors, fileio, metrics, yamlio, progress, __version__


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
    """cli → api → experiments → recipes → store → model, data → base modules (streams, config, registry, metrics, …);
    model and data never import each other, and nothing imports upward (config knows the schema only: the checks
    against the registry and the backbone catalogue are recipes.preflight's)."""
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        layer, group = _layer(module)
        for target in _imports(path):
            target_layer, target_group = _layer(target)
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
    names |= set(REPRESENTATIONS) | {f.sha256 for d in DATASETS.values() for f in d.files if f.sha256}
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


def test_the_layout_names_every_module():
    """The module table, "Layout" in the development page of the docs (docs/development.md)."""
    layout = (ROOT / "docs" / "development.md").read_text(encoding="utf-8").split("## Layout", 1)[1]
    named = set(re.findall(r"^\| `(dmpf_cli/[\w/]+\.py)` \|", layout, re.M))
    modules = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")}
    assert named == modules


# -- the design notes: every citation of docs/design.md names a section it has ------------------------

DESIGN = ROOT / "docs" / "design.md"
# where the design notes are cited (besides README.md and the documentation pages, docs/**/*.md); CHANGELOG.md's
# past entries are history, left as written
CITING = ("dmpf_cli", "tests", "configs", "benchmarks", "scripts", "plugins")
CITING_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".sh", ".toml", ".txt"}
CODE_CITATION = re.compile(r"design\.md §(\d+)((?:(?:-|–|, )§\d+)*)")  # design.md §4, §2-§6, §1, §3
# a link from the README (docs/design.md#…) or from a documentation page (design.md#…, ../design.md#…)
README_LINK = re.compile(r"\[design notes §(\d+)\]\((?:docs/|(?:\.\./)*)design\.md#([^)\s]*)\)")
ANY_ANCHOR = re.compile(r"(?:docs/|(?:\.\./)*)design\.md#([^)\s]*)")
OLD_DOCUMENT = re.compile(r"\bSPEC\b")  # the outside document the citations once pointed to


def design_sections() -> dict[int, str]:
    """docs/design.md's numbered sections (``## 4. The fusion mask``): number -> the heading's anchor on GitHub
    (lower case, punctuation dropped, spaces to hyphens: ``4-the-fusion-mask``)."""
    headings = re.findall(r"^## (\d+)\. (.+?)\s*$", DESIGN.read_text(encoding="utf-8"), re.M)
    return {int(n): re.sub(r"[^\w\- ]", "", f"{n}. {title}".lower()).replace(" ", "-") for n, title in headings}


def _cited(match: re.Match) -> list[int]:
    """The sections one code citation names; a range (§2-§6) names every section in it."""
    sections = [int(match.group(1))]
    for sep, n in re.findall(r"(-|–|, )§(\d+)", match.group(2)):
        sections += range(sections[-1] + 1, int(n) + 1) if sep in "-–" else [int(n)]
    return sections


def _citing_files():
    yield ROOT / "README.md"
    yield from sorted(path for path in (ROOT / "docs").rglob("*.md") if path != DESIGN)
    for top in CITING:
        for path in sorted((ROOT / top).rglob("*")):
            parts = path.relative_to(ROOT).parts
            if (path.suffix in CITING_SUFFIXES and path.is_file() and path != Path(__file__).resolve()
                    and not any(p in {"build", "__pycache__"} or p.endswith(".egg-info") for p in parts)):
                yield path


def design_citation_problems() -> tuple[list[str], int]:
    """Every citation of the design notes that names no section of docs/design.md, every README link whose
    anchor is not its section's heading, and every line still citing the old outside document; and how many
    citations were checked."""
    sections = design_sections()
    problems, checked = [], 0
    for path in _citing_files():
        where = path.relative_to(ROOT)
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            at = f"{where}:{lineno}"
            if OLD_DOCUMENT.search(line):
                problems.append(f"{at}: cites SPEC, which is not in the repository; cite design.md §N")
            for match in CODE_CITATION.finditer(line):
                checked += 1
                problems += [f"{at}: design.md has no §{n}" for n in _cited(match) if n not in sections]
            for number, anchor in README_LINK.findall(line):
                checked += 1
                if sections.get(int(number)) != anchor:
                    problems.append(f"{at}: design notes §{number} links #{anchor}, expected "
                                    f"#{sections.get(int(number), '(no such section)')}")
            problems += [f"{at}: docs/design.md has no heading #{anchor}" for anchor in ANY_ANCHOR.findall(line)
                         if anchor not in sections.values()]
    return problems, checked


def test_every_design_citation_names_a_section_of_the_design_notes():
    """The code, tests, configs and README cite docs/design.md by section number (``design.md §4``; in the README
    a link to the heading): each cited section exists, each link lands on it, and nothing cites the old SPEC."""
    sections = design_sections()
    assert sorted(sections) == list(range(1, 10))  # §1 the model in one picture … §9 ablations, each once
    problems, checked = design_citation_problems()
    assert problems == []
    assert checked >= 50  # the citations are there to check (78 when this test was written)


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
