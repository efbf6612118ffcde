"""Print the lowest versions pyproject.toml allows, as a pip constraints file (``scripts/setup.sh --lowest``).

Every requirement of the package, its dependencies and every extra, must have a ``>=`` floor; each floor is
printed pinned (``typer>=0.27.2`` -> ``typer==0.27.2``, markers kept). Installed under these constraints, dmpf[dev]
gets exactly its floors and the newest of everything they pull in (a "lowest direct" resolution), so the fast
tier run there fails when the code has outgrown a floor. A floor is only true if something checks it.

torch is the exception: it is pinned to the torch already installed in the running environment (setup.sh puts
the CPU build there first), because the lower torch wheels on PyPI are multi-GB CUDA builds.

    python scripts/floors.py > constraints.txt      # needs Python >= 3.11 (tomllib) and packaging
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    sys.exit("floors.py: needs Python >= 3.11 (tomllib)")
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

KEEP_INSTALLED = ("torch",)  # pinned to the installed build, never to its floor (see above)


def requirements(pyproject: Path) -> list[Requirement]:
    """The package's dependencies and every extra's, as parsed requirements."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras = project.get("optional-dependencies", {})
    return [Requirement(r) for r in [*project["dependencies"], *(r for reqs in extras.values() for r in reqs)]]


def floors(reqs: list[Requirement]) -> dict[str, str]:
    """One constraint line per distribution: ``name==floor`` (``; marker`` kept), the highest floor where an
    extra repeats a distribution; torch as installed. A requirement without a floor is an error."""
    lines: dict[str, tuple[Version, str]] = {}
    for req in reqs:
        name = canonicalize_name(req.name)
        if name in KEEP_INSTALLED:
            try:
                lines[name] = (Version("0"), f"{name}=={version(name)}")
            except PackageNotFoundError:
                sys.exit(f"floors.py: {name} is not installed here; install it first (scripts/setup.sh does)")
            continue
        low = [Version(s.version) for s in req.specifier if s.operator == ">="]
        if not low:
            sys.exit(f"floors.py: pyproject.toml: '{req}' has no '>=' floor; give it the lowest version dmpf works with")
        marker = f"; {req.marker}" if req.marker else ""
        if name not in lines or max(low) > lines[name][0]:
            lines[name] = (max(low), f"{name}=={max(low)}{marker}")
    return {name: line for name, (_, line) in sorted(lines.items())}


if __name__ == "__main__":
    print("\n".join(floors(requirements(Path(__file__).resolve().parent.parent / "pyproject.toml")).values()))
