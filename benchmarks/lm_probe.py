"""Does a pretrained demo LM read sentiment? A probe of its next-word predictions, no training.

For prefixes such as "the film was great and the music was", the LM's distribution over the next word,
restricted to the sentiment adjectives of the synthetic dataset's lexicon, gives an expected polarity of the
adjective to come. An LM that tracks the writer's attitude expects a positive word after praise joined by "and",
a negative one after praise joined by "but" — and the reverse after criticism. It learned this from the
corpus's statistics alone (dmpf_cli/data/corpus.py): no label was ever shown to it.

    .venv/bin/python benchmarks/lm_probe.py [LM_DIR]      # default: the demo backbone (built if missing)

Prints, per (attitude of the first clause, connector kind), the mean expected polarity over every prefix of
that kind (+1: the strongest praise, -1: the strongest criticism), and the share of prefixes whose sign is the
one attitude tracking predicts.
"""

from __future__ import annotations

import sys
from itertools import product
from pathlib import Path

import torch

from dmpf_cli.data.corpus import CONTRASTS
from dmpf_cli.data.review_text import LEXICON, PHRASES

SUBJECT_PAIRS = (("the film", "the music"), ("the acting", "the plot"), ("the story", "the ending"))


def prefixes():
    """(first clause's attitude, connector kind, prefix) for every strong adjective × connector × subject pair."""
    strong = {+1: [w for w, p in LEXICON.items() if p == 1.0], -1: [w for w, p in LEXICON.items() if p == -1.0]}
    for sign, connector, (first, second) in product((+1, -1), PHRASES["connectors"], SUBJECT_PAIRS):
        kind = "contrast" if connector in CONTRASTS else "additive"
        for adjective in strong[sign]:
            yield sign, kind, f"{first} was {adjective} {connector} {second} was"


def main(directory: Path) -> None:
    from transformers import AutoTokenizer, GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(directory).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    words = list(LEXICON)
    first_ids = [tokenizer(" " + w)["input_ids"][0] for w in words]  # the word's first token
    polarity = torch.tensor([LEXICON[w] for w in words])

    groups: dict[tuple[int, str], list[float]] = {}
    for sign, kind, text in prefixes():
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            probs = model(ids).logits[0, -1].softmax(-1)[first_ids]
        groups.setdefault((sign, kind), []).append(float((probs / probs.sum() * polarity).sum()))

    print(f"language model: {directory}")
    print(f"{'first clause':<14}{'connector':<11}{'prefixes':>9}{'E[polarity of next adjective]':>32}{'sign as tracked':>17}")
    for (sign, kind), values in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        expected = sign if kind == "additive" else -sign
        agree = sum(1 for v in values if v * expected > 0) / len(values)
        print(f"{'praise' if sign > 0 else 'criticism':<14}{kind:<11}{len(values):>9}"
              f"{sum(values) / len(values):>+32.3f}{agree:>16.0%}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        target = Path(sys.argv[1])
    else:
        from dmpf_cli.config import BackboneConfig
        from dmpf_cli.model.backbones import demo_lm_dir
        from dmpf_cli.recipes.pretrain_lm import ensure_backbone

        ensure_backbone(BackboneConfig())
        target = demo_lm_dir()
    main(target)
