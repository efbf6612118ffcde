"""What produced a run, recorded in its ``run.json`` so a result can be traced to the code that made it.

* ``versions``: dmpf, torch, transformers, CUDA and Python;
* ``components``: every registered component the config selects (encoders, backbone, head, mask, loggers), each
  with the distribution that provided it — ``built-in`` for dmpf's own, else the plugin's name and version;
* ``plugins``: those plugin distributions and their versions, the short answer to "which plugins made this?";
* ``git``: the commit of the dmpf checkout the run came from (and whether it had uncommitted changes), when dmpf
  runs from a git checkout (an editable install); absent for an installed wheel.
"""

from __future__ import annotations

import importlib.metadata as metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

from .. import __version__, registry
from ..config import ExperimentConfig, selected_components


def record(cfg: ExperimentConfig) -> dict[str, Any]:
    """The provenance fields of a new run's ``run.json``."""
    components = []
    for key, kind, name in selected_components(cfg):
        origin = registry.get(kind, name).origin
        entry = {"key": key, "kind": kind, "name": name, "origin": origin}
        if origin != registry.BUILTIN:
            entry["version"] = distribution_version(origin)
        components.append(entry)
    fields: dict[str, Any] = {
        "versions": versions(),
        "components": components,
        "plugins": {c["origin"]: c["version"] for c in components if c["origin"] != registry.BUILTIN},
    }
    if (git := git_revision()) is not None:
        fields["git"] = git
    return fields


def versions() -> dict[str, str]:
    import torch
    import transformers

    return {"dmpf": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "cuda": str(torch.version.cuda), "python": platform.python_version()}


def distribution_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:  # a plugin module on sys.path without its distribution's metadata
        return "unknown"


CHECKOUT = Path(__file__).resolve().parents[2]  # the repository, when dmpf runs from a checkout (dmpf_cli/store/ is two below it)


def git_revision(checkout: Path = CHECKOUT) -> dict[str, Any] | None:
    """``{"commit": SHA, "dirty": bool}`` of the git checkout that holds this dmpf package, or None (an installed
    wheel, no git on the machine, or git refusing the directory)."""
    if not (checkout / ".git").exists():  # a directory, or a file in a worktree
        return None

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-c", "safe.directory=*", "-C", str(checkout), *args],
                                  capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    changes = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(changes)} if changes is not None else {"commit": commit}
