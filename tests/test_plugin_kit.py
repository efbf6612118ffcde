"""The plugin author's kit (dmpf_cli.plugin_kit) and ``dmpf plugins check``: every built-in passes its kind's
contract through the command; a broken component fails the right check, in one readable line, with exit status 1;
an unknown name is one error line naming the close names; the kit leaves the caller's RNG alone and needs no pytest.

The example plugin, installed, is checked in tests/test_plugins.py (slow: pip)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from dmpf_cli import registry
from dmpf_cli.plugin_kit import CONTRACTS, Skip, check_component, head_contract, logger_contract
from dmpf_cli.recipes.loggers import Logger

from conftest import error_line

# every logger but wandb, whose offline run takes seconds (it runs in the slow tier below)
FAST_LOGGERS = [n for n in registry.names("logger") if n != "wandb"]
test_logger_contract = logger_contract.pytest_tests(FAST_LOGGERS)
test_wandb_logger_contract = pytest.mark.slow(logger_contract.pytest_tests("wandb"))


@pytest.fixture
def temporary():
    """Register components for one test (as a plugin would); they are removed again afterwards."""
    added: list[tuple[str, str]] = []

    def register(kind: str, name: str):
        registry.names(kind)  # built-ins and installed plugins loaded first
        added.append((kind, name))
        return registry.register(kind, name)

    yield register
    for kind, name in added:
        registry._registry[kind].pop(name, None)


def check_lines(result) -> dict[str, tuple[str, str]]:
    """``dmpf plugins check``'s check lines as {check: (status, detail)}."""
    lines = result.stdout.splitlines()[1:-1]  # between the heading and the summary
    return {parts[1]: (parts[0], parts[2] if len(parts) > 2 else "") for parts in (line.split(None, 2) for line in lines)}


# -- every built-in passes, through the command ----------------------------------------------------

@pytest.mark.parametrize("kind, name", [("encoder", "transformer"), ("backbone", "gpt2-tiny-random"),
                                        ("head", "concat"), ("mask", "avseesall"), ("logger", "jsonl")])
def test_a_builtin_of_each_kind_passes_dmpf_plugins_check(invoke, kind, name):
    result = invoke("plugins", "check", name)
    assert result.exit_code == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{kind} '{name}' (built-in): the {kind} contract, {len(CONTRACTS[kind].checks)} checks"
    assert check_lines(result) == {c.name: ("pass", c.description) for c in CONTRACTS[kind].checks}
    assert lines[-1] == f"{name}: {len(CONTRACTS[kind].checks)} passed"


def test_check_as_json(invoke):
    result = invoke("plugins", "check", "gpt2", "--kind", "backbone", "--format", "json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert {k: report[k] for k in ("kind", "name", "origin", "passed")} == {
        "kind": "backbone", "name": "gpt2", "origin": "built-in", "passed": True}
    assert [c["check"] for c in report["checks"]] == CONTRACTS["backbone"].names()
    assert {c["status"] for c in report["checks"]} == {"pass"}


def test_plugins_alone_still_lists(invoke):
    listed = invoke("plugins", "--format", "json")
    assert listed.exit_code == 0 and any(r["name"] == "transformer" for r in json.loads(listed.stdout))


# -- names -----------------------------------------------------------------------------------------

def test_an_unknown_name_is_one_line_naming_the_close_ones(invoke):
    result = invoke("plugins", "check", "self-atention")
    error_line(result.exit_code, result.stderr, "unknown component 'self-atention'", "did you mean 'self-attention'",
               "dmpf plugins")
    assert result.stdout == ""


def test_a_name_of_another_kind_and_a_bad_kind(invoke):
    error_line(*_codes(invoke("plugins", "check", "concat", "--kind", "encoder")), "unknown encoder 'concat'",
               "available: transformer")
    error_line(*_codes(invoke("plugins", "check", "concat", "--kind", "optimizer")),
               "--kind: expected encoder, backbone, head, mask, logger or extractor, got 'optimizer'")


def test_a_name_several_kinds_use_needs_kind(invoke, temporary):
    @temporary("mask", "gpt2")
    def gpt2_mask():  # pragma: no cover - never built
        raise AssertionError

    error_line(*_codes(invoke("plugins", "check", "gpt2")), "'gpt2' is registered as backbone and mask", "--kind")
    assert invoke("plugins", "check", "gpt2", "--kind", "backbone").exit_code == 0
    broken = invoke("plugins", "check", "gpt2", "--kind", "mask")
    assert broken.exit_code == 1 and check_lines(broken)["preset"] == ("FAIL", "AssertionError (no message)")


def _codes(result):
    return result.exit_code, result.stderr


# -- broken components fail the right check --------------------------------------------------------

class WrongShapeHead(nn.Module):
    """Returns (B, 1) instead of (B,): the mistake of forgetting a squeeze."""

    def __init__(self, in_dims):
        super().__init__()
        if not in_dims:
            raise ValueError("wrong-shape head: needs at least one representation")
        self.names = list(in_dims)
        self.out = nn.Linear(sum(in_dims.values()), 1)

    def forward(self, reps):
        return self.out(torch.cat([reps[n] for n in self.names], dim=-1))


def test_a_head_of_the_wrong_shape_fails_shapes(invoke, temporary):
    @temporary("head", "wrong-shape")
    def wrong_shape(cfg, in_dims):
        if cfg.options:
            raise ValueError(f"wrong-shape head: unknown options {sorted(cfg.options)}")
        return WrongShapeHead(in_dims)

    result = invoke("plugins", "check", "wrong-shape")
    assert result.exit_code == 1, result.stdout
    lines = check_lines(result)
    assert lines["shapes"] == ("FAIL", "train: output shape (5, 1), expected (5,)")
    assert lines["every-ablation"][0] == "FAIL" and "output (3, 1), expected (3,) finite" in lines["every-ablation"][1]
    assert lines["backward"] == ("pass", head_contract.get("backward").description)  # the others still run
    assert result.stdout.splitlines()[-1] == "wrong-shape: 6 passed, 2 failed"
    assert "Traceback" not in result.stdout + result.stderr


class LeakyEncoder(nn.Module):
    """Averages over every frame, padding included, and never zeroes the padded steps."""

    def __init__(self, cfg, in_dims):
        super().__init__()
        self.out_dim, self.max_len = cfg.d, cfg.max_len
        self.proj = nn.ModuleList(nn.Linear(d, cfg.d) for d in in_dims)

    def forward(self, *streams):
        h = sum(proj(x.mean(dim=1)) for proj, (x, _) in zip(self.proj, streams))  # the padding leaks in here
        lengths = torch.stack([n for _, n in streams]).amax(0).clamp(max=self.max_len)
        return h[:, None, :].expand(-1, self.max_len, -1).contiguous(), lengths


def test_an_encoder_that_leaks_padding_fails_the_padding_checks(temporary):
    @temporary("encoder", "leaky")
    def leaky(cfg, in_dims):
        return LeakyEncoder(cfg, in_dims)

    component, outcomes = check_component("leaky")
    status = {o.check: (o.status, o.detail) for o in outcomes}
    assert status["shapes"] == ("FAIL", "unimodal, train: padded output positions must be zero")
    assert status["padding-ignored"][0] == "FAIL"
    assert status["padding-ignored"][1].startswith("unimodal: padding frames holding 1000000.0 change the output: ")
    assert status["nonfinite-padding"][0] == "FAIL"
    assert status["unknown-option"] == ("FAIL", "options.unknown_knob was accepted: expected a ValueError or "
                                                "DmpfError naming 'unknown_knob'")
    assert all("\n" not in detail for _, detail in status.values())
    assert status["seeded-build"][0] == status["state-dict-round-trip"][0] == "pass"


def test_an_exception_inside_the_component_is_that_checks_failure(temporary):
    @temporary("head", "crashes")
    def crashes(cfg, in_dims):
        return nn.Identity()  # forward(dict) returns the dict itself

    _, outcomes = check_component("crashes")
    status = {o.check: (o.status, o.detail) for o in outcomes}
    assert status["shapes"] == ("FAIL", "AttributeError: 'dict' object has no attribute 'shape'")
    assert status["bad-construction"] == ("FAIL", "options.unknown_knob was accepted: expected a ValueError or "
                                                  "DmpfError naming 'unknown_knob'")


def test_a_logger_whose_package_is_missing_is_skipped_not_failed(invoke, temporary):
    @temporary("logger", "needs-nothing-real")
    def needs_nothing_real(cfg, run, *, resume_step):
        return Logger()

    needs_nothing_real.needs = ("dmpf_no_such_module", "nothing")
    result = invoke("plugins", "check", "needs-nothing-real")
    assert result.exit_code == 0, result.stdout
    reason = "needs the dmpf_no_such_module package, not installed here: pip install dmpf[nothing]"
    assert set(check_lines(result).values()) == {("skip", reason)}
    assert result.stdout.splitlines()[-1] == "needs-nothing-real: 5 skipped"


def test_a_logger_that_changes_the_records_fails(temporary):
    class Rounding(Logger):
        def log(self, record):
            record.pop("parts", None)

    @temporary("logger", "rounding")
    def rounding(cfg, run, *, resume_step):
        return Rounding()

    _, outcomes = check_component("rounding")
    status = {o.check: o for o in outcomes}
    assert status["leaves-records-alone"].status == "FAIL"
    assert status["leaves-records-alone"].detail.startswith("the step record at step 1 was changed")
    assert status["logs-a-run"].ok and status["resumes"].ok


# -- the kit as a library --------------------------------------------------------------------------

def test_checks_leave_the_callers_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    assert all(o.ok for o in head_contract.run("concat"))
    assert torch.equal(torch.get_rng_state(), state)


def test_verify_raises_and_skip_is_a_skip(temporary):
    @temporary("head", "always-broken")
    def always_broken(cfg, in_dims):
        raise ValueError("always-broken head: cannot be built")

    with pytest.raises(ValueError, match="cannot be built"):
        head_contract.verify("always-broken", "shapes")
    with pytest.raises(registry.RegistryError, match="unknown head check 'shape'.*shapes"):
        head_contract.verify("concat", "shape")
    assert issubclass(Skip, Exception)


@pytest.mark.slow  # a fresh interpreter importing torch
def test_importing_the_kit_and_checking_needs_no_pytest():
    code = textwrap.dedent("""
        import sys
        sys.modules["pytest"] = None  # any import of pytest now fails
        from dmpf_cli.plugin_kit import check_component
        component, outcomes = check_component("concat")
        assert all(o.status == "pass" for o in outcomes), outcomes
        print(len(outcomes))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(len(head_contract.checks))
