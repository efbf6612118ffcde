"""Generated review text to pretrain the demo language model on — causal language modelling only, never labels.

The synthetic dataset's ``raw_text`` plants a text term: the mean polarity of its sentiment adjectives. A frozen
language model only helps DMPF read that term if its representations order those adjectives by sentiment, and
a language model learns that only when its language gives it a reason to. This module writes reviews in the
synthetic dataset's own words and templates (``review_text.LEXICON``, ``review_text.PHRASES``) whose statistics
carry sentiment the way real reviews do:

* **A review has an attitude.** Each review draws its reviewer's attitude ``v`` uniformly in [-1, 1]: its sign
  is the sentiment, its size the strength. Every opinion clause picks its adjective with probability
  proportional to ``exp(-(polarity - a)² / (2·SPREAD²))`` for the clause's current attitude ``a`` — strong
  attitudes choose strong words ("great", "awful"), mild ones mild words ("nice", "bland").
* **Clauses agree, contrast words flip.** Within a sentence the attitude carries from clause to clause; after
  a contrastive connector ("but", "although", "yet", "though", "while") it flips sign; after an additive one
  ("and", "and also", "and then") it stays. As in real reviews, agreement is the rule: a connector is
  contrastive with probability ``P_CONTRAST``. Each new sentence returns to the reviewer's attitude.
* **Verdicts weigh it all up.** A sentence often ends "so overall it was …", its adjective following the mean
  polarity of every adjective the sentence used — praise and criticism balance ("great but awful, so overall
  it was fine"). To predict it, a language model must carry the running balance of sentiment to the end of
  the sentence: exactly the quantity the synthetic dataset's text term is made of.

So predicting the next adjective needs the running attitude, and words of one polarity and strength become
interchangeable in context: the LM learns to represent sentiment from text statistics alone. The labels of
the synthetic dataset are never used, and its sentences are not reused (they are drawn independently, with
adjectives chosen uniformly): the corpus shares the vocabulary, not the data.

:func:`reviews` is deterministic for a seed (numpy ``default_rng``); one review is one document.
"""

from __future__ import annotations

import numpy as np

from .review_text import LEXICON, PHRASES

GENERATOR = "dmpf.corpus/1"  # bump when the text generated for a seed changes
SPREAD = 0.3  # how tightly a clause's adjective follows its attitude
CONTRASTS = frozenset({"but", "although", "yet", "though", "while"})  # connectors that turn the attitude
P_CONTRAST = 0.2  # how often a clause is joined by a contrast (the rest agree)
N_SENTENCES = 3  # a review has one to N_SENTENCES sentences
P_PAIR = 0.5  # how often a clause piles up two adjectives
P_VERDICT = 0.5  # how often a sentence ends in a verdict: the mean polarity of what it said, contrasts and all

_WORDS = tuple(LEXICON)
_POLARITY = np.array([LEXICON[w] for w in _WORDS])


def _choice(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _adjective(rng: np.random.Generator, attitude: float, said: list[float]) -> str:
    """An adjective following ``attitude``; its polarity is appended to ``said``."""
    weights = np.exp(-((_POLARITY - attitude) ** 2) / (2 * SPREAD**2))
    index = int(rng.choice(len(_WORDS), p=weights / weights.sum()))
    said.append(float(_POLARITY[index]))
    return _WORDS[index]


def _clause(rng: np.random.Generator, attitude: float, said: list[float]) -> str:
    """One opinion clause in one of the dataset's three templates, its adjective following ``attitude`` —
    sometimes two adjectives of one attitude ("great and wonderful"), as reviewers pile praise or blame."""
    word = _adjective(rng, attitude, said)
    if rng.random() < P_PAIR:
        word = f"{word} and {_adjective(rng, attitude, said)}"
    template = int(rng.integers(3))
    if template == 2:
        adj = f"{_choice(rng, PHRASES['article_adverbs'])} {word}" if rng.random() < 0.3 else word
        return f"it was {'an' if adj[0] in 'aeiou' else 'a'} {adj} {_choice(rng, PHRASES['nouns'])}"
    adj = f"{_choice(rng, PHRASES['adverbs'])} {word}" if rng.random() < 0.4 else word
    subject = _choice(rng, PHRASES["subjects"])
    return f"{subject} {_choice(rng, PHRASES['verbs'])} {adj}" if template == 0 else f"i found {subject} {adj}"


_CONTRASTIVE = tuple(c for c in PHRASES["connectors"] if c in CONTRASTS)
_ADDITIVE = tuple(c for c in PHRASES["connectors"] if c not in CONTRASTS)


def _sentence(rng: np.random.Generator, attitude: float) -> str:
    """Two or three opinion clauses, the attitude flipping after each contrastive connector; sometimes a
    verdict that weighs up what the sentence said."""
    said: list[float] = []
    text = _clause(rng, attitude, said)
    for _ in range(1 + int(rng.integers(2))):  # two or three clauses: every sentence has a clause to predict
        contrast = rng.random() < P_CONTRAST
        connector = _choice(rng, _CONTRASTIVE if contrast else _ADDITIVE)
        if contrast:
            attitude = -attitude
        text += f" {connector} {_clause(rng, attitude, said)}"
    if rng.random() < P_VERDICT:  # "… but the music was awful so overall it was fine": the balance of it all
        text += f" so overall it was {_adjective(rng, float(np.mean(said)), [])}"
    if rng.random() < 0.25:
        text = f"{_choice(rng, PHRASES['neutral_clauses'])} and {text}"
    if rng.random() < 0.3:
        text = f"{_choice(rng, PHRASES['openers'])} {text}"
    if rng.random() < 0.2:
        text = f"{text} {_choice(rng, PHRASES['closers'])}"
    return text


def review(rng: np.random.Generator) -> str:
    """One review: one to three sentences by one reviewer, separated by " . "."""
    attitude = float(rng.uniform(-1.0, 1.0))
    return " . ".join(_sentence(rng, attitude) for _ in range(1 + int(rng.integers(N_SENTENCES))))


def reviews(n: int, seed: int = 0) -> list[str]:
    """``n`` generated reviews, the same for the same ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([0xC0, seed]))
    return [review(rng) for _ in range(n)]
