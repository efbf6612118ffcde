"""Importing MMSA pickles (made here, in the real layout), the prepared format, and batching."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from dmpf_cli.data import mmsa
from dmpf_cli.data import prepared as prepared_format
from dmpf_cli.data.batches import SplitDataset, make_loader
from dmpf_cli.data.mmsa import DataError, UnsafePickleError
from dmpf_cli.data.prepared import open_prepared
from dmpf_cli.recipes import datasets as prep

from conftest import error_line, one_line

DIMS = {"mosei": (74, 35), "mosi": (5, 20), "sims": (33, 709)}
SIZES = {"train": 7, "valid": 3, "test": 4}


def mmsa_layout(dataset: str = "mosei", seed: int = 0, La: int = 12, Lv: int = 9) -> dict:
    """A small dict in exactly the MMSA processed layout (design.md §7)."""
    rng = np.random.default_rng(seed)
    Da, Dv = DIMS[dataset]
    bound = 1.0 if dataset == "sims" else 3.0
    data = {}
    for split, n in SIZES.items():
        a_len, v_len = rng.integers(1, La + 1, n), rng.integers(1, Lv + 1, n)
        audio = rng.normal(size=(n, La, Da)).astype(np.float32)
        vision = rng.normal(size=(n, Lv, Dv)).astype(np.float32)
        for i in range(n):
            audio[i, a_len[i]:] = 0
            vision[i, v_len[i]:] = 0
        data[split] = {
            "raw_text": np.array([f"{split} sample {i} was rather good" for i in range(n)], dtype=object),
            "audio": audio, "vision": vision,
            "audio_lengths": a_len, "vision_lengths": v_len.tolist(),  # MMSA mixes arrays and lists
            "regression_labels": rng.uniform(-bound, bound, n).astype(np.float32),
            "classification_labels": rng.integers(0, 3, n),
            "text_bert": rng.integers(0, 100, (n, 3, 5)),
            "id": np.array([f"{split}_{i:03d}" for i in range(n)], dtype=object),
        }
        if dataset == "sims":
            for key in mmsa.UNIMODAL:
                data[split][key] = rng.uniform(-1, 1, n).astype(np.float32)
    return data


def write_pickle(tmp_path: Path, data, name: str = "unaligned.pkl") -> Path:
    path = tmp_path / name
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return path


def run_prepare(source, output, dataset="mosei", **kw):
    kw.setdefault("overwrite", False)
    kw.setdefault("check_sha256", False)
    return prep.prepare_file(dataset, source, output, console=Console(quiet=True), **kw)


# -- round trips ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dataset", ["mosei", "mosi", "sims"])
def test_round_trip(tmp_path, dataset):
    data = mmsa_layout(dataset)
    source = write_pickle(tmp_path, data)
    result = run_prepare(source, tmp_path / "out", dataset)
    assert not result.skipped
    prepared = open_prepared(tmp_path / "out")
    assert prepared.dataset == dataset and prepared.dims == DIMS[dataset]
    manifest = prepared.manifest
    assert manifest["source"]["sha256"] == mmsa.sha256_file(source)
    assert manifest["source"]["size"] == source.stat().st_size
    for name, n in SIZES.items():
        split = prepared.split(name)
        original = data[name]
        assert len(split) == n == manifest["splits"][name]["samples"]
        assert isinstance(split.audio, np.memmap) and split.audio.dtype == np.float32
        np.testing.assert_array_equal(split.audio, original["audio"])
        np.testing.assert_array_equal(split.vision, original["vision"])
        np.testing.assert_array_equal(split.audio_lengths, original["audio_lengths"])
        np.testing.assert_array_equal(split.vision_lengths, original["vision_lengths"])
        np.testing.assert_array_equal(split.labels, original["regression_labels"])
        assert split.raw_text == list(original["raw_text"]) and split.ids == list(original["id"])
        if dataset == "sims":
            np.testing.assert_array_equal(split.unimodal["A"], original["regression_labels_A"])
        else:
            assert split.unimodal == {}
        stats = manifest["splits"][name]["labels"]
        assert stats["min"] == pytest.approx(float(original["regression_labels"].min()))


def test_nonfinite_features_are_zeroed_and_counted(tmp_path):
    data = mmsa_layout()
    data["train"]["audio"][0, 0, :5] = -np.inf
    data["train"]["audio"][2, 1, 3] = np.nan
    data["test"]["vision"][1, 0, 0] = np.inf
    run_prepare(write_pickle(tmp_path, data), tmp_path / "out")
    prepared = open_prepared(tmp_path / "out")
    train = prepared.split("train")
    assert np.isfinite(train.audio).all()
    assert (train.audio[0, 0, :5] == 0).all() and train.audio[2, 1, 3] == 0
    assert prepared.manifest["splits"]["train"]["replaced_nonfinite"] == {"audio": 6, "vision": 0}
    assert prepared.manifest["splits"]["test"]["replaced_nonfinite"] == {"audio": 0, "vision": 1}


def test_undecodable_and_empty_text_are_repaired_and_counted(tmp_path):
    data = mmsa_layout()
    data["train"]["raw_text"][0] = b"caf\xe9 \xff not utf-8"
    data["train"]["raw_text"][1] = ""
    data["train"]["raw_text"][2] = None
    data["train"]["raw_text"][3] = "d\udcffa"  # a lone surrogate
    run_prepare(write_pickle(tmp_path, data), tmp_path / "out")
    prepared = open_prepared(tmp_path / "out")
    texts = prepared.split("train").raw_text
    assert texts[0].startswith("caf\ufffd") and texts[1] == "" and texts[2] == ""
    texts[3].encode("utf-8")
    split = prepared.manifest["splits"]["train"]
    assert (split["text_undecodable"], split["text_empty"]) == (2, 2)


# -- refusals ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "mutate, fragments",
    [
        (lambda d: d["valid"].pop("vision"), ["valid", "missing key(s) vision"]),
        (lambda d: d.pop("test"), ["missing split(s) test"]),
        (lambda d: d["train"].update(audio=d["train"]["audio"][:, :, :70]), ["train.audio", "feature width 70", "expected 74"]),
        (lambda d: d["test"].update(vision=np.zeros((4, 9, 36), np.float32)), ["test.vision", "36", "expected 35"]),
        (lambda d: d["train"].update(id=d["train"]["id"][:-1]), ["train.id", "has 6 samples, expected 7"]),
        (lambda d: d["train"]["audio_lengths"].__setitem__(2, 13), ["train.audio_lengths", "outside 0..12", "index 2"]),
        (lambda d: d["valid"]["regression_labels"].__setitem__(1, 3.5), ["valid.regression_labels", "[-3, 3]", "index 1"]),
        (lambda d: d["valid"]["regression_labels"].__setitem__(0, np.nan), ["valid.regression_labels"]),
        (lambda d: d["train"]["id"].__setitem__(1, "train_000"), ["train.id", "unique"]),
    ],
)
def test_bad_layouts_are_refused_in_one_line(tmp_path, mutate, fragments):
    data = mmsa_layout()
    mutate(data)
    source = write_pickle(tmp_path, data)
    with pytest.raises(DataError) as info:
        run_prepare(source, tmp_path / "out")
    message = one_line(info)
    assert message.startswith(str(source))
    for fragment in fragments:
        assert fragment in message, message
    assert not (tmp_path / "out").exists()


def test_sims_needs_unimodal_labels(tmp_path):
    data = mmsa_layout("sims")
    del data["test"]["regression_labels_T"]
    with pytest.raises(DataError, match="test: missing key.*regression_labels_T"):
        run_prepare(write_pickle(tmp_path, data), tmp_path / "out", "sims")


def test_truncated_file(tmp_path):
    source = write_pickle(tmp_path, mmsa_layout())
    source.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(DataError, match="ends too early|not a readable pickle") as info:
        run_prepare(source, tmp_path / "out")
    one_line(info)


def test_not_a_pickle_and_missing_source(tmp_path):
    junk = tmp_path / "junk.pkl"
    junk.write_text("hello, I am text")
    with pytest.raises(DataError, match="not a readable pickle"):
        run_prepare(junk, tmp_path / "out")
    with pytest.raises(DataError, match="no such file"):
        run_prepare(tmp_path / "nope.pkl", tmp_path / "out")


class _Payload:
    """Unpickling this would create a file: the classic pickle attack."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (exec, (f"open({str(self.target)!r}, 'w').write('pwned')",))


class _OsPayload:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("payload", [_Payload, _OsPayload])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, payload):
    target = tmp_path / "created-by-pickle"
    data = mmsa_layout()
    data["train"]["extra"] = payload(target)
    source = write_pickle(tmp_path, data)
    with pytest.raises(UnsafePickleError) as info:
        run_prepare(source, tmp_path / "out")
    assert "refused to load" in one_line(info)
    assert not target.exists()
    assert not (tmp_path / "out").exists()


def test_interrupted_prepare_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    source = write_pickle(tmp_path, mmsa_layout())
    calls = {"n": 0}
    real = prepared_format.clean_features

    def interrupt(block):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(block)

    monkeypatch.setattr("dmpf_cli.data.prepared.clean_features", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_prepare(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.partial-*"))
    # a crashed run (no cleanup at all) leaves a hidden partial directory: never mistaken, removed next time
    stale = tmp_path / ".out.partial-999999999"
    stale.mkdir()
    with pytest.raises(DataError, match="no manifest|not a prepared dataset"):
        open_prepared(stale)
    monkeypatch.setattr("dmpf_cli.data.prepared.clean_features", real)
    run_prepare(source, tmp_path / "out")
    assert open_prepared(tmp_path / "out").split("train").audio.shape[0] == 7
    assert not stale.exists()


def test_rerun_is_a_fast_noop_and_changes_are_picked_up(tmp_path, monkeypatch):
    data = mmsa_layout()
    source = write_pickle(tmp_path, data)
    run_prepare(source, tmp_path / "out")
    monkeypatch.setattr(prep, "load_pickle", lambda *a, **k: pytest.fail("the source was read again"))
    assert run_prepare(source, tmp_path / "out").skipped
    monkeypatch.undo()
    data["train"]["regression_labels"][0] = 2.5
    write_pickle(tmp_path, data)  # same path, new content and mtime
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    result = run_prepare(source, tmp_path / "out")
    assert not result.skipped
    assert open_prepared(tmp_path / "out").split("train").labels[0] == pytest.approx(2.5)


def test_never_overwrites_another_dataset_without_permission(tmp_path):
    run_prepare(write_pickle(tmp_path, mmsa_layout(), "a.pkl"), tmp_path / "out")
    other = write_pickle(tmp_path, mmsa_layout(seed=1), "b.pkl")
    with pytest.raises(DataError, match="already holds a prepared dataset; pass --overwrite"):
        run_prepare(other, tmp_path / "out")
    assert run_prepare(other, tmp_path / "out", overwrite=True).manifest["source"]["path"] == str(other.resolve())


def test_never_replaces_what_is_not_a_prepared_dataset(invoke, tmp_path):
    """--overwrite replaces a prepared dataset only: a directory of other files, or a file, is refused
    before any work, and nothing in it is touched."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("mine")
    (tmp_path / "afile.txt").write_text("mine too")
    source = write_pickle(tmp_path, mmsa_layout())
    for output, fragment in [(tmp_path / "notes", "exists and is not a prepared dmpf dataset (no manifest.json)"),
                             (tmp_path / "afile.txt", "is a file, not a directory")]:
        for args in (["--dataset", "mosei", "--source", source], ["--dataset", "synthetic", "--size", "tiny"]):
            result = invoke("prepare", *args, "--output", output, "--overwrite")
            error_line(result.exit_code, result.stderr, f"{output}: {fragment}")
    assert (tmp_path / "notes" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["notes.txt"]
    assert (tmp_path / "afile.txt").read_text() == "mine too"
    (tmp_path / "empty").mkdir()  # an empty directory is as good as none
    assert run_prepare(source, tmp_path / "empty").manifest["dataset"] == "mosei"


def test_published_hash_check(tmp_path):
    result = run_prepare(write_pickle(tmp_path, mmsa_layout()), tmp_path / "out", check_sha256=True)
    assert result.published_match is False  # our file is not MMSA's


def test_open_prepared_errors(tmp_path):
    with pytest.raises(DataError, match="no prepared dataset here"):
        open_prepared(tmp_path / "missing")
    run_prepare(write_pickle(tmp_path, mmsa_layout()), tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    manifest["format_version"] = 99
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="format version 99"):
        open_prepared(tmp_path / "out")


# -- CLI -----------------------------------------------------------------------------------------

def test_cli_prepare_and_info(invoke, tmp_path):
    source = write_pickle(tmp_path, mmsa_layout())
    result = invoke("prepare", "--dataset", "mosei", "--source", source, "--output", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert "prepared" in result.stdout and "train" in result.stdout
    again = invoke("prepare", "--dataset", "mosei", "--source", source, "--output", tmp_path / "out")
    assert again.exit_code == 0 and "up to date" in again.stdout
    info = invoke("prepare", "--info", tmp_path / "out", "--format", "json")
    assert info.exit_code == 0 and json.loads(info.stdout)["splits"]["valid"]["samples"] == 3
    table = invoke("prepare", "--info", tmp_path / "out")
    assert table.exit_code == 0 and "74" in table.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--dataset", "mosei"], "--source: required"),
        (["--dataset", "mosei", "--source", "/nonexistent.pkl"], "no such file"),
        (["--dataset", "imdb", "--source", "/nonexistent.pkl"], "--dataset"),
        ([], "--dataset: required"),
        (["--info", "/nonexistent-dir"], "no prepared dataset here"),
    ],
)
def test_cli_prepare_bad_input(invoke, args, fragment):
    result = invoke("prepare", *args)
    error_line(result.exit_code, result.stderr, fragment)


def test_cli_refuses_malicious_pickle(invoke, tmp_path):
    target = tmp_path / "owned"
    data = mmsa_layout()
    data["extra"] = _Payload(target)
    source = write_pickle(tmp_path, data)
    result = invoke("prepare", "--dataset", "mosei", "--source", source, "--output", tmp_path / "out")
    assert result.exit_code == 2 and "refused to load builtins.exec" in result.stderr
    assert not target.exists()


# -- batching ------------------------------------------------------------------------------------

@pytest.fixture
def prepared_split(tmp_path):
    run_prepare(write_pickle(tmp_path, mmsa_layout()), tmp_path / "out")
    return open_prepared(tmp_path / "out").split("train")


@pytest.fixture(scope="module")
def tokenizer():
    from dmpf_cli.model.tokenizer import offline_gpt2_tokenizer

    return offline_gpt2_tokenizer()


def test_batches(prepared_split, tokenizer):
    dataset = SplitDataset(prepared_split, tokenizer, text_len=8)
    loader = make_loader(dataset, batch_size=3, shuffle=True, seed=5)
    batches = list(loader)
    assert [len(b["index"]) for b in batches] == [3, 3, 3] and len(loader) == 3  # static shapes
    assert [float(b["weight"].sum()) for b in batches] == [3, 3, 1]  # the last batch: one sample, two fillers
    seen = torch.cat([b["index"][b["weight"] > 0] for b in batches]).tolist()
    assert sorted(seen) == list(range(7))  # every sample once, none dropped
    b = batches[0]
    assert b["text_ids"].shape == (3, 8) and b["text_real"].dtype == torch.bool
    assert b["audio"].shape == (3, 12, 74) and b["vision"].shape == (3, 9, 35)
    i = int(b["index"][0])
    np.testing.assert_array_equal(b["audio"][0].numpy(), prepared_split.audio[i])
    assert float(b["labels"][0]) == pytest.approx(float(prepared_split.labels[i]))
    assert int(b["audio_lengths"][0]) == int(prepared_split.audio_lengths[i])


def test_batches_are_deterministic_per_seed_and_epoch(prepared_split, tokenizer):
    dataset = SplitDataset(prepared_split, tokenizer, text_len=8)

    def order(seed, epoch, workers=0):
        loader = make_loader(dataset, batch_size=2, shuffle=True, seed=seed, num_workers=workers)
        loader.batch_sampler.set_epoch(epoch) if loader.batch_sampler else loader.sampler.set_epoch(epoch)
        return [b["index"].tolist() for b in loader]

    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1)  # another epoch, another order
    assert order(1, 0) != order(2, 0)  # another seed, another order
    assert order(3, 2) == order(3, 2, workers=2)
    plain = make_loader(dataset, batch_size=2, shuffle=False)
    assert [b["index"].tolist() for b in plain] == [[0, 1], [2, 3], [4, 5], [0, 6]]
    assert [b["weight"].tolist() for b in plain][-1] == [0.0, 1.0] and len(plain) == 4
    big = make_loader(dataset, batch_size=16, shuffle=False)  # fillers cycle when the split is small
    (only,) = list(big)
    assert len(only["index"]) == 16 and float(only["weight"].sum()) == 7


def test_tokens_are_cached_beside_the_prepared_split(prepared_split, tokenizer, monkeypatch):
    first = SplitDataset(prepared_split, tokenizer, text_len=8)
    cache = list((prepared_split.folder.parent / "tokens").glob("*-T8/train.npz"))
    assert len(cache) == 1
    monkeypatch.setattr("dmpf_cli.data.batches.tokenize", lambda *a, **k: pytest.fail("tokenised again"))
    second = SplitDataset(prepared_split, tokenizer, text_len=8)
    assert torch.equal(first.text_ids, second.text_ids) and torch.equal(first.text_real, second.text_real)
    monkeypatch.undo()
    other_length = SplitDataset(prepared_split, tokenizer, text_len=6)
    assert other_length.text_ids.shape == (7, 6)
    assert len(list((prepared_split.folder.parent / "tokens").glob("*/train.npz"))) == 2


@pytest.mark.slow  # pretrains a tiny LM: seconds
def test_prepare_stores_the_presets_tokens_and_runs_reuse_them(invoke, tmp_path, monkeypatch):
    from dmpf_cli.config import load_config
    from dmpf_cli.model.backbones import demo_lm_dir
    from dmpf_cli.model.tokenizer import load_tokenizer
    from dmpf_cli.recipes.pretrain_lm import make_lm

    monkeypatch.setenv("DMPF_MODEL_DIR", str(tmp_path / "models"))  # this test's own demo LM
    # the preset's backbone, gpt2-demo, in seconds instead of minutes (4 blocks, as the default's MM layers need)
    make_lm(size="tiny", output=demo_lm_dir(), changes={"n_layer": 4})
    out = tmp_path / "synthetic"
    result = invoke("prepare", "--dataset", "synthetic", "--size", "tiny", "--output", out, "--format", "json")
    assert result.exit_code == 0, result.stderr
    tokens = json.loads(result.stdout)["tokens"]
    text_len = load_config().data.text_len
    assert tokens["stored"] and tokens["config"] == "preset default" and tokens["text_len"] == text_len
    assert sorted(p.name for p in Path(tokens["directory"]).iterdir()) == ["test.npz", "train.npz", "valid.npz"]
    # a training run with the default config reads them: tokenising again would fail here
    monkeypatch.setattr("dmpf_cli.data.batches.tokenize", lambda *a, **k: pytest.fail("tokenised again"))
    dataset = SplitDataset(open_prepared(out).split("valid"), load_tokenizer(load_config().backbone), text_len)
    assert dataset.text_ids.shape == (len(dataset), text_len) and bool(dataset.text_real[:, 0].all())


def test_prepare_tokenises_for_a_given_config_or_says_why_not(invoke, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))  # gpt2-large is not on this machine
    source = write_pickle(tmp_path, mmsa_layout())
    result = invoke("prepare", "--dataset", "mosei", "--source", source, "--output", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert "text not tokenised for gpt2-large" in " ".join(result.stdout.split())
    assert not (tmp_path / "out" / "tokens").exists()

    config = tmp_path / "small.yaml"
    config.write_text("data: {dataset: mosei, text_len: 8}\nbackbone: {name: gpt2-random}\nmm: {layers: [1]}\n")
    again = invoke("prepare", "--dataset", "mosei", "--source", source, "--output", tmp_path / "out",
                   "--config", config, "--format", "json")
    assert again.exit_code == 0, again.stderr
    reply = json.loads(again.stdout)
    assert reply["skipped"] and reply["tokens"]["stored"] and reply["tokens"]["text_len"] == 8
    with np.load(Path(reply["tokens"]["directory"]) / "train.npz") as stored:
        assert stored["ids"].shape == (7, 8)

    bad = invoke("prepare", "--dataset", "mosei", "--source", source, "--output", tmp_path / "out",
                 "--config", tmp_path / "missing.yaml")
    error_line(bad.exit_code, bad.stderr, "missing.yaml")


def test_synthetic_prepare_never_replaces_another_dataset_silently(invoke, tmp_path):
    out = tmp_path / "syn"
    assert invoke("prepare", "--dataset", "synthetic", "--size", "tiny", "--seed", "5", "--output", out).exit_code == 0
    refused = invoke("prepare", "--dataset", "synthetic", "--size", "tiny", "--seed", "0", "--output", out)
    error_line(refused.exit_code, refused.stderr, "--output", "seed 5", "--overwrite")
    assert open_prepared(out).manifest["synthetic"]["seed"] == 5
    replaced = invoke("prepare", "--dataset", "synthetic", "--size", "tiny", "--seed", "0", "--output", out,
                      "--overwrite")
    assert replaced.exit_code == 0 and open_prepared(out).manifest["synthetic"]["seed"] == 0
    bad_seed = invoke("prepare", "--dataset", "synthetic", "--seed", "-1", "--output", out)
    error_line(bad_seed.exit_code, bad_seed.stderr, "--seed")


def test_a_killed_synthetic_prepare_leaves_no_source_behind(invoke, tmp_path):
    dead = tmp_path / ".syn.source-999999999.pkl"  # a pid that cannot be alive
    dead.write_bytes(b"x" * 1000)
    result = invoke("prepare", "--dataset", "synthetic", "--size", "tiny", "--output", tmp_path / "syn")
    assert result.exit_code == 0, result.stderr
    # only the lock stays beside it (dmpf_cli.fileio: removing it would let two processes lock two files)
    assert not dead.exists() and [p.name for p in tmp_path.glob(".syn.*")] == [".syn.lock"]


def test_the_mosi_preset_trains_on_a_prepared_mosi_file(invoke, tmp_path):
    """`dmpf prepare --dataset mosi` then `dmpf train --dataset mosi` (a random tiny GPT-2 for the gpt2-medium)."""
    source = write_pickle(tmp_path, mmsa_layout("mosi"), "unaligned_50.pkl")
    prepared = invoke("prepare", "--dataset", "mosi", "--source", source, "--output", tmp_path / "mosi")
    assert prepared.exit_code == 0, prepared.stderr
    run = tmp_path / "run"
    result = invoke("train", "--dataset", "mosi", "--output", run, f"data.path={tmp_path / 'mosi'}",
                    "backbone.name=gpt2-tiny-random", "mm.layers=[1, 3]", "training.max_epochs=1",
                    "training.batch_size=4", "training.grad_accum=1", "training.seeds=[1111]")
    assert result.exit_code == 0, result.stderr
    results = json.loads((run / "results.json").read_text())
    assert results["dataset"] == "mosi" and {"MAE", "Mult_acc_7", "Non0_acc_2"} <= set(results["test"])
