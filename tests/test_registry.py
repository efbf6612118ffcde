"""The component registry: lookup, clashes, entry-point plugins (working and broken), and per-kind contracts."""

from __future__ import annotations

import json
import textwrap

import pytest

from dmpf_cli import registry
from dmpf_cli.config import BackboneConfig
from dmpf_cli.plugin_kit import backbone_contract, mask_contract

from conftest import dmpf


def test_every_kind_has_builtins():
    for kind in registry.KINDS:
        assert registry.names(kind), kind


def test_unknown_name_lists_close_matches():
    with pytest.raises(registry.RegistryError, match=r"unknown head 'self-atention': did you mean 'self-attention'\?"):
        registry.get("head", "self-atention")
    with pytest.raises(registry.RegistryError, match="available: .*gpt2-large"):
        registry.get("backbone", "bert")
    with pytest.raises(registry.RegistryError, match="unknown component kind 'optimizer'"):
        registry.get("optimizer", "adamw")


def test_a_name_cannot_be_taken_twice():
    registry.names("head")  # built-ins loaded
    with pytest.raises(registry.RegistryError, match="clashes"):
        @registry.register("head", "concat")
        def another_concat(cfg, in_dims):  # pragma: no cover - never called
            raise AssertionError


def test_create_calls_the_factory():
    arch = registry.create("backbone", "gpt2-large", BackboneConfig(name="gpt2-large"))
    assert (arch.n_layer, arch.n_embd) == (36, 1280)


# -- per-kind contracts, parametrised over everything registered (plugins included) ---------------

# the checks live in the package (dmpf_cli.plugin_kit, what `dmpf plugins check NAME` runs): the mask contract (a
# MaskPreset of its name, text sees only text causally, every segment sees itself, no query row left blind) and the
# backbone contract (positive shapes, n_embd divisible by n_head, random_init iff the name ends in -random, a hub_id
# iff pretrained and not built by dmpf, the label that follows), one test per component and check
test_mask_preset_contract = mask_contract.pytest_tests(registry.names("mask"))
test_backbone_contract = backbone_contract.pytest_tests(registry.names("backbone"))


# -- entry points, in a subprocess so discovery starts from scratch --------------------------------

def _fake_distribution(root, dist: str, module: str, source: str, entry: str | None = None) -> None:
    """A minimal installed distribution: dist-info with an entry point, and its module."""
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[dmpf.plugins]\n{dist} = {entry or module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))


def _dmpf(args, pythonpath):
    return dmpf(*args, check=False, pythonpath=[pythonpath], timeout=120)


@pytest.mark.slow
def test_entry_point_plugin_is_discovered_with_its_origin(tmp_path):
    _fake_distribution(tmp_path, "acme-masks", "acme_masks", """
        from dmpf_cli.model.mask import MaskPreset
        from dmpf_cli.registry import register

        @register("mask", "everyone-sees-text")
        def everyone_sees_text():
            "Fusion tokens see only text and themselves."
            rules = {("text", "text"): "causal"}
            for seg in ("audio", "visual", "audio_visual"):
                rules[(seg, "text")] = "all"
                rules[(seg, seg)] = "causal"
            return MaskPreset("everyone-sees-text", "", rules)
    """)
    result = _dmpf(["plugins", "--format", "json"], tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(result.stdout)}
    assert rows[("mask", "everyone-sees-text")]["origin"] == "acme-masks"
    assert rows[("mask", "avseesall")]["origin"] == "built-in"
    shown = _dmpf(["inspect-mask", "--preset", "everyone-sees-text", "--format", "json"], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["preset"] == "everyone-sees-text"


@pytest.mark.slow
def test_setup_hook_entry_point_is_called(tmp_path):
    _fake_distribution(tmp_path, "hooked", "hooked_mod", """
        from dmpf_cli.registry import register
        from dmpf_cli.model.mask import avseesall

        def setup():
            register("mask", "hooked-copy")(lambda: avseesall())
    """, entry="hooked_mod:setup")
    result = _dmpf(["plugins", "--format", "json"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert any(r["name"] == "hooked-copy" and r["origin"] == "hooked" for r in json.loads(result.stdout))


@pytest.mark.slow
def test_broken_plugin_warns_in_one_line_and_the_rest_works(tmp_path):
    _fake_distribution(tmp_path, "broken-plugin", "broken_plugin", "raise RuntimeError('boom at import')\n")
    result = _dmpf(["plugins", "--format", "json"], tmp_path)
    assert result.returncode == 0
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert warnings == ["warning: plugin 'broken-plugin' (broken-plugin) failed to load: RuntimeError: boom at import"]
    assert any(r["name"] == "avseesall" for r in json.loads(result.stdout))
    shown = _dmpf(["config", "show", "--format", "json"], tmp_path)
    assert shown.returncode == 0 and json.loads(shown.stdout)["name"] == "default"


@pytest.mark.slow
def test_plugin_cannot_replace_a_builtin(tmp_path):
    _fake_distribution(tmp_path, "hijack", "hijack", """
        from dmpf_cli.registry import register

        @register("mask", "avseesall")
        def avseesall():
            raise AssertionError("never used")
    """)
    result = _dmpf(["plugins", "--format", "json"], tmp_path)
    assert result.returncode == 0
    assert "plugin 'hijack' (hijack) failed to load: RegistryError: mask 'avseesall' from hijack clashes" in result.stderr
    rows = [r for r in json.loads(result.stdout) if r["name"] == "avseesall"]
    assert rows == [{"kind": "mask", "name": "avseesall", "origin": "built-in", "description": rows[0]["description"]}]


@pytest.mark.slow
def test_plugin_calling_sys_exit_or_failing_in_several_lines_only_warns(tmp_path):
    _fake_distribution(tmp_path, "exits-plugin", "exits_plugin", "import sys\nsys.exit('no GPU here, giving up')\n")
    _fake_distribution(tmp_path, "chatty-plugin", "chatty_plugin", "raise ValueError('first line\\n  second line\\n')\n")
    _fake_distribution(tmp_path, "hook-exits", "hook_exits", """
        import sys

        def setup():
            sys.exit(3)
    """, entry="hook_exits:setup")
    result = _dmpf(["plugins", "--format", "json"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(line for line in result.stderr.splitlines() if line.strip()) == [
        "warning: plugin 'chatty-plugin' (chatty-plugin) failed to load: ValueError: first line second line",
        "warning: plugin 'exits-plugin' (exits-plugin) failed to load: SystemExit: no GPU here, giving up",
        "warning: plugin 'hook-exits' (hook-exits) failed to load: SystemExit: 3",
    ]
    assert any(r["name"] == "avseesall" for r in json.loads(result.stdout))


class _FailingEntryPoint:
    """Stands in for an importlib.metadata.EntryPoint whose load() raises ``exc``."""

    dist = None
    attr = None

    def __init__(self, name: str, exc: BaseException):
        self.name, self.value, self.exc = name, name, exc

    def load(self):
        raise self.exc


@pytest.fixture
def fresh_plugins(monkeypatch):
    """Rediscover plugins from the entry points that the test installs (the registry is restored afterwards)."""
    registry.names("mask")  # built-ins loaded (and real plugins, if any) before the state is swapped
    monkeypatch.setitem(registry._state, "plugins", False)
    monkeypatch.setattr(registry, "_plugin_warnings", [])

    def install(*entry_points):
        found = {registry.ENTRY_POINT_GROUP: list(entry_points)}
        monkeypatch.setattr(registry.metadata, "entry_points", lambda group: found.get(group, []))

    return install


def test_plugin_exit_and_multiline_errors_are_one_line_warnings(fresh_plugins, capsys):
    fresh_plugins(
        _FailingEntryPoint("quits", SystemExit("bye\nfor good")),
        _FailingEntryPoint("silent", SystemExit()),
        _FailingEntryPoint("messy", RuntimeError("a\n\n   b\tc\n")),
    )
    registry.load_plugins()
    assert registry.plugin_warnings() == [
        "plugin 'quits' (quits) failed to load: SystemExit: bye for good",
        "plugin 'silent' (silent) failed to load: SystemExit",
        "plugin 'messy' (messy) failed to load: RuntimeError: a b c",
    ]
    assert capsys.readouterr().err.count("\n") == 3
    assert "avseesall" in registry.names("mask")


def test_ctrl_c_while_loading_a_plugin_is_not_swallowed(fresh_plugins):
    fresh_plugins(_FailingEntryPoint("slow", KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        registry.load_plugins()
    assert registry._origin_stack == []
