"""The example plugin package plugins/dmpf-head-gated, really installed (pip) into a temporary directory.

It registers only through its ``dmpf.plugins`` entry point: before the install dmpf does not know it;
after it, ``dmpf plugins`` lists it with its distribution as origin, a config can select it, and the
registry contract tests run on it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, run_module

pytestmark = pytest.mark.slow  # pip installs the plugin and runs dmpf in subprocesses

PLUGIN = ROOT / "plugins" / "dmpf-head-gated"


def _installed_here() -> bool:
    """Whether the documented plugin step (pip install -e plugins/dmpf-head-gated) was done in this environment."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("dmpf-head-gated")
    except PackageNotFoundError:
        return False
    return True


INSTALLED_HERE = _installed_here()
without_the_plugin = pytest.mark.skipif(
    INSTALLED_HERE, reason="dmpf-head-gated is installed in this environment, so dmpf without it cannot be observed")


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(target), str(PLUGIN)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return target


def run(args: list[str], site=None, module: str = "dmpf_cli") -> subprocess.CompletedProcess:
    return run_module(module, *args, check=False, pythonpath=[site, ROOT / "tests"] if site else (), cwd=ROOT,
                      timeout=300)


@without_the_plugin
def test_not_known_without_the_install():
    result = run(["plugins", "--format", "json"])
    assert result.returncode == 0
    assert "gated-sum" not in {row["name"] for row in json.loads(result.stdout)}


def test_listed_with_its_origin_once_installed(plugin_site):
    result = run(["plugins", "--format", "json"], plugin_site)
    assert result.returncode == 0, result.stderr
    rows = [row for row in json.loads(result.stdout) if row["name"] == "gated-sum"]
    assert [(r["kind"], r["origin"]) for r in rows] == [("head", "dmpf-head-gated")]
    assert "gated-sum" in run(["plugins"], plugin_site).stdout


def test_selectable_in_a_config(plugin_site, tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text("head:\n  name: gated-sum\n  options: {temperature: 0.5}\n")
    result = run(["config", "validate", str(config)], plugin_site)
    assert result.returncode == 0, result.stderr
    shown = run(["config", "show", "--format", "json", "head.name=gated-sum"], plugin_site)
    assert shown.returncode == 0 and json.loads(shown.stdout)["head"]["name"] == "gated-sum"
    if not INSTALLED_HERE:  # without the plugin the same config is refused with the known heads
        refused = run(["config", "validate", str(config)])
        assert refused.returncode == 2 and "head.name: unknown head 'gated-sum'" in refused.stderr


def test_builds_from_the_config_and_trains(plugin_site):
    code = (
        "import torch; from dmpf_cli import registry; from dmpf_cli.config import load_config\n"
        "cfg = load_config(overrides=['head.name=gated-sum', 'head.options.temperature=2.0'])\n"
        "dims = {'a_tok': 8, 'h_text': 8, 'av_enc': 4}\n"
        "head = registry.create('head', cfg.head.name, cfg.head, dims)\n"
        "reps = {k: torch.randn(3, d) for k, d in dims.items()}\n"
        "out = head(reps); out.sum().backward()\n"
        "assert out.shape == (3,) and all(p.grad is not None for p in head.parameters())\n"
        "print(type(head).__module__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(plugin_site)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "dmpf_head_gated"


def test_passes_the_registry_contract(plugin_site):
    result = run(["-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_components.py"), "-k", "gated-sum"],
                 plugin_site, module="pytest")
    assert result.returncode == 0, result.stdout[-3000:]
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) >= 6, result.stdout[-3000:]  # every head-contract test ran on it


def test_a_run_records_the_plugin_that_provided_its_head(plugin_site, tmp_path):
    from conftest import TINY

    run_dir = tmp_path / "run"
    result = run(["train", "--output", str(run_dir), *TINY, "training.max_epochs=1", "head.name=gated-sum"],
                 plugin_site)
    assert result.returncode == 0, result.stderr[-3000:]
    status = json.loads((run_dir / "run.json").read_text())
    assert status["plugins"] == {"dmpf-head-gated": "0.1.0"}
    assert {"key": "head.name", "kind": "head", "name": "gated-sum", "origin": "dmpf-head-gated",
            "version": "0.1.0"} in status["components"]
