"""How language-like the text stream of trained runs stays: the causal-LM term on a split, no training.

For each run, the next-token cross-entropy (nats per scored token) of its fused LM's own head on the split's
texts — what ``loss.clm`` trains, computed as in training (``FusedGPT2.clm_loss``) but in eval mode — beside
the frozen LM's alone on the same texts. Without the term, the MM blocks' FFN (``mm.ffn=sequence``) is free to
move the text states away from language; with it (γ > 0) they are held to predicting the text.

    .venv/bin/python benchmarks/text_lm_loss.py RUN [RUN ...] [--split test|valid]

Prints one line per run (docs/demo.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dmpf_cli.data.batches import SplitDataset, make_loader
from dmpf_cli.recipes.datasets import open_data
from dmpf_cli.recipes.evaluate import load_trained


def text_lm_loss(root: Path, split_name: str) -> tuple[float, float]:
    """(the fused LM's, the frozen LM's) mean loss per scored token on ``split_name``'s texts."""
    trained = load_trained(root)
    model, cfg = trained.model, trained.cfg
    split = SplitDataset(open_data(cfg, prepare_missing=False).split(split_name), trained.tokenizer, cfg.data.text_len)
    fused = frozen = tokens = 0.0
    with torch.no_grad():
        for batch in make_loader(split, 64, shuffle=False, num_workers=0, pin_memory=False):
            batch = {k: v.to(trained.device) for k, v in batch.items()}
            frames = model.frames(batch)
            contexts = {s.name: model.encoders[s.name](*(frames[m.key] for m in s.inputs)) for s in model.streams}
            ids, real = batch["text_ids"], batch["text_real"]
            H, _ = model.lm(ids, real, contexts, model.backend_on(ids.device))
            alone = model.backbone(input_ids=ids, attention_mask=real.long()).last_hidden_state
            n = float((real[:, :-1] & real[:, 1:]).sum())  # the targets clm_loss averages over
            fused += float(model.lm.clm_loss(H, ids, real)) * n
            frozen += float(model.lm.clm_loss(alone, ids, real)) * n  # after ln_f, as H
            tokens += n
    return fused / max(tokens, 1), frozen / max(tokens, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--split", choices=("test", "valid"), default="test")
    args = parser.parse_args()
    for root in args.runs:
        fused, frozen = text_lm_loss(root, args.split)
        print(f"{root}: text LM loss {fused:.3f} nats/token (the frozen LM alone: {frozen:.3f})")


if __name__ == "__main__":
    main()
