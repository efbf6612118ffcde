"""MMSA's aligned files (every stream at the text's length) and the CH-SIMS v2 row (issue 25, point 4)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from test_data import SIZES, mmsa_layout, run_prepare, write_pickle

from dmpf_cli.data import mmsa
from dmpf_cli.data.mmsa import DataError
from dmpf_cli.data.prepared import open_prepared
from dmpf_cli.recipes import datasets as prep
from dmpf_cli.streams import DATASETS, PublishedFile

from conftest import error_line, one_line

L = 6  # the text's padded length in these small files (MMSA's aligned_50.pkl: 50)


def aligned_layout(dataset: str = "mosi", seed: int = 0, *, text: str | None = "text_bert", lengths: str = "absent",
                   ) -> tuple[dict, dict[str, np.ndarray]]:
    """An MMSA-layout dict with every stream at the text's length L, zero after each sample's words; and those
    word counts per split. ``text``: which text array gives L ("text", "text_bert" or None); ``lengths``: the
    ``*_lengths`` keys "absent" or "full" (all L)."""
    data = mmsa_layout(dataset, seed, La=L, Lv=L)
    rng = np.random.default_rng(seed + 1)
    words = {}
    for name, split in data.items():
        n = SIZES[name]
        w = rng.integers(1, L + 1, n)
        w[0] = 0  # no words: no real frames
        w[-1] = L  # every step real
        for key in ("audio", "vision"):  # no zero frames before the words' end (mmsa_layout pads at its lengths)
            split[key] = rng.normal(size=split[key].shape).astype(np.float32)
        for i in range(n):
            split["audio"][i, w[i]:] = 0
            split["vision"][i, w[i]:] = 0
        if n > 2 and w[1] > 0:  # the last word's audio is all zero: the vision frame still makes it real
            split["audio"][1, w[1] - 1] = 0
        words[name] = w
        del split["text_bert"]
        if text == "text_bert":
            split["text_bert"] = rng.integers(0, 100, (n, 3, L))
        elif text == "text":
            split["text"] = rng.normal(size=(n, L, 4)).astype(np.float32)
        for key in ("audio_lengths", "vision_lengths"):
            if lengths == "absent":
                del split[key]
            else:
                split[key] = np.full(n, L)
    return data, words


# -- importing aligned files -----------------------------------------------------------------------

@pytest.mark.parametrize("text, lengths", [("text_bert", "absent"), ("text", "absent"), ("text_bert", "full")])
def test_an_aligned_file_is_imported_with_its_lengths_read_from_the_frames(tmp_path, text, lengths):
    data, words = aligned_layout(text=text, lengths=lengths)
    run_prepare(write_pickle(tmp_path, data, "aligned_50.pkl"), tmp_path / "out", "mosi")
    prepared = open_prepared(tmp_path / "out")
    manifest = prepared.manifest
    assert manifest["aligned"] is True and "published_as" not in manifest["source"]  # not MMSA's own file
    assert manifest["padded_length"] == {"audio": L, "vision": L}
    for name in SIZES:
        split = prepared.split(name)
        np.testing.assert_array_equal(split.audio, data[name]["audio"])
        np.testing.assert_array_equal(split.audio_lengths, words[name])  # both streams: the words' count
        np.testing.assert_array_equal(split.vision_lengths, words[name])
        assert split.audio_lengths[0] == 0 and split.audio_lengths[-1] == L


def test_an_unaligned_file_is_recorded_as_such(tmp_path):
    run_prepare(write_pickle(tmp_path, mmsa_layout("mosi")), tmp_path / "out", "mosi")
    manifest = open_prepared(tmp_path / "out").manifest
    assert manifest["aligned"] is False and "published_as" not in manifest["source"]


def test_nonfinite_frames_are_real_not_padding():
    frames = np.zeros((3, 4, 2), dtype=np.float32)
    frames[0, 1, 0] = -np.inf  # MOSEI's COVAREP holds −inf in real frames
    frames[1, 3, 1] = np.nan
    np.testing.assert_array_equal(mmsa.aligned_lengths([frames], 3, chunk=2), [2, 4, 0])


@pytest.mark.parametrize("mutate, fragments", [
    (lambda d: d["valid"].__setitem__("vision", d["valid"]["vision"][:, :L - 1]),
     ["valid.vision", f"padded to {L - 1} frames, expected {L}", "aligned"]),
    (lambda d: d["test"].__setitem__("text_bert", d["test"]["text_bert"][:, :, :L - 2]),
     ["test.audio", f"padded to {L} frames, expected {L - 2}"]),
    (lambda d: d["valid"]["audio"].__setitem__((0, 0, 0), 1.0) or d["valid"].__setitem__(
        "audio", d["valid"]["audio"][:, :, :3]), ["valid.audio", "feature width 3, expected 5 for mosi"]),
])
def test_a_malformed_aligned_file_is_refused_in_one_line(tmp_path, mutate, fragments):
    data, _ = aligned_layout()
    mutate(data)
    source = write_pickle(tmp_path, data)
    with pytest.raises(DataError) as info:
        run_prepare(source, tmp_path / "out", "mosi")
    message = one_line(info)
    assert message.startswith(str(source))
    for fragment in fragments:
        assert fragment in message, message
    assert not (tmp_path / "out").exists()


def test_without_lengths_or_a_text_to_align_to_the_lengths_are_missing(tmp_path):
    """Nothing says the streams are aligned: the unaligned layout's error, as before."""
    data, _ = aligned_layout(text=None)
    with pytest.raises(DataError, match="train: missing key.*audio_lengths, vision_lengths"):
        run_prepare(write_pickle(tmp_path, data), tmp_path / "out", "mosi")


def test_lengths_that_are_not_full_mean_an_unaligned_file(tmp_path):
    data, words = aligned_layout(lengths="full")
    for split, w in zip(data.values(), words.values()):
        split["audio_lengths"] = split["vision_lengths"] = w  # the file's own lengths: read as they are
    run_prepare(write_pickle(tmp_path, data), tmp_path / "out", "mosi")
    assert open_prepared(tmp_path / "out").manifest["aligned"] is False


def test_a_published_aligned_hash_decides_and_is_recorded(tmp_path, monkeypatch):
    """MMSA's own aligned file is aligned by its hash, whatever its layout shows (here: no text, no lengths)."""
    data, words = aligned_layout(text=None)
    source = write_pickle(tmp_path, data, "aligned_50.pkl")
    published = PublishedFile("MOSI/Processed/aligned_50.pkl", mmsa.sha256_file(source), aligned=True)
    monkeypatch.setitem(DATASETS, "mosi", dataclasses.replace(DATASETS["mosi"],
                                                              files=(DATASETS["mosi"].files[0], published)))
    result = run_prepare(source, tmp_path / "out", "mosi", check_sha256=True)
    assert result.manifest["aligned"] is True
    assert result.manifest["source"]["published_as"] == "MOSI/Processed/aligned_50.pkl"
    assert (result.published_match, result.compared_with) == (True, published)
    np.testing.assert_array_equal(open_prepared(tmp_path / "out").split("valid").vision_lengths, words["valid"])


# -- --sha256: the published file of the source's kind ---------------------------------------------

def _manifest(sha256: str, aligned: bool) -> dict:
    return {"source": {"sha256": sha256}, "aligned": aligned}


def test_the_published_aligned_and_unaligned_hashes_are_mmsas():
    """As MMSA's README lists them ("SHA-256 for feature files")."""
    files = {f.path: f for d in DATASETS.values() for f in d.files}
    assert files["MOSI/Processed/aligned_50.pkl"].sha256.startswith("d3994fd25681") and files[
        "MOSI/Processed/aligned_50.pkl"].aligned
    assert files["MOSEI/Processed/aligned_50.pkl"].sha256.startswith("45eccfb748a8")
    assert not files["MOSEI/Processed/unaligned_50.pkl"].aligned
    assert [f.path for f in DATASETS["sims"].files] == ["SIMS/Processed/unaligned_39.pkl"]  # no aligned SIMS file
    assert DATASETS["mosei"].file == "unaligned_50.pkl" and DATASETS["mosei"].published_sha256.startswith("ad8b23d5")


@pytest.mark.parametrize("dataset", ["mosi", "mosei"])
def test_sha256_is_compared_with_the_published_file_of_its_kind(dataset):
    unaligned, aligned = DATASETS[dataset].files
    compare = prep.compare_published
    assert compare(dataset, _manifest(aligned.sha256, True)) == (aligned, True)
    assert compare(dataset, _manifest(unaligned.sha256, False)) == (unaligned, True)
    assert compare(dataset, _manifest("0" * 64, True)) == (aligned, False)  # an aligned file: the aligned hash
    assert compare(dataset, _manifest("0" * 64, False)) == (unaligned, False)
    # a published file is that file, whatever its layout suggested
    assert compare(dataset, _manifest(aligned.sha256, False)) == (aligned, True)


def test_sha256_where_nothing_of_that_kind_is_published():
    assert prep.compare_published("sims", _manifest("0" * 64, True)) == (None, None)  # MMSA has no aligned SIMS
    simsv2 = DATASETS["simsv2"].files[0]
    assert prep.compare_published("simsv2", _manifest("0" * 64, False)) == (simsv2, None)  # no hash published


# -- the CLI -----------------------------------------------------------------------------------------

def test_cli_prepares_an_aligned_file_and_says_so(invoke, tmp_path):
    data, _ = aligned_layout()
    source = write_pickle(tmp_path, data, "aligned_50.pkl")
    result = invoke("prepare", "--dataset", "mosi", "--source", source, "--output", tmp_path / "out", "--sha256")
    assert result.exit_code == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "aligned: every stream at the text's length" in out
    assert "differs from the hash MMSA publishes for its mosi file (MOSI/Processed/aligned_50.pkl)" in out
    info = invoke("prepare", "--info", tmp_path / "out")
    assert info.exit_code == 0 and "aligned: every stream" in " ".join(info.stdout.split())
    assert json.loads(invoke("prepare", "--info", tmp_path / "out", "--format", "json").stdout)["aligned"] is True
    again = invoke("prepare", "--dataset", "mosi", "--source", source, "--output", tmp_path / "out", "--sha256",
                   "--format", "json")
    record = json.loads(again.stdout)
    assert record["published_sha256_match"] is False
    assert record["published_sha256_of"] == "MOSI/Processed/aligned_50.pkl"


def test_cli_refuses_a_malformed_aligned_file_in_one_line(invoke, tmp_path):
    data, _ = aligned_layout()
    data["train"]["vision"] = data["train"]["vision"][:, :L - 1]  # the train split no longer looks aligned
    source = write_pickle(tmp_path, data)
    result = invoke("prepare", "--dataset", "mosi", "--source", source, "--output", tmp_path / "out")
    error_line(result.exit_code, result.stderr, str(source), "train: missing key(s) audio_lengths, vision_lengths")
    data, _ = aligned_layout()
    data["test"]["audio"] = data["test"]["audio"][:, :L - 1]
    source = write_pickle(tmp_path, data)
    result = invoke("prepare", "--dataset", "mosi", "--source", source, "--output", tmp_path / "out")
    error_line(result.exit_code, result.stderr, str(source), "test.audio", f"expected {L}")


# -- CH-SIMS v2 ------------------------------------------------------------------------------------

def simsv2_layout(seed: int = 0, width: tuple[int, int] = (25, 177)) -> dict:
    """A small CH-SIMS v2-shaped file: SIMS's layout at CH-SIMS v2's feature widths."""
    data = mmsa_layout("sims", seed)
    rng = np.random.default_rng(seed)
    for split in data.values():
        for key, d in zip(("audio", "vision"), width):
            n, length, _ = split[key].shape
            frames = rng.normal(size=(n, length, d)).astype(np.float32)
            frames[split[key][:, :, 0] == 0] = 0  # the same padding
            split[key] = frames
    return data


def test_simsv2_is_a_dataset_with_its_publishers_facts():
    spec = DATASETS["simsv2"]
    assert (spec.feature_dims, spec.padded_lengths, spec.label_range, spec.metrics) == ((25, 177), (925, 232),
                                                                                       (-1.0, 1.0), "sims")
    assert (spec.file, spec.published_sha256, spec.preset) == ("ch-simsv2s.pkl", None, "simsv2")
    assert spec.where_to_get() == ("CH-SIMS v2's ch-simsv2s.pkl (published with CH-SIMS v2, "
                                   "https://github.com/thuiar/ch-sims-v2, as ch-simsv2s.pkl; no sha256 published)")


def test_simsv2_prepares_and_checks_its_widths(tmp_path):
    data = simsv2_layout()
    run_prepare(write_pickle(tmp_path, data, "ch-simsv2s.pkl"), tmp_path / "out", "simsv2")
    prepared = open_prepared(tmp_path / "out")
    assert prepared.dataset == "simsv2" and prepared.dims == (25, 177) and prepared.manifest["aligned"] is False
    np.testing.assert_array_equal(prepared.split("test").vision, data["test"]["vision"])
    with pytest.raises(DataError) as info:  # CH-SIMS's widths are not CH-SIMS v2's
        run_prepare(write_pickle(tmp_path, mmsa_layout("sims"), "sims.pkl"), tmp_path / "sims", "simsv2")
    assert "train.audio: feature width 33, expected 25 for simsv2" in one_line(info)
    bad = simsv2_layout()
    bad["valid"]["regression_labels"][0] = 1.5
    with pytest.raises(DataError, match=r"valid.regression_labels: 1 label\(s\) outside \[-1, 1\]"):
        run_prepare(write_pickle(tmp_path, bad, "bad.pkl"), tmp_path / "bad", "simsv2")


def test_cli_simsv2_sha256_says_none_is_published(invoke, tmp_path):
    source = write_pickle(tmp_path, simsv2_layout(), "ch-simsv2s.pkl")
    result = invoke("prepare", "--dataset", "simsv2", "--source", source, "--output", tmp_path / "out", "--sha256")
    assert result.exit_code == 0, result.stderr
    assert "CH-SIMS v2 publishes no sha256 for ch-simsv2s.pkl" in " ".join(result.stdout.split())
    assert "simsv2" in invoke("prepare", "--help").stdout


def test_the_simsv2_preset():
    from dmpf_cli.config import load_config

    cfg = load_config(dataset="simsv2")
    assert (cfg.data.dataset, cfg.backbone.name, cfg.data.text_len) == ("simsv2", "gpt2-chinese", 50)
    assert not cfg.loss.unimodal_labels
