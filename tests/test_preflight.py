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
