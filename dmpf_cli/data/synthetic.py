"""Synthetic datasets in the MMSA processed-pickle layout (design.md §7), with planted, known structure.

The point of the data is to tell whether a model uses *every* interaction the paper cares about:
text alone, each non-verbal modality alone, and the audio × vision interaction that neither modality
carries on its own. :func:`generate` returns ``(data, info)``; ``data`` is a plain dict in exactly the
MMSA layout (builtin containers, ``str`` and numpy arrays only, so a restricted unpickler can read it
back), ``info`` is a JSON-serialisable description for the manifest.

The planted structure
---------------------
For every sample, with all latent factors independent of each other and of the sample's split::

    label = clip(T + A + V + I + e, -3, 3)

    T = W_TEXT   * mean polarity of the sentiment words in raw_text        (text term)
    A = W_AUDIO  * z_a,      z_a ~ N(0, 1), written into the audio frames   (audio-only term)
    V = W_VISION * z_v,      z_v ~ N(0, 1), written into the vision frames  (vision-only term)
    I = W_AV * u_a * u_v,    u_a ~ N(0, 1) in audio, u_v ~ N(0, 1) in vision (interaction term)
    e ~ N(0, NOISE_SIGMA²)                                                   (label noise)

* **Text.** ``raw_text`` is a lower-case, spoken-style English sentence of one to three opinion
  clauses built from templates ("the ending felt really dull", "i found the music great", "it was
  an awful movie"), joined by connectors ("and", "but", "although", ...), with optional neutral
  openers, closers and one optional neutral clause ("we saw it with friends") in the shorter
  sentences, so that every sentence is at most 28 GPT-2 BPE tokens (4 to 23 words). Each opinion
  clause holds exactly one word of :data:`review_text.LEXICON` — 32 common adjectives, 8 each at polarity +1,
  +0.5, -0.5 and -1 — drawn uniformly; no other word of the sentence is in the lexicon, and there is
  no negation and no intensifier effect ("really dull" counts as "dull"). :func:`review_text.text_polarity`
  recovers the mean polarity from the string, so ``T = W_TEXT * text_polarity(raw_text)`` exactly.
  The polarities are symmetric, so ``T`` is symmetric about 0 (variance ``W_TEXT² * 0.625 * 11/18``).
* **Audio and vision frames.** Each modality has two fixed *signal directions* (unit vectors drawn
  once per seed, each supported on its own small random set of feature coordinates): audio carries
  ``z_a`` along ``d_z`` and ``u_a`` along ``d_u``, vision likewise ``z_v`` and ``u_v``. Every real frame
  is ``z * d_z + u * d_u + nuisance + FRAME_SIGMA * noise`` where the nuisance is a per-sample offset
  (a few random directions on the other coordinates, constant over the sample's frames) and the
  per-frame Gaussian noise has its component along both signal directions removed. So the latents are
  recoverable *exactly* (to float32 rounding) from any single real frame by a dot product with the
  directions recorded in ``info["structure"]``; the features carry nothing about the label besides
  them. Frames from ``audio_lengths[i]`` on are padding, exactly +0.0. Because the signal sits on
  every real frame with the same amplitude, a model that averages padding frames into its pooling
  sees a length-dependent shrinkage — this data punishes a broken padding mask.
* **The interaction is invisible to each modality alone.** ``u_a`` and ``u_v`` are independent,
  zero-mean and symmetric, so ``E[I | audio] = W_AV * u_a * E[u_v] = 0`` and likewise for vision;
  ``I`` is uncorrelated with every function of one modality's latents. Only a model that combines
  audio and vision can predict it. (Because of the final clip, ``E[label | audio]`` depends on
  ``|u_a|`` very slightly through the spread of the label; the unclipped term has no such effect.)
* **Lengths** of audio and vision are drawn independently, uniform in [ceil(0.3 L), L].
* **Labels**: ``regression_labels`` float32 in [-3, 3]; ``classification_labels`` follow the MMSA
  convention from the sign of the regression label: 0 negative, 1 neutral (exactly 0), 2 positive.
  The labels are continuous, so class 1 is essentially empty.

The weights make every term matter: the expected variances are text 0.55, audio 0.30, vision 0.30,
interaction 0.42 and noise 0.06 (total 1.64; after clipping the label std is ≈ 1.26 and ~2.5% of
the labels sit at ±3); ``info["term_variance"]`` and ``info["label_stats"]`` have the measured values.

Reference predictors (``info["reference"]``, on the test split, clipped to [-3, 3], with MMSA's MAE
and Pearson Corr): ``ideal`` (everything but the label noise: the noise floor, attainable from the
inputs since the latents are exactly recoverable), ``no_interaction`` (T + A + V), ``text_only`` (T),
``audio_only`` (A), ``vision_only`` (V), pairs (``text_audio``, ``text_vision``, ``audio_vision``),
and ``constant`` (the train mean). Each predictor is ``clip(sum of the terms its inputs determine)``.
Given those inputs, the rest of the unclipped label is a sum of independent terms each symmetric
about 0, so the predictor is the conditional *median* of the clipped label (clipping is monotone):
the MAE-optimal prediction from those inputs. It is not exactly the conditional mean of the clipped
label, which a model trained with an MSE loss would approach; the difference is small because few
labels clip.

Determinism
-----------
Everything is drawn from ``np.random.default_rng`` streams derived from ``(seed, split, stream)``:
one stream for the latents, lengths and label noise, one for the texts, one each for the audio and
vision frame noise, and one for the structure (directions) shared by all splits and sizes. Frames are
built chunk by chunk into preallocated float32 arrays with element-wise operations only (no BLAS
reductions, whose rounding can depend on the CPU), so the output is byte-identical for a given
``(size, seed)``, independent of the chunk size, and — for the same numpy version — of the machine.
Peak memory is the final arrays plus one chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from ..streams import DATASETS, SPLITS
from .review_text import LEXICON, UNIFORMS_PER_SENTENCE, review_sentence

__all__ = [
    "GENERATOR", "SIZES", "SizeSpec", "W_TEXT", "W_AUDIO", "W_VISION", "W_AV", "NOISE_SIGMA",
    "FRAME_SIGMA", "LABEL_RANGE", "REFERENCE_TERMS", "reference_for", "generate", "iter_generate", "make_info", "planted_terms",
    "structure",
]

GENERATOR = "dmpf.synthetic/2"  # bump when the generated data changes for a given (size, seed)
_DATASET = DATASETS["synthetic"]  # MOSEI's feature widths and label range

# -- planted weights -------------------------------------------------------------------------------
W_TEXT = 1.2
W_AUDIO = 0.55
W_VISION = 0.55
W_AV = 0.65
NOISE_SIGMA = 0.25
LABEL_RANGE = _DATASET.label_range

FRAME_SIGMA = 1.0  # per-frame feature noise (orthogonal to the signal directions)
NUISANCE_SIGMA = 1.0  # per-sample nuisance offset, per nuisance direction
LENGTH_MIN_FRACTION = 0.3
_SUPPORT = {"audio": 8, "vision": 6}  # coordinates per signal direction
_NUISANCE_RANK = {"audio": 4, "vision": 3}

_TAG = 0xD3F5  # mixed into every seed sequence: this generator's streams are its own
_STREAM_LATENT, _STREAM_TEXT, _STREAM_AUDIO, _STREAM_VISION = 0, 1, 2, 3
_STRUCTURE_SPLIT = 255


@dataclass(frozen=True)
class SizeSpec:
    """Split counts and padded shapes of one synthetic size."""

    name: str
    n_train: int
    n_valid: int
    n_test: int
    audio_len: int  # La
    vision_len: int  # Lv
    audio_dim: int = _DATASET.feature_dims[0]  # Da (COVAREP, as in MOSEI)
    vision_dim: int = _DATASET.feature_dims[1]  # Dv (Facet, as in MOSEI)

    @property
    def splits(self) -> dict[str, int]:
        return {"train": self.n_train, "valid": self.n_valid, "test": self.n_test}

    @property
    def feature_bytes(self) -> int:
        """Bytes of the float32 audio and vision arrays of all splits together."""
        n = self.n_train + self.n_valid + self.n_test
        return 4 * n * (self.audio_len * self.audio_dim + self.vision_len * self.vision_dim)


SIZES: dict[str, SizeSpec] = {
    # fast tests
    "tiny": SizeSpec("tiny", 96, 32, 32, audio_len=20, vision_len=16),
    # the embedded default dataset: a small model learns every term in a few CPU minutes
    "small": SizeSpec("small", 6000, 600, 600, audio_len=50, vision_len=40),
    # exactly MOSEI unaligned_50's sizes (~4.6 GB of float32 features), for memory benchmarks
    "mosei-like": SizeSpec("mosei-like", 16326, 1871, 4659, audio_len=500, vision_len=375),
}

_TEXT_TERM_VAR = W_TEXT ** 2 * 0.625 * 11.0 / 18.0  # Var(polarity) = 0.625, E[1/k] = 11/18 for k in {1,2,3}


# -- seeds, structure and latents ------------------------------------------------------------------

def _spec(size: str | SizeSpec) -> SizeSpec:
    if isinstance(size, SizeSpec):
        return size
    if size not in SIZES:
        raise ValueError(f"unknown synthetic size '{size}': expected one of {', '.join(SIZES)}")
    return SIZES[size]


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    return int(seed)


def _rng(seed: int, split: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([_TAG, seed, split, stream]))


def _unit(w: np.ndarray) -> list[float]:
    # math.fsum is exactly rounded: no dependence on how a CPU's SIMD orders a numpy reduction
    norm = math.sqrt(math.fsum(float(x) * float(x) for x in w))
    return [float(x) / norm for x in w]


def structure(seed: int, audio_dim: int = _DATASET.feature_dims[0], vision_dim: int = _DATASET.feature_dims[1]) -> dict:
    """The fixed feature-space structure of a seed: per modality, the coordinates and weights of the
    ``z`` and ``u`` signal directions (unit vectors on disjoint coordinate sets) and the nuisance
    directions (on the remaining coordinates). Plain lists, JSON-serialisable."""
    seed = _check_seed(seed)
    rng = _rng(seed, _STRUCTURE_SPLIT, 0)
    out = {}
    for modality, dim in (("audio", audio_dim), ("vision", vision_dim)):
        k, r = _SUPPORT[modality], _NUISANCE_RANK[modality]
        if dim < 2 * k + 1:
            raise ValueError(f"{modality} dimension {dim} is too small (needs at least {2 * k + 1})")
        perm = rng.permutation(dim)
        entry: dict = {}
        for name, coords in (("z", perm[:k]), ("u", perm[k:2 * k])):
            entry[name] = {"coords": [int(c) for c in coords], "weights": _unit(rng.standard_normal(k))}
        rest = perm[2 * k:]
        nuisance = []
        for _ in range(r):
            nuisance.append({"coords": [int(c) for c in rest], "weights": _unit(rng.standard_normal(len(rest)))})
        entry["nuisance"] = nuisance
        out[modality] = entry
    return out


def _dense(direction: dict, dim: int) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float64)
    v[np.asarray(direction["coords"])] = np.asarray(direction["weights"])
    return v


def _lengths(rng: np.random.Generator, n: int, full: int) -> np.ndarray:
    low = max(1, math.ceil(LENGTH_MIN_FRACTION * full))
    return rng.integers(low, full, size=n, endpoint=True, dtype=np.int64)


def _split_latents(spec: SizeSpec, seed: int, split_index: int) -> dict:
    """Texts, lengths, latent factors, terms and labels of one split (no frames)."""
    n = spec.splits[SPLITS[split_index]]
    rng = _rng(seed, split_index, _STREAM_LATENT)
    audio_lengths = _lengths(rng, n, spec.audio_len)
    vision_lengths = _lengths(rng, n, spec.vision_len)
    z_a, u_a, z_v, u_v = rng.standard_normal((4, n))
    nuisance_a = NUISANCE_SIGMA * rng.standard_normal((n, _NUISANCE_RANK["audio"]))
    nuisance_v = NUISANCE_SIGMA * rng.standard_normal((n, _NUISANCE_RANK["vision"]))
    noise = NOISE_SIGMA * rng.standard_normal(n)

    uniforms = _rng(seed, split_index, _STREAM_TEXT).random((n, UNIFORMS_PER_SENTENCE))
    texts, polarity = [], np.empty(n)
    for i in range(n):
        text, polarity[i] = review_sentence(uniforms[i])
        texts.append(text)

    terms = {
        "text": W_TEXT * polarity,
        "audio": W_AUDIO * z_a,
        "vision": W_VISION * z_v,
        "interaction": W_AV * u_a * u_v,
    }
    clean = terms["text"] + terms["audio"] + terms["vision"] + terms["interaction"]
    return {
        "texts": texts, "audio_lengths": audio_lengths, "vision_lengths": vision_lengths,
        "z_a": z_a, "u_a": u_a, "z_v": z_v, "u_v": u_v, "nuisance_a": nuisance_a, "nuisance_v": nuisance_v,
        "polarity": polarity, **{f"{k}_term": v for k, v in terms.items()},
        "noise": noise, "clean": clean, "unclipped": clean + noise,
        "label": np.clip(clean + noise, *LABEL_RANGE),
    }


def planted_terms(size: str | SizeSpec = "small", seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """The hidden per-sample quantities behind :func:`generate`'s data, per split (float64 arrays, no
    frames; cheap even for mosei-like): ``z_a u_a z_v u_v`` (latents), ``polarity``, ``text_term
    audio_term vision_term interaction_term noise``, ``clean`` (the four terms), ``unclipped`` and
    ``label`` (= the float64 value of ``regression_labels``)."""
    spec, seed = _spec(size), _check_seed(seed)
    keep = ("z_a", "u_a", "z_v", "u_v", "polarity", "text_term", "audio_term", "vision_term", "interaction_term",
            "noise", "clean", "unclipped", "label")
    out = {}
    for index, name in enumerate(SPLITS):
        lat = _split_latents(spec, seed, index)
        out[name] = {k: lat[k] for k in keep}
    return out


# -- frames ----------------------------------------------------------------------------------------

def _fill_frames(out: np.ndarray, lengths: np.ndarray, z: np.ndarray, u: np.ndarray, nuisance: np.ndarray,
                 modality_structure: dict, rng: np.random.Generator, chunk: int) -> None:
    """Write the frames of one modality of one split into ``out`` (N, L, D) float32, in place."""
    n, length, dim = out.shape
    signal = [(np.asarray(modality_structure[k]["coords"]), np.asarray(modality_structure[k]["weights"],
                                                                        dtype=np.float32)) for k in ("z", "u")]
    d_z = _dense(modality_structure["z"], dim)
    d_u = _dense(modality_structure["u"], dim)
    nuisance_dirs = [_dense(d, dim) for d in modality_structure["nuisance"]]
    frame_index = np.arange(length)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        x = out[start:stop]
        # the noise stream is consumed in C order, so the values do not depend on the chunk size
        rng.standard_normal(dtype=np.float32, out=x)
        for coords, weights in signal:  # remove the noise along both signal directions (fixed-order sums)
            along = x[..., coords[0]] * weights[0]
            for c, w in zip(coords[1:], weights[1:]):
                along += x[..., c] * w
            for c, w in zip(coords, weights):
                x[..., c] -= along * w
        if FRAME_SIGMA != 1.0:
            x *= np.float32(FRAME_SIGMA)
        # per-sample offset: the latents along their directions plus the nuisance (element-wise, float64)
        offset = z[start:stop, None] * d_z + u[start:stop, None] * d_u
        for r, direction in enumerate(nuisance_dirs):
            offset += nuisance[start:stop, r, None] * direction
        x += offset.astype(np.float32)[:, None, :]
        x[frame_index[None, :] >= lengths[start:stop, None]] = 0.0


def _classes(labels: np.ndarray) -> np.ndarray:
    return np.where(labels < 0, 0.0, np.where(labels > 0, 2.0, 1.0)).astype(np.float32)


def iter_generate(size: str | SizeSpec = "small", seed: int = 0, *, chunk: int = 128
                  ) -> Iterator[tuple[str, dict]]:
    """Yield ``(name, split)`` for train, valid and test in turn, each split a dict in the MMSA layout.

    Only one split is alive in here at a time: a consumer that writes each split out and drops it
    needs memory for the largest split only. ``chunk`` (samples per step) changes nothing in the output.
    """
    spec, seed = _spec(size), _check_seed(seed)
    if chunk < 1:
        raise ValueError("chunk: expected a positive number of samples")
    struct = structure(seed, spec.audio_dim, spec.vision_dim)
    for index, name in enumerate(SPLITS):
        lat = _split_latents(spec, seed, index)
        n = len(lat["texts"])
        audio = np.empty((n, spec.audio_len, spec.audio_dim), dtype=np.float32)
        _fill_frames(audio, lat["audio_lengths"], lat["z_a"], lat["u_a"], lat["nuisance_a"], struct["audio"],
                     _rng(seed, index, _STREAM_AUDIO), chunk)
        vision = np.empty((n, spec.vision_len, spec.vision_dim), dtype=np.float32)
        _fill_frames(vision, lat["vision_lengths"], lat["z_v"], lat["u_v"], lat["nuisance_v"], struct["vision"],
                     _rng(seed, index, _STREAM_VISION), chunk)
        raw_text = np.empty(n, dtype=object)
        raw_text[:] = lat["texts"]
        ids = np.empty(n, dtype=object)
        ids[:] = [f"synth_{name}_{i:06d}" for i in range(n)]
        labels = lat["label"].astype(np.float32)
        yield name, {
            "raw_text": raw_text,
            "audio": audio,
            "vision": vision,
            "audio_lengths": lat["audio_lengths"],
            "vision_lengths": lat["vision_lengths"],
            "regression_labels": labels,
            "classification_labels": _classes(labels),
            "id": ids,
        }


# -- info and reference metrics --------------------------------------------------------------------

def _metrics(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    pred = np.clip(pred, *LABEL_RANGE)
    mae = float(np.mean(np.abs(pred - label)))
    if np.std(pred) == 0 or np.std(label) == 0:
        corr = 0.0  # Pearson is undefined for a constant; reported as 0
    else:
        corr = float(np.corrcoef(pred, label)[0, 1])
    return {"mae": round(mae, 6), "corr": round(corr, 6)}


# The planted terms each reference predictor of make_info() knows; "audio" and "vision" are the terms a modality's
# frames carry on their own, "interaction" needs both modalities together.
REFERENCE_TERMS: dict[str, frozenset[str]] = {
    "ideal": frozenset({"text", "audio", "vision", "interaction"}),
    "no_interaction": frozenset({"text", "audio", "vision"}),
    "text_only": frozenset({"text"}),
    "audio_only": frozenset({"audio"}),
    "vision_only": frozenset({"vision"}),
    "text_audio": frozenset({"text", "audio"}),
    "text_vision": frozenset({"text", "vision"}),
    "audio_vision": frozenset({"audio", "vision", "interaction"}),
    "constant": frozenset(),
}


def reference_for(terms: frozenset[str]) -> str | None:
    """The reference predictor that knows exactly ``terms`` (None where make_info() has none)."""
    return next((name for name, known in REFERENCE_TERMS.items() if known == terms), None)


def make_info(size: str | SizeSpec = "small", seed: int = 0, terms: dict | None = None) -> dict:
    """The JSON-serialisable description of ``generate(size, seed)``'s data (computed from the latents
    only, so it is cheap for every size). ``terms``: a :func:`planted_terms` result to reuse."""
    spec, seed = _spec(size), _check_seed(seed)
    terms = terms if terms is not None else planted_terms(spec, seed)
    train, test = terms["train"], terms["test"]
    t, a, v, i = test["text_term"], test["audio_term"], test["vision_term"], test["interaction_term"]
    y = test["label"]
    # clip(sum of the terms the inputs determine): the rest of the label is symmetric about 0 given those
    # inputs, so this is the conditional median (MAE-optimal); for the clipped label it is close to, but
    # not exactly, the conditional mean E[label | inputs] (see the module docstring)
    predictors = {
        "ideal": (t + a + v + i, "the four planted terms without the label noise: the noise floor"),
        "no_interaction": (t + a + v, "text + audio + vision terms, without audio×vision"),
        "text_only": (t, "the text term"),
        "audio_only": (a, "the audio-only term"),
        "vision_only": (v, "the vision-only term"),
        "text_audio": (t + a, "text + audio terms"),
        "text_vision": (t + v, "text + vision terms"),
        "audio_vision": (a + v + i, "audio + vision + interaction terms (no text)"),
        "constant": (np.full_like(y, float(np.mean(train["label"]))),
                     "the train mean (Corr undefined, shown as 0)"),
    }
    reference = {}
    for name, (pred, note) in predictors.items():
        reference[name] = {**_metrics(pred, y), "note": note}

    variances = {k: float(np.var(train[f"{k}_term"])) for k in ("text", "audio", "vision", "interaction")}
    variances["noise"] = float(np.var(train["noise"]))
    total = float(np.var(train["unclipped"]))

    def label_stats(split: dict) -> dict:
        lab = split["label"]
        return {"mean": round(float(np.mean(lab)), 6), "std": round(float(np.std(lab)), 6),
                "clipped_fraction": round(float(np.mean(np.abs(split["unclipped"]) > LABEL_RANGE[1])), 6)}

    return {
        "kind": "synthetic",
        "generator": GENERATOR,
        "size": spec.name,
        "seed": seed,
        "splits": dict(spec.splits),
        "dims": {"audio": [spec.audio_len, spec.audio_dim], "vision": [spec.vision_len, spec.vision_dim]},
        "weights": {"text": W_TEXT, "audio": W_AUDIO, "vision": W_VISION, "interaction": W_AV},
        "noise_sigma": NOISE_SIGMA,
        "label_range": list(LABEL_RANGE),
        "formula": "label = clip(w_text*mean_polarity(raw_text) + w_audio*z_a + w_vision*z_v "
                   "+ w_interaction*u_a*u_v + N(0, noise_sigma^2), -3, 3); z_a,u_a,z_v,u_v iid N(0,1)",
        "lexicon_size": len(LEXICON),
        "lexicon": dict(LEXICON),
        "frame_sigma": FRAME_SIGMA,
        "nuisance_sigma": NUISANCE_SIGMA,
        "length_range_fraction": [LENGTH_MIN_FRACTION, 1.0],
        "structure": structure(seed, spec.audio_dim, spec.vision_dim),
        "term_variance": {"train": {k: round(x, 6) for k, x in variances.items()},
                          "train_unclipped_total": round(total, 6),
                          "text_expected": round(_TEXT_TERM_VAR, 6)},
        "label_stats": {name: label_stats(terms[name]) for name in SPLITS},
        "reference_split": "test",
        "reference": reference,
    }


def generate(size: str | SizeSpec = "small", seed: int = 0, *, chunk: int = 128,
             progress: Callable[[int], None] | None = None) -> tuple[dict, dict]:
    """Return ``(data, info)``: ``data`` = ``{"train": split, "valid": split, "test": split}`` in the MMSA
    layout (see the module docstring), ``info`` = :func:`make_info` (JSON-serialisable).

    Deterministic for ``(size, seed)``; ``size`` is a key of :data:`SIZES` or a :class:`SizeSpec`.
    ``progress(n)`` is called with each split's number of samples once it is generated.
    """
    spec, seed = _spec(size), _check_seed(seed)
    data = {}
    for name, split in iter_generate(spec, seed, chunk=chunk):
        data[name] = split
        if progress:
            progress(len(split["id"]))
    return data, make_info(spec, seed)
