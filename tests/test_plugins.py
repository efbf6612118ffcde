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


def test_dmpf_plugins_check_runs_the_head_contract_on_it(plugin_site):
    from dmpf_cli.plugin_kit import head_contract

    result = run(["plugins", "check", "gated-sum"], plugin_site)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"head 'gated-sum' (dmpf-head-gated): the head contract, {len(head_contract.checks)} checks"
    assert [line.split()[:2] for line in lines[1:-1]] == [["pass", name] for name in head_contract.names()]
    assert lines[-1] == f"gated-sum: {len(head_contract.checks)} passed"


def test_the_plugins_own_contract_tests_pass(plugin_site):
    """plugins/dmpf-head-gated/tests/test_contract.py, as its author runs it: the kit imported from dmpf."""
    from dmpf_cli.plugin_kit import head_contract

    result = run(["-q", "-p", "no:cacheprovider", str(PLUGIN / "tests" / "test_contract.py")], plugin_site,
                 module="pytest")
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"{len(head_contract.checks) + 1} passed" in result.stdout, result.stdout[-3000:]


def test_a_broken_plugin_head_fails_dmpf_plugins_check(tmp_path):
    """A plugin installed (a dist-info with its entry point) whose head forgets to squeeze: (B, 1), not (B,)."""
    info = tmp_path / "dmpf_head_broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dmpf-head-broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[dmpf.plugins]\nunsqueezed = dmpf_head_broken\n")
    (tmp_path / "dmpf_head_broken.py").write_text(
        "import torch\n"
        "from torch import nn\n"
        "from dmpf_cli.registry import register\n\n"
        "class Unsqueezed(nn.Module):\n"
        "    def __init__(self, in_dims):\n"
        "        super().__init__()\n"
        "        self.names = list(in_dims)\n"
        "        self.out = nn.Linear(sum(in_dims.values()), 1)\n\n"
        "    def forward(self, reps):\n"
        "        return self.out(torch.cat([reps[n] for n in self.names], dim=-1))  # (B, 1)\n\n"
        "@register('head', 'unsqueezed')\n"
        "def unsqueezed(cfg, in_dims):\n"
        "    if not in_dims or cfg.options:\n"
        "        raise ValueError(f'unsqueezed head: bad in_dims or options {sorted(cfg.options)}')\n"
        "    return Unsqueezed(in_dims)\n")
    result = run(["plugins", "check", "unsqueezed"], tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "head 'unsqueezed' (dmpf-head-broken): the head contract, 8 checks"
    assert "FAIL  shapes                 train: output shape (5, 1), expected (5,)" in lines
    assert lines[-1] == "unsqueezed: 6 passed, 2 failed"
    assert "Traceback" not in result.stdout + result.stderr


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
