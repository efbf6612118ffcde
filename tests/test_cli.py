"""The dmpf command line, through typer's CliRunner (and a subprocess for start-up behaviour)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from dmpf_cli.config import ExperimentConfig
from dmpf_cli.model.mask import FusionMask

from conftest import error_line


def assert_one_line_error(result, *fragments: str) -> str:
    assert "Traceback" not in result.stdout
    return error_line(result.exit_code, result.stderr, *fragments)


def test_help_lists_the_commands(invoke):
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("config", "plugins", "inspect-mask"):
        assert command in result.stdout


def test_no_arguments_shows_help(invoke):
    result = invoke()
    assert result.exit_code == 0 and "inspect-mask" in result.stdout


def test_version(invoke):
    from dmpf_cli import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"dmpf {__version__}"


def test_an_unknown_option_of_a_subcommand_is_one_error_line(invoke):
    """typer < 0.27.2 used the installed click; with click 8.3+ the root's eager --version callback was handed a
    truthy default, so every command, this one too, printed the version and exited 0."""
    result = invoke("config", "show", "--bogus")
    assert_one_line_error(result, "dmpf config show: No such option: --bogus")
    assert result.stdout == ""


def test_help_groups_the_verbs_by_what_users_do(invoke):
    result = invoke("--help")
    assert result.exit_code == 0
    panels, current = [], None
    for line in result.stdout.splitlines():
        if title := re.match(r"╭─ (.+?) ─", line):
            current = (title.group(1), [])
            panels.append(current)
        elif (verb := re.match(r"│ (\S+)", line)) and current is not None:
            current[1].append(verb.group(1))
    assert panels[1:] == [
        ("Data", ["prepare", "extract"]),
        ("Train and evaluate", ["train", "eval", "predict", "export"]),
        ("Pretrain", ["pretrain-lm", "pretrain-encoders"]),
        ("Experiments", ["grid", "sweep", "report", "bench"]),
        ("Inspect and configure", ["inspect-model", "inspect-mask", "plugins", "config"]),
    ]
    assert panels[0][0] == "Options" and "--show-completion" in panels[0][1]


@pytest.mark.slow
@pytest.mark.parametrize("args, env", [
    (["--help"], {}),
    ([], {"_DMPF_COMPLETE": "complete_bash", "COMP_WORDS": "dmpf train --", "COMP_CWORD": "2"}),  # completing
], ids=["help", "completion"])
def test_startup_imports_no_heavy_modules(args, env):
    """`dmpf --help` and completing a command line must not import torch, transformers or xformers (nor print
    xformers' CUDA warning)."""
    code = (
        "import sys; from dmpf_cli.cli import app\n"
        f"try:\n    app({args!r}, prog_name='dmpf')\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'xformers', 'matplotlib') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stderr
    assert "xformers" not in result.stderr.replace("HEAVY []", "")
    if env:
        assert "--dataset" in result.stdout.split()


@pytest.mark.slow
def test_bash_completion_end_to_end(tmp_path):
    """As a user has it in bash: --install-completion detects the shell and hooks the script into ~/.bashrc (a
    HOME of the test's here); a new shell then completes dmpf's verbs and a group's subcommands;
    --show-completion prints the same script."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "dmpf").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m dmpf_cli "$@"\n', encoding="utf-8")
    (tmp_path / "bin" / "dmpf").chmod(0o755)
    script = """set -e
dmpf --install-completion > /dev/null
source ~/.bashrc
complete -p dmpf
COMP_WORDS=(dmpf inspect-); COMP_CWORD=1; _dmpf_completion dmpf; echo "verbs: ${COMPREPLY[*]}"
COMP_WORDS=(dmpf config s); COMP_CWORD=2; _dmpf_completion dmpf; echo "config: ${COMPREPLY[*]}"
[ "$(dmpf --show-completion)" = "$(cat ~/.bash_completions/dmpf.sh)" ] && echo "shown: the same script"
"""
    (tmp_path / "home").mkdir()
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, env={
        **os.environ, "HOME": str(tmp_path / "home"), "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "complete -o default -F _dmpf_completion dmpf",
        "verbs: inspect-model inspect-mask",
        "config: show",
        "shown: the same script",
    ]


# -- config --------------------------------------------------------------------------------------

def test_config_show_resolves_preset_and_overrides(invoke):
    result = invoke("config", "show", "--dataset", "mosei", "fusion.n_av=16", "mm.gate=tanh")
    assert result.exit_code == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["fusion"] == {"n_a": 10, "n_v": 10, "n_av": 16, "mask": "avseesall"}
    assert shown["mm"]["gate"] == "tanh" and shown["backbone"]["name"] == "gpt2-large"


def test_config_show_json(invoke):
    result = invoke("config", "show", "--format", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["backbone"]["name"] == "gpt2-demo"  # the embedded default: the LM dmpf pretrains (issue 13)


def test_config_validate(invoke, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("name: mine\nfusion: {n_a: 2, n_v: 0, n_av: 6}\n")
    result = invoke("config", "validate", good)
    assert result.exit_code == 0 and "valid" in result.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text("fusion: {n_a: 2, n_avv: 6}\n")
    assert_one_line_error(invoke("config", "validate", bad), str(bad), "fusion.n_avv", "unknown key", "'n_av'")


def test_config_list(invoke):
    result = invoke("config", "list")
    assert result.exit_code == 0
    for name in ("default", "mosei", "sims"):
        assert name in result.stdout


def test_config_takes_a_preset_by_name_as_well_as_a_path(invoke):
    from dmpf_cli.config import CONFIG_DIR

    by_dataset = invoke("config", "show", "--dataset", "mosei", "--format", "json")
    by_name = invoke("config", "show", "--config", "mosei", "--format", "json")
    by_path = invoke("config", "show", "--config", CONFIG_DIR / "mosei.yaml", "--format", "json")
    assert by_name.exit_code == 0, by_name.stderr
    assert json.loads(by_name.stdout) == json.loads(by_dataset.stdout) == json.loads(by_path.stdout)
    assert_one_line_error(invoke("config", "show", "--config", "moseii"), "moseii: no such config file or preset",
                          "did you mean 'mosei'")
    assert_one_line_error(invoke("config", "show", "--config", "my/missing.yaml"), "my/missing.yaml: no such config file")


def test_a_local_file_wins_over_a_preset_of_the_same_name(invoke, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mosei").write_text("name: local\n")
    result = invoke("config", "show", "--config", "mosei", "--format", "json")
    assert result.exit_code == 0 and json.loads(result.stdout)["name"] == "local"


def test_config_cp_copies_a_preset_with_its_comments(invoke, tmp_path):
    from dmpf_cli.config import CONFIG_DIR

    result = invoke("config", "cp", "mosei", tmp_path / "mine")
    assert result.exit_code == 0, result.stderr
    copied = tmp_path / "mine.yaml"
    assert copied.read_text() == (CONFIG_DIR / "mosei.yaml").read_text() and "#" in copied.read_text()
    assert f"dmpf train --config {copied}" in " ".join(result.stdout.split())
    assert invoke("config", "validate", copied).exit_code == 0
    (tmp_path / "dir").mkdir()
    assert invoke("config", "cp", "sims", tmp_path / "dir").exit_code == 0
    assert (tmp_path / "dir" / "sims.yaml").is_file()
    assert_one_line_error(invoke("config", "cp", "mosei", copied), "FILE:", "exists", "never replaces")
    assert copied.read_text() == (CONFIG_DIR / "mosei.yaml").read_text()
    assert_one_line_error(invoke("config", "cp", "moseii", tmp_path / "x.yaml"), "NAME: no preset 'moseii'",
                          "did you mean 'mosei'")
    assert_one_line_error(invoke("config", "cp", "mosei", tmp_path / "x.txt"), "expected a .yaml file name")


@pytest.mark.parametrize("args, fragment", [
    (["eval", "--run", "r", "--split", "train"], "--split: expected test or valid, got 'train'"),
    (["predict", "--run", "r", "--input", "x.jsonl", "--on-error", "ignore"], "--on-error: expected skip or fail"),
    (["prepare", "--dataset", "mosie"], "--dataset: expected mosei, mosi, sims, simsv2 or synthetic, got 'mosie'"),
    (["prepare", "--dataset", "synthetic", "--size", "huge"], "--size: expected tiny, small or mosei-like"),
    (["config", "show", "--format", "yaml"], "--format: expected text or json, got 'yaml'"),
    (["pretrain-lm", "--size", "huge"], "--size: expected small or tiny, got 'huge'"),
])
def test_choice_options_are_enums_listed_in_help_and_refused_in_one_line(invoke, args, fragment, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")  # the help's option column, wide enough for the longest choice list
    assert_one_line_error(invoke(*args), fragment)
    option = fragment.split(":")[0]
    shown = " ".join(invoke(*args[:1 + (args[0] == "config")], "--help").stdout.split())
    choices = fragment.split("expected ")[1].split(", got")[0].replace(" or ", ", ").split(", ")
    assert option in shown and "|".join(choices) in shown.replace("│ ", "").replace(" │", "")


def test_plugins_lists_every_kind(invoke):
    result = invoke("plugins", "--format", "json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert {r["kind"] for r in rows} == {"encoder", "backbone", "head", "mask", "logger", "extractor"}
    assert {"kind": "head", "name": "self-attention"}.items() <= next(r for r in rows if r["name"] == "self-attention").items()
    table = invoke("plugins")
    assert table.exit_code == 0 and "built-in" in table.stdout and "avseesall" in table.stdout


# -- inspect-mask --------------------------------------------------------------------------------

def test_inspect_mask_json_is_only_json(invoke):
    result = invoke("inspect-mask", "--n-a", "10", "--n-v", "10", "--n-av", "12", "--text-len", "7", "--pad", "2",
                    "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)  # the whole of stdout parses
    assert set(data) == {"preset", "segments", "allowed"}
    assert data["preset"] == "avseesall"
    assert data["segments"] == [
        {"name": "text", "start": 0, "length": 7},
        {"name": "audio", "start": 7, "length": 10},
        {"name": "visual", "start": 17, "length": 10},
        {"name": "audio_visual", "start": 27, "length": 12},
    ]
    expected = FusionMask(7, 10, 10, 12).with_right_padding(2).allowed()[0].int().tolist()
    assert data["allowed"] == expected
    assert data["allowed"][8][5] == 0 and data["allowed"][8][4] == 1  # A never sees padded text


def test_inspect_mask_defaults_come_from_the_config(invoke):
    data = json.loads(invoke("inspect-mask", "--dataset", "mosei", "--format", "json").stdout)
    assert [s["length"] for s in data["segments"]] == [50, 10, 10, 12]
    data = json.loads(invoke("inspect-mask", "--dataset", "sims", "--n-a", "0", "--format", "json").stdout)
    assert [s["length"] for s in data["segments"]] == [39, 0, 8, 16]
    data = json.loads(invoke("inspect-mask", "fusion.mask=original", "--format", "json").stdout)
    assert data["preset"] == "original"


def test_inspect_mask_rich_rendering(invoke):
    result = invoke("inspect-mask", "--n-a", "3", "--n-v", "2", "--n-av", "4", "--text-len", "5", "--pad", "1")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "avseesall" in out and "legend" in out and "who sees whom" in out and "padding" in out
    grid = [line for line in out.splitlines() if set(line[4:].strip()) <= set("█·░") and line[4:].strip()]
    assert len(grid) == 14 and all(len(line[4:].rstrip()) == 14 for line in grid)


def test_inspect_mask_png(invoke, tmp_path):
    target = tmp_path / "pics" / "mask.png"
    result = invoke("inspect-mask", "--dataset", "mosei", "--pad", "5", "--output", target)
    assert result.exit_code == 0, result.stderr
    head = target.read_bytes()[:8]
    assert head == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 5000
    # With --format json the picture is still written and stdout stays pure JSON.
    other = tmp_path / "m2.png"
    result = invoke("inspect-mask", "--format", "json", "--output", other)
    assert result.exit_code == 0 and other.is_file() and json.loads(result.stdout)["preset"] == "avseesall"


DEFAULT_TEXT_LEN = ExperimentConfig().data.text_len  # the embedded default's, which inspect-mask uses


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--n-a", "-1"], ["--n-a: expected an integer >= 0, got -1"]),
        (["--n-av", "-3"], ["--n-av"]),
        (["--text-len", "-1"], ["--text-len"]),
        (["--n-a", "x"], ["--n-a", "valid int"]),  # typer 0.29: "a valid integer"; 0.27: "a valid int"
        (["--preset", "avseesal"], ["--preset", "did you mean 'avseesall'"]),
        (["--pad", "99"], [f"--pad: expected 0..{DEFAULT_TEXT_LEN}"]),
        (["--output", "mask.jpg"], ["--output: expected a .png"]),
        (["--format", "yaml"], ["--format"]),
        (["--text-len", "0", "--n-a", "0", "--n-v", "0", "--n-av", "0"], ["at least one position"]),
        (["fusion.n_q=1"], ["fusion.n_q: unknown key"]),
        (["--dataset", "moseii"], ["did you mean 'mosei'"]),
        (["--bogus"], ["No such option"]),
        (["--n-a", "100000"], ["expected at most 4096 positions", f"got {100000 + DEFAULT_TEXT_LEN + 8}"]),
    ],
)
def test_inspect_mask_bad_input(invoke, args, fragments):
    assert_one_line_error(invoke("inspect-mask", *args), *fragments)


def test_unknown_config_key_in_a_file(invoke, tmp_path):
    bad = tmp_path / "exp.yaml"
    bad.write_text("fusion:\n  n_a: 2\n  mask_preset: original\n")
    assert_one_line_error(invoke("inspect-mask", "--config", bad), str(bad), "fusion.mask_preset", "'mask'")


# -- inspect-model -------------------------------------------------------------------------------

def test_inspect_model_default_json(invoke):
    result = invoke("inspect-model", "--format", "json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    params = info["parameters"]
    assert params["total"] == params["trainable"] + params["frozen"] and params["trainable"] > 0
    assert params["frozen"] == params["by_component"]["backbone (frozen)"]
    assert sum(params["by_component"].values()) == params["total"]
    assert info["backbone"]["weights"] == "pretrained by dmpf"  # the demo LM; its shapes need no weights
    assert info["attention"] == {"requested": "auto", "device": "cpu", "resolved": "sdpa"}
    assert [s["length"] for s in info["layout"]] == [DEFAULT_TEXT_LEN, 4, 4, 4] and info["mm_layers"] == [1, 3]


def test_inspect_model_counts_match_a_real_build():
    from dmpf_cli.config import load_config
    from dmpf_cli.model.dmpf import build_model, model_summary

    cfg = load_config(overrides=["backbone.name=gpt2-tiny-random"])  # built for real: no LM to pretrain first
    model, _ = build_model(cfg)
    info = model_summary(cfg)["parameters"]
    assert info["total"] == sum(p.numel() for p in model.parameters())
    assert info["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_inspect_model_mosei_without_weights(invoke):
    result = invoke("inspect-model", "--dataset", "mosei", "--format", "json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["parameters"]["frozen"] == 774_030_080  # GPT2Model gpt2-large, counted on the meta device
    assert info["backbone"]["weights"] == "pretrained"
    assert [s["length"] for s in info["layout"]] == [50, 10, 10, 12]
    assert info["mm_layers"] == [7, 14, 21, 28, 35]


def test_inspect_model_text(invoke):
    result = invoke("inspect-model", "fusion.n_v=0")
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.split())  # rich wraps at the runner's 80 columns
    for fragment in ("pretrained by dmpf", "trainable", "attention: auto → sdpa on cpu", "MM blocks after"):
        assert fragment in text
    assert "encoder visual" not in text and "encoder audio_visual" in text


def test_inspect_model_attention_choice(invoke):
    info = json.loads(invoke("inspect-model", "--attention", "eager", "--format", "json").stdout)
    assert info["attention"]["resolved"] == "eager"
    info = json.loads(invoke("inspect-model", "--attention", "xformers", "--format", "json").stdout)
    assert "cannot run here" in info["attention"]["error"] and "resolved" not in info["attention"]
    assert_one_line_error(invoke("inspect-model", "--attention", "flash"), "training.attention", "'sdpa'")


def test_piped_output_is_not_wrapped(monkeypatch):
    """Into a log or a pipe, a long line (a path, a command to copy) stays one line; COLUMNS still rules."""
    from dmpf_cli.cli.common import PIPED_WIDTH
    from dmpf_cli.cli.common import make_console as _console

    monkeypatch.delenv("COLUMNS", raising=False)
    console = _console()
    assert not console.is_terminal and console.width == PIPED_WIDTH
    line = "run `dmpf prepare --dataset mosei --source FILE.pkl --output " + "/very/long" * 30 + "` first"
    with console.capture() as captured:
        console.print(line)
    assert captured.get() == line + "\n"
    monkeypatch.setenv("COLUMNS", "60")
    assert _console().width == 60


def test_pretrain_lm_sizes_are_the_recipes():
    from dmpf_cli.cli.pretrain import LMSize
    from dmpf_cli.recipes.pretrain_lm import DEMO_SIZES

    assert [size.value for size in LMSize] == list(DEMO_SIZES)
