"""The preflight: a run's data and backbone are opened once, by the checks, and the run takes what they opened."""

from __future__ import annotations

import pytest
from rich.console import Console

from dmpf_cli.recipes.preflight import resolve_config

from conftest import TINY


def save_pretrained_gpt2(directory):
    """A small GPT-2 checkpoint with its tokenizer, saved as the hub holds one: a backbone whose files are looked for."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from dmpf_cli.config import BackboneConfig
    from dmpf_cli.model.tokenizer import load_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        lm = GPT2LMHeadModel(GPT2Config(n_layer=4, n_embd=32, n_head=4, n_positions=64, vocab_size=50257))
    lm.save_pretrained(directory)
    load_tokenizer(BackboneConfig(name="gpt2-tiny-random")).save_pretrained(directory)


@pytest.mark.slow
def test_a_run_opens_its_data_and_finds_its_backbone_once(tmp_path, monkeypatch):
    import dmpf_cli.model.backbone_loader as backbone_loader
    import dmpf_cli.model.tokenizer as tokenizer
    import dmpf_cli.recipes.datasets as datasets
    from dmpf_cli.recipes.runs import train

    save_pretrained_gpt2(tmp_path / "gpt2")
    cfg = resolve_config(overrides=[*TINY, "training.device=cpu", "training.max_epochs=1", "backbone.name=gpt2",
                                    f"backbone.path={tmp_path / 'gpt2'}"])
    calls = {"open data": 0, "locate backbone": 0}

    def counted(name, real):
        def call(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(datasets, "open_prepared", counted("open data", datasets.open_prepared))
    for module in (backbone_loader, tokenizer):  # the two callers of locate_pretrained
        monkeypatch.setattr(module, "locate_pretrained", counted("locate backbone", module.locate_pretrained))
    summary = train(cfg, tmp_path / "run", [1111], console=Console(quiet=True))
    assert next(iter(summary["runs"].values()))["backbone"] == f"pretrained from {tmp_path / 'gpt2'}"
    assert calls == {"open data": 1, "locate backbone": 1}


def test_what_one_check_opened_serves_every_config_that_reads_the_same(tmp_path, monkeypatch):
    """A sweep's trials and a grid's runs reuse the check of their base config where it reads the same data,
    backbone and machine settings; a config that differs there is checked whole (its own data opened)."""
    import dmpf_cli.recipes.datasets as datasets
    from dmpf_cli.recipes import preflight

    console = Console(quiet=True)
    base = resolve_config(overrides=[*TINY, "training.device=cpu"])
    ready = preflight.check(base, console)
    opened = []
    real = datasets.open_prepared
    monkeypatch.setattr(datasets, "open_prepared", lambda folder: opened.append(folder) or real(folder))

    trial = resolve_config(overrides=[*TINY, "training.device=cpu", "optimizer.lr_lm=0.003", "mm.gate=tanh",
                                      "encoders.audio.p_mask=0.2"])
    reused = preflight.reuse(ready, trial, console)
    assert reused.data is ready.data and reused.backbone is ready.backbone and opened == []
    assert reused.cfg.optimizer.lr_lm == 0.003 and reused.cfg.mm.gate == "tanh"  # the trial's own config

    other = resolve_config(overrides=[*TINY, "training.device=cpu", "data.synthetic_seed=3"])
    checked = preflight.reuse(ready, other, console)
    assert checked.data is not ready.data and len(opened) == 1
    assert checked.cfg.data.synthetic_seed == 3


def test_the_encoders_a_run_starts_from_are_part_of_what_its_check_reads():
    """With encoders.init_from, the encoder sections decide whether the pre-trained weights fit (their
    regularisation aside), so they are part of what the check read; without it they are not."""
    from dmpf_cli.recipes.preflight import what_check_reads

    plain = resolve_config(overrides=[*TINY])
    assert what_check_reads(plain) == what_check_reads(resolve_config(overrides=[*TINY, "encoders.audio.layers=2"]))
    start = [*TINY, "encoders.init_from=/somewhere/encoders"]
    base = what_check_reads(resolve_config(overrides=start))
    assert base == what_check_reads(resolve_config(overrides=[*start, "encoders.audio.p_mask=0.3"]))
    assert base != what_check_reads(resolve_config(overrides=[*start, "encoders.audio.layers=2"]))
    assert base != what_check_reads(resolve_config(overrides=[*TINY, "training.device=cpu"]))
