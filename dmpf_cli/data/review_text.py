"""The synthetic reviews' words: the sentiment lexicon, the neutral phrases and the sentence templates.

:mod:`dmpf_cli.data.synthetic` writes one sentence per sample into ``raw_text`` (its docstring states the
planted text term); :mod:`dmpf_cli.data.corpus` pretrains the demo language model on the same words and
templates, so the frozen LM knows every word the dataset's texts use. Each opinion clause holds exactly one
word of :data:`LEXICON` and no other word of a sentence is in it, so :func:`text_polarity` recovers a
sentence's mean polarity from the string alone.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LEXICON", "NEUTRAL_PHRASES", "PHRASES", "UNIFORMS_PER_SENTENCE", "review_sentence", "text_polarity"]

_STRONG_POS = ("great", "excellent", "wonderful", "amazing", "brilliant", "fantastic", "superb", "beautiful")
_MILD_POS = ("good", "nice", "pleasant", "fine", "decent", "solid", "enjoyable", "funny")
_MILD_NEG = ("dull", "weak", "boring", "slow", "bland", "messy", "flat", "forgettable")
_STRONG_NEG = ("awful", "terrible", "horrible", "dreadful", "painful", "ugly", "stupid", "miserable")
LEXICON: dict[str, float] = {
    **{w: 1.0 for w in _STRONG_POS}, **{w: 0.5 for w in _MILD_POS},
    **{w: -0.5 for w in _MILD_NEG}, **{w: -1.0 for w in _STRONG_NEG},
}
_WORDS = tuple(LEXICON)

_SUBJECTS = ("the film", "the movie", "the story", "the acting", "the music", "the ending", "the plot",
             "the cast", "the script", "the dialogue", "the soundtrack", "the pacing", "the visuals",
             "the lead", "the humor", "the start")
_VERBS = ("was", "felt", "seemed", "looked", "sounded", "is", "turned out")
_ADVERBS = ("really", "quite", "very", "rather", "a bit", "mostly", "kind of", "just", "so", "honestly")
_ARTICLE_ADVERBS = ("really", "very", "truly", "rather")  # fit between an article and an adjective
_NOUNS = ("film", "movie", "story", "experience", "performance", "show", "ride", "watch")
_OPENERS = ("honestly", "i think", "overall", "to be honest", "in my opinion", "well", "so", "um", "you know",
            "i mean")
_CLOSERS = ("overall", "to me", "i guess", "for sure", "in the end", "really")
_CONNECTORS = ("and", "but", "while", "although", "and also", "yet", "though", "and then")
_NEUTRAL_CLAUSES = ("i watched it last weekend", "we saw it with friends", "it runs about two hours",
                    "the theater was full", "i went in blind", "it came out last year",
                    "my sister recommended it", "i saw the trailer first")
NEUTRAL_PHRASES = (_SUBJECTS + _VERBS + _ADVERBS + _ARTICLE_ADVERBS + _NOUNS + _OPENERS + _CLOSERS
                   + _CONNECTORS + _NEUTRAL_CLAUSES + ("i found", "it was", "a", "an"))
# The phrases the sentences are built from, by role: the demo language model's pretraining corpus speaks the
# same language (dmpf_cli/data/corpus.py), so the frozen LM knows every word the dataset's texts use.
PHRASES: dict[str, tuple[str, ...]] = {
    "subjects": _SUBJECTS, "verbs": _VERBS, "adverbs": _ADVERBS, "article_adverbs": _ARTICLE_ADVERBS,
    "nouns": _NOUNS, "openers": _OPENERS, "closers": _CLOSERS, "connectors": _CONNECTORS,
    "neutral_clauses": _NEUTRAL_CLAUSES,
}

_MAX_PARTS = 4  # up to three opinion clauses and one neutral clause
_U_HEADER = 8
_U_PER_PART = 8
UNIFORMS_PER_SENTENCE = _U_HEADER + _MAX_PARTS * _U_PER_PART  # the columns review_sentence reads



def text_polarity(text: str) -> float:
    """Mean polarity of the lexicon words in ``text`` (0.0 if there are none): the synthetic label's text term
    is ``W_TEXT`` times this."""
    polarities = [LEXICON[t] for t in text.replace(",", " ").split() if t in LEXICON]
    return float(sum(polarities) / len(polarities)) if polarities else 0.0


def _pick(options: tuple[str, ...], u: float) -> str:
    return options[min(int(u * len(options)), len(options) - 1)]


def review_sentence(u: np.ndarray) -> tuple[str, float]:
    """One sentence and its mean polarity from a row of :data:`UNIFORMS_PER_SENTENCE` uniforms (fixed columns,
    so the draws do not depend on the branches)."""
    k = 1 + min(int(u[0] * 3), 2)
    parts: list[str] = []
    polarities: list[float] = []
    for j in range(k):
        c = u[_U_HEADER + j * _U_PER_PART:_U_HEADER + (j + 1) * _U_PER_PART]
        word = _pick(_WORDS, c[5])
        polarities.append(LEXICON[word])
        template = min(int(c[0] * 3), 2)
        if template == 2:
            adj = f"{_pick(_ARTICLE_ADVERBS, c[4])} {word}" if c[3] < 0.3 else word
            article = "an" if adj[0] in "aeiou" else "a"
            parts.append(f"it was {article} {adj} {_pick(_NOUNS, c[7])}")
        else:
            adj = f"{_pick(_ADVERBS, c[4])} {word}" if c[3] < 0.4 else word
            subject = _pick(_SUBJECTS, c[1])
            parts.append(f"{subject} {_pick(_VERBS, c[2])} {adj}" if template == 0 else f"i found {subject} {adj}")
    # the neutral clause, opener and closer only in shorter sentences: every sentence stays within
    # 28 GPT-2 tokens (3 clauses of <= 8 and 2 connectors of <= 2), so a 32-token window cuts no word off
    if k == 1 and u[5] < 0.5:
        parts.insert(min(int(u[7] * (k + 1)), k), _pick(_NEUTRAL_CLAUSES, u[6]))
    text = parts[0]
    for j, part in enumerate(parts[1:], start=1):
        text += f" {_pick(_CONNECTORS, u[_U_HEADER + j * _U_PER_PART + 6])} {part}"
    if k < 3 and u[1] < 0.4:
        text = f"{_pick(_OPENERS, u[2])} {text}"
    if k < 3 and u[3] < 0.3:
        text = f"{text} {_pick(_CLOSERS, u[4])}"
    return text, sum(polarities) / len(polarities)
