"""Typed configuration: presets, overrides, and one-line errors that name file, key and expectation."""

from __future__ import annotations

import json

import pytest
import yaml

from dmpf_cli.config import (
    CONFIG_DIR,
    MAX_SEED,
    ConfigError,
    ExperimentConfig,
    load_config,
    preset_names,
    to_yaml,
)
from dmpf_cli.recipes.preflight import resolve_config
from dmpf_cli.validation import parse_override

from conftest import error_line


def test_default_yaml_equals_the_builtin_defaults():
    assert load_config() == ExperimentConfig()
    assert load_config(dataset="default") == ExperimentConfig()


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_is_valid_and_round_trips(name, tmp_path):
    cfg = load_config(dataset=name)
    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(to_yaml(cfg))
    assert load_config(config=dumped) == cfg


def reference_recipe(cfg) -> None:
    """The reference's regularisers and gates, which the paper's numbers were trained with (the embedded default
    departs from some of them, by measurement)."""
    assert cfg.backbone.dropout == 0.1 and cfg.mm.gate == "sigmoid"
    assert (cfg.augment.softperm, cfg.augment.softperm_std) == (0.1, 0.05)
    assert set(cfg.augment.softperm_inputs) == {"text", "audio", "vision"}
    assert cfg.encoders.audio_visual.fuse_norm and cfg.encoders.init_from is None


def test_mosei_preset_matches_spec():
    cfg = load_config(dataset="mosei")
    assert (cfg.backbone.name, cfg.data.dataset, cfg.data.text_len) == ("gpt2-large", "mosei", 50)
    assert (cfg.fusion.n_a, cfg.fusion.n_v, cfg.fusion.n_av, cfg.fusion.mask) == (10, 10, 12, "avseesall")
    assert cfg.mm.layers == [7, 14, 21, 28, 35]
    loss = cfg.loss
    assert (loss.task, loss.a, loss.v, loss.av, loss.text, loss.tokens) == (1.0,) * 6  # design.md §5
    reference_recipe(cfg)
    enc = cfg.encoders
    assert (enc.audio.d, enc.audio.heads, enc.audio.layers) == (30, 6, 3)
    assert (enc.vision.d, enc.vision.heads, enc.vision.layers) == (40, 8, 6)
    assert (enc.audio_visual.d, enc.audio_visual.heads, enc.audio_visual.layers) == (30, 6, 3)
    assert {enc.audio.max_len, enc.vision.max_len, enc.audio_visual.max_len} == {50}
    assert (cfg.optimizer.lr_lm, cfg.optimizer.lr_encoders, cfg.optimizer.betas) == (1e-4, 1e-4, (0.9, 0.95))
    assert (cfg.training.batch_size, cfg.training.grad_accum, cfg.training.patience) == (32, 8, 10)
    assert cfg.training.max_epochs == 20  # the reference's large_best
    assert cfg.training.seeds == [1111, 1112, 1113, 1114, 1115]


def test_sims_preset_matches_spec():
    cfg = load_config(dataset="sims")
    assert (cfg.backbone.name, cfg.data.dataset, cfg.data.text_len) == ("gpt2-chinese", "sims", 39)
    assert (cfg.fusion.n_a, cfg.fusion.n_v, cfg.fusion.n_av) == (10, 8, 16)
    assert cfg.mm.layers == [5, 6, 7, 8, 9, 10, 11]
    loss = cfg.loss
    assert (loss.task, loss.a, loss.v, loss.av, loss.text, loss.tokens) == (1.0, 0.5, 0.5, 1.0, 1.0, 1.0)
    reference_recipe(cfg)
    assert (cfg.optimizer.lr_lm, cfg.optimizer.lr_encoders) == (2e-4, 1e-4)
    assert cfg.training.patience == 20
    assert (cfg.encoders.audio.d, cfg.encoders.audio.layers, cfg.encoders.vision.d) == (32, 8, 16)
    # the reference's base_best encoder sections
    assert (cfg.encoders.audio.p_mask, cfg.encoders.vision.p_mask, cfg.encoders.audio.dropout) == (0.1, 0.2, 0.2)


def reference_loss_and_av_dropout(cfg, clm: float) -> None:
    """The reference's causal-LM weight, and its AV encoder's time-step dropout 0.1 with no whole-modality drop."""
    assert cfg.loss.clm == clm
    av = cfg.encoders.audio_visual
    assert (av.p_mask, av.whole_modality_dropout) == (0.1, 0.0)
    # dmpf's optimizer choices stay (the reference's are options)
    o = cfg.optimizer
    assert (o.decay, o.clip_by, o.clip_side) == ("matrices", "norm", "both")
    assert (cfg.schedule.warmup_from_zero, cfg.schedule.cosine_extra_epochs) == (False, 0.0)


@pytest.mark.parametrize("name", ["mosei", "sims"])
def test_paper_presets_take_the_references_clm_and_av_dropout(name):
    reference_loss_and_av_dropout(load_config(dataset=name), clm=1.0)


def test_mosi_preset_takes_the_references_mosi_recipe():
    cfg = load_config(dataset="mosi")
    assert (cfg.data.dataset, cfg.data.text_len, cfg.backbone.name) == ("mosi", 50, "gpt2-medium")
    assert (cfg.fusion.n_a, cfg.fusion.n_v, cfg.fusion.n_av, cfg.fusion.mask) == (0, 0, 8, "avseesall")
    assert cfg.mm.layers == [11, 14, 17, 20, 23] and (cfg.mm.gate, cfg.mm.dropout) == ("sigmoid", 0.1)
    loss = cfg.loss
    assert (loss.task, loss.av, loss.text, loss.tokens) == (1.0, 0.8, 0.8, 0.4)
    reference_loss_and_av_dropout(cfg, clm=0.0)
    av = cfg.encoders.audio_visual
    assert (av.d, av.heads, av.layers, av.max_len, av.dropout) == (30, 6, 3, 50, 0.1)
    o = cfg.optimizer
    assert (o.lr_lm, o.lr_encoders, o.betas, o.weight_decay) == (1e-4, 1e-4, (0.9, 0.95), 0.001)
    t = cfg.training
    assert (t.batch_size, t.grad_accum, t.max_epochs, t.patience, t.precision) == (32, 8, 150, 30, "bf16")
    assert cfg.augment.softperm == 0.1 and cfg.backbone.dropout == 0.1


def test_a_config_with_the_old_name_of_whole_modality_dropout_still_loads(tmp_path):
    old = tmp_path / "old.yaml"  # a run directory's config.yaml from before the rename
    old.write_text("encoders:\n  audio_visual: {modality_dropout: 0.3}\n")
    assert load_config(config=old).encoders.audio_visual.whole_modality_dropout == 0.3
    assert load_config(overrides=["encoders.audio_visual.modality_dropout=0.2"]).encoders.audio_visual \
        .whole_modality_dropout == 0.2


def test_overrides_are_parsed_as_yaml(tmp_path):
    cfg = load_config("mosei", None, ["fusion.n_av=16", "mm.layers=[1, 2]", "mm.gate=tanh", "optimizer.lr_lm=3e-4",
                                     "head.options.temperature=0.5", f"backbone.path={tmp_path}"])
    assert cfg.fusion.n_av == 16 and cfg.mm.layers == [1, 2] and cfg.mm.gate == "tanh"
    assert cfg.optimizer.lr_lm == 3e-4 and cfg.head.options == {"temperature": 0.5}
    assert cfg.backbone.path == str(tmp_path)


def one_error(**kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        resolve_config(**kwargs)
    message = str(info.value)
    assert "\n" not in message, f"expected one line, got:\n{message}"
    assert "Traceback" not in message
    return message


def write(tmp_path, data, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_typo_key_names_file_key_and_close_match(tmp_path):
    path = write(tmp_path, {"fusion": {"n_a": 2, "nav": 3}})
    message = one_error(config=path)
    assert message.startswith(f"{path}: fusion.nav: unknown key")
    assert "did you mean 'n_av'" in message


def test_typo_section(tmp_path):
    message = one_error(config=write(tmp_path, {"trianing": {"batch_size": 4}}))
    assert "trianing: unknown key" in message and "'training'" in message


def test_wrong_type(tmp_path):
    path = write(tmp_path, {"training": {"batch_size": "lots"}})
    assert one_error(config=path) == f"{path}: training.batch_size: expected an integer, got 'lots'"


def test_negative_token_count(tmp_path):
    path = write(tmp_path, {"fusion": {"n_v": -2}})
    assert one_error(config=path) == f"{path}: fusion.n_v: expected an integer >= 0, got -2"


def test_bad_literal(tmp_path):
    message = one_error(config=write(tmp_path, {"mm": {"gate": "relu"}}))
    assert "mm.gate: expected one of 'sigmoid' or 'tanh', got 'relu'" in message


def test_mm_layer_beyond_backbone_depth():
    message = one_error(dataset="mosei", overrides=["mm.layers=[7, 36]"])
    assert message.startswith("override 'mm.layers=[7, 36]': mm.layers:")
    assert "0..35" in message and "gpt2-large has 36 blocks" in message and "[36]" in message


def test_mm_layer_depth_read_from_local_config_json(tmp_path):
    model_dir = tmp_path / "gpt2-small-local"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"n_layer": 6, "n_embd": 64, "n_head": 4, "n_positions": 128}))
    ok = resolve_config("mosei", None, [f"backbone.path={model_dir}", "mm.layers=[5]", "data.text_len=40"])
    assert ok.mm.layers == [5]
    assert "has 6 blocks" in one_error(dataset="mosei", overrides=[f"backbone.path={model_dir}", "mm.layers=[6]"])
    (model_dir / "config.json").write_text("{not json")
    assert "not a readable GPT-2 config.json" in one_error(dataset="mosei", overrides=[f"backbone.path={model_dir}"])


def test_too_many_positions():
    message = one_error(overrides=["data.text_len=250"])
    assert "data.text_len" in message and "64 positions" in message  # gpt2-demo, the default backbone


def test_unknown_component_names_suggest():
    assert "did you mean 'self-attention'" in one_error(overrides=["head.name=self_attention"])
    assert "did you mean 'avseesall'" in one_error(overrides=["fusion.mask=avseeall"])
    assert "backbone.name: unknown backbone 'gpt2-larg'" in one_error(overrides=["backbone.name=gpt2-larg"])
    assert "encoders.vision.name" in one_error(overrides=["encoders.vision.name=lstm"])


def test_encoder_width_divisible_by_heads(tmp_path):
    path = write(tmp_path, {"encoders": {"audio": {"d": 30, "heads": 4}}})
    assert one_error(config=path) == f"{path}: encoders.audio: d=30 must be divisible by heads=4"
    # an override elsewhere does not take the blame for the file's section
    assert one_error(config=path, overrides=["encoders.vision.d=64"]) == (
        f"{path}: encoders.audio: d=30 must be divisible by heads=4"
    )


# -- errors name the override that caused them, whatever check fires -----------------------------

@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["foo.bar=1"], "override 'foo.bar=1': foo: unknown key; expected one of: name, description, data, encoders, "
                        "backbone, fusion, mm, head, loss, augment, optimizer, schedule, training"),
        (["mm.layers=[1,1]"], "override 'mm.layers=[1,1]': mm.layers: must not repeat a block, got [1, 1]"),
        (["mm={layers: [2, 2]}"], "override 'mm={layers: [2, 2]}': mm.layers: must not repeat a block, got [2, 2]"),
        (["encoders.audio.d=30"], "override 'encoders.audio.d=30': encoders.audio: d=30 must be divisible by heads=4"),
        (["encoders.audio={d: 30}"], "override 'encoders.audio={d: 30}': encoders.audio: d=30 must be divisible by heads=4"),
        (["mm.gate=tanh", "encoders.audio.heads=5", "encoders.audio.d=31"],
         "overrides 'encoders.audio.heads=5', 'encoders.audio.d=31': encoders.audio: d=31 must be divisible by heads=5"),
        (["fusion.n_a.x=1"], "override 'fusion.n_a.x=1': fusion.n_a: is a int value, it has no key 'x'"),
    ],
)
def test_errors_blame_the_override(overrides, expected):
    assert one_error(overrides=overrides) == expected


def test_cli_errors_blame_the_override(invoke):
    result = invoke("config", "show", "foo.bar=1")
    line = error_line(result.exit_code, result.stderr, "override 'foo.bar=1': foo: unknown key")
    assert "default.yaml" not in line
    result = invoke("config", "show", "mm.layers=[1,1]")
    assert error_line(result.exit_code, result.stderr) == (
        "error: override 'mm.layers=[1,1]': mm.layers: must not repeat a block, got [1, 1]"
    )
    result = invoke("config", "validate", CONFIG_DIR / "mosei.yaml", "encoders.audio.d=32")
    assert error_line(result.exit_code, result.stderr) == (
        "error: override 'encoders.audio.d=32': encoders.audio: d=32 must be divisible by heads=6"
    )


# -- backbone.path must name something load_backbone can read --------------------------------------

def test_backbone_path_must_exist(tmp_path, monkeypatch):
    assert one_error(overrides=[f"backbone.path={tmp_path / 'nope'}"]) == (
        f"override 'backbone.path={tmp_path / 'nope'}': backbone.path: {tmp_path / 'nope'} does not exist, "
        "expected a model directory"
    )
    monkeypatch.setenv("HOME", str(tmp_path))
    assert one_error(overrides=["backbone.path=~/models/gpt2"]) == (
        f"override 'backbone.path=~/models/gpt2': backbone.path: ~/models/gpt2 ({tmp_path / 'models' / 'gpt2'}) "
        "does not exist, expected a model directory"
    )
    (tmp_path / "models" / "gpt2").mkdir(parents=True)
    assert resolve_config(overrides=["backbone.path=~/models/gpt2"]).backbone.path == "~/models/gpt2"
    (tmp_path / "weights.bin").write_bytes(b"")
    assert one_error(overrides=[f"backbone.path={tmp_path / 'weights.bin'}"]).endswith(
        f"backbone.path: {tmp_path / 'weights.bin'} is a file, expected a model directory"
    )
    path = write(tmp_path, {"backbone": {"name": "gpt2-large", "path": "/models/missing"}})
    assert one_error(config=path) == f"{path}: backbone.path: /models/missing does not exist, expected a model directory"


def test_backbone_path_hub_id_must_be_in_the_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    message = one_error(dataset="mosei", overrides=["backbone.path=openai-community/gpt2-large"])
    assert message == (
        "override 'backbone.path=openai-community/gpt2-large': backbone.path: openai-community/gpt2-large "
        f"is neither a directory nor a hub id in the Hugging Face cache ({cache})"
    )
    (cache / "models--openai-community--gpt2-large" / "snapshots" / "0123abc").mkdir(parents=True)
    cfg = resolve_config(dataset="mosei", overrides=["backbone.path=openai-community/gpt2-large"])
    assert cfg.backbone.path == "openai-community/gpt2-large"


def test_cli_refuses_a_missing_backbone_path(invoke):
    result = invoke("config", "validate", CONFIG_DIR / "mosei.yaml", "backbone.path=/nope")
    error_line(result.exit_code, result.stderr, "override 'backbone.path=/nope': backbone.path: /nope does not exist")
    assert "valid" not in result.stdout
    result = invoke("inspect-model", "--dataset", "mosei", "backbone.path=/models/missing")
    error_line(result.exit_code, result.stderr, "backbone.path: /models/missing does not exist")


# -- name becomes a directory name: a safe slug only ------------------------------------------------

NAME_RULE = "expected a non-empty name of at most 100 letters, digits, '.', '_' or '-', not starting with '.'"


@pytest.mark.parametrize("name", ["../escaped", "", ".hidden", "a/b", "a b", "x" * 101, "..", "runs\\x"])
def test_unsafe_names_are_refused(name, tmp_path):
    got = repr(name) if len(name) <= 50 else repr(name)[:57] + "..."  # long values are shortened
    assert one_error(overrides=[f"name={name}"]) == f"override 'name={name}': name: {NAME_RULE}, got {got}"
    path = write(tmp_path, {"name": name})
    assert one_error(config=path) == f"{path}: name: {NAME_RULE}, got {got}"


@pytest.mark.parametrize("name", ["mosei", "mosei-v2.1_a", "2024", "_x", "-x", "x" * 100])
def test_safe_names_are_accepted(name):
    assert load_config(overrides=[f"name='{name}'"]).name == name


def test_train_refuses_an_escaping_name_before_writing(invoke, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "name=../escaped")
    error_line(result.exit_code, result.stderr, "override 'name=../escaped': name: expected a non-empty name")
    assert list(tmp_path.iterdir()) == []  # no runs/, and no runs/../escaped-DATE-TIME beside it


def test_several_problems_one_line_each(tmp_path):
    path = write(tmp_path, {"fusion": {"n_a": -1, "n_v": "x"}})
    with pytest.raises(ConfigError) as info:
        load_config(config=path)
    assert len(info.value.problems) == 2 and len(str(info.value).splitlines()) == 2


@pytest.mark.parametrize(
    "content, expected",
    [
        ("fusion: {n_a: [1, 2\n", "invalid YAML: line"),
        ("- just\n- a list\n", "expected a mapping of sections at the top level, got list"),
        ("fusion: 3\n", "fusion: expected a mapping of keys, got 3"),
    ],
)
def test_malformed_files(tmp_path, content, expected):
    path = write(tmp_path, content)
    message = one_error(config=path)
    assert message.startswith(str(path)) and expected in message


def test_missing_file_and_directory(tmp_path):
    assert one_error(config=tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: no such config file"
    assert "is a directory" in one_error(config=tmp_path)


def test_unknown_preset_and_conflicting_sources(tmp_path):
    assert "did you mean 'mosei'" in one_error(dataset="moseii")
    assert "give one of them" in one_error(dataset="mosei", config=tmp_path / "x.yaml")


@pytest.mark.parametrize(
    "override, expected",
    [
        ("fusion.n_a", "expected key.sub=value"),
        ("=3", "expected key.sub=value"),
        ("fusion..n_a=3", "expected key.sub=value"),
        ("fusion.n_a.x=1", "fusion.n_a: is a int value, it has no key 'x'"),
    ],
)
def test_malformed_overrides(override, expected):
    assert expected in one_error(overrides=[override])


def test_empty_file_means_defaults(tmp_path):
    assert load_config(config=write(tmp_path, "")) == ExperimentConfig()


def test_config_dir_is_the_repository_configs():
    assert (CONFIG_DIR / "default.yaml").is_file()


@pytest.mark.parametrize(
    "overrides, blamed, key",
    [
        (["fusion.n_a=1000"], "override 'fusion.n_a=1000'", "data.text_len"),
        (["--dataset", "mosei", "backbone.name=gpt2-tiny-random"], "override 'backbone.name=gpt2-tiny-random'",
         "mm.layers"),
        (["mm.layers=[9]"], "override 'mm.layers=[9]'", "mm.layers"),
    ],
)
def test_a_check_across_keys_blames_the_override_that_broke_it(invoke, overrides, blamed, key):
    result = invoke("config", "show", *overrides)
    line = error_line(result.exit_code, result.stderr, f"{blamed}: {key}:")
    assert "yaml" not in line  # not the preset file, which is fine on its own


# -- numbers as people write them (YAML 1.2: dmpf_cli.yamlio) ---------------------------------------

@pytest.mark.parametrize("override, expected", [
    ("optimizer.lr_lm=3e-4", 3e-4), ("optimizer.lr_lm=1e3", 1000.0), ("training.max_epochs=010", 10),
    ("head.options.temperature=3e-4", 3e-4), ("head.options.tag=1.2.3", "1.2.3"), ("head.options.flag=yes", "yes"),
])
def test_override_values_are_yaml_1_2(override, expected):
    value = parse_override(override)[1]
    assert value == expected and type(value) is type(expected)


def test_a_config_file_with_exponents_gives_floats_to_the_model_and_to_a_plugin_heads_options(tmp_path):
    path = write(tmp_path, "optimizer:\n  lr_lm: 1e-4\n  lr_encoders: 5e-5\nhead:\n  options: {temperature: 3e-4, "
                           "scale: 2E2, version: 1.2.3}\n")
    cfg = load_config(config=path)
    assert (cfg.optimizer.lr_lm, cfg.optimizer.lr_encoders) == (1e-4, 5e-5)
    assert cfg.head.options == {"temperature": 3e-4, "scale": 200.0, "version": "1.2.3"}  # what a plugin head gets
    assert isinstance(cfg.head.options["temperature"], float)
    assert load_config(config=write(tmp_path, to_yaml(cfg), "again.yaml")) == cfg  # and to_yaml writes it back


def test_yes_and_no_are_strings_but_a_boolean_key_still_takes_them(tmp_path):
    cfg = load_config(config=write(tmp_path, "name: no\nencoders: {audio: {input_norm: off}}\n"))
    assert cfg.name == "no" and cfg.encoders.audio.input_norm is False


# -- seeds: one rule (config.MAX_SEED) ---------------------------------------------------------------

@pytest.mark.parametrize("seeds, expected", [
    ("[-1]", "training.seeds.0: expected an integer >= 0, got -1"),
    (f"[{2**32}]", "training.seeds.0: expected an integer <= 4294967295, got 4294967296"),
    ("[1, 1]", "training.seeds: expected distinct seeds, got [1, 1]"),
])
def test_training_seeds_are_distinct_and_in_range(seeds, expected):
    assert expected in one_error(overrides=[f"training.seeds={seeds}"])


def test_seeds_at_the_ends_of_the_range_are_accepted():
    assert load_config(overrides=[f"training.seeds=[0, {MAX_SEED}]"]).training.seeds == [0, MAX_SEED]


def test_a_yaml_alias_bomb_in_a_config_is_one_line(invoke, tmp_path):
    from test_yamlio import BILLION_LAUGHS

    options = "".join(f"    {line}\n" for line in BILLION_LAUGHS.splitlines())  # head.options takes any mapping
    path = write(tmp_path, f"head:\n  options:\n{options}description: *i\n")
    result = invoke("config", "show", "--config", path)
    error_line(result.exit_code, result.stderr, f"{path}: its aliases expand it by", "a YAML alias bomb")


@pytest.mark.parametrize("override", ["optimizer.lr_lm=.inf", "loss.a=-.inf", "head.dropout=.nan"])
def test_infinities_and_nan_are_refused(override):
    key, _, value = override.partition("=")
    shown = {".inf": "Infinity", "-.inf": "-Infinity", ".nan": "NaN"}[value]
    assert one_error(overrides=[override]) == f"override '{override}': {key}: expected a finite number, got {shown}"


def test_grid_files_and_space_files_find_their_base_config_by_one_rule(tmp_path, monkeypatch):
    """Beside the naming file, else from the working directory, else a preset's name: grid files and sweep space
    files used two rules (a space file could not name a config from the working directory)."""
    from dmpf_cli.config import CONFIG_DIR, base_config
    from dmpf_cli.experiments.sweep import load_space

    (tmp_path / "sub").mkdir()
    named_in = tmp_path / "sub" / "space.yaml"
    (tmp_path / "sub" / "beside.yaml").write_text("name: beside\n")
    (tmp_path / "here.yaml").write_text("name: here\n")
    monkeypatch.chdir(tmp_path)
    assert base_config(named_in, "beside.yaml") == tmp_path / "sub" / "beside.yaml"
    assert base_config(named_in, "here.yaml") == tmp_path / "here.yaml"
    assert base_config(named_in, "mosei") == CONFIG_DIR / "mosei.yaml"
    assert base_config(named_in, "missing.yaml") == tmp_path / "sub" / "missing.yaml"  # reading it says so
    with pytest.raises(ConfigError, match="did you mean 'mosei'"):
        base_config(named_in, "moseii")
    named_in.write_text("base: here.yaml\nspace:\n  optimizer.lr_lm: {low: 1.0e-4, high: 1.0e-2, log: true}\n")
    assert load_space(named_in).base_path == tmp_path / "here.yaml"
