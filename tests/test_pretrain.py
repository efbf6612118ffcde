"""The demo language model: its generated corpus, `dmpf pretrain-lm`, and DMPF on the LM it saves."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from dmpf_cli.config import BackboneConfig
from dmpf_cli.data import corpus
from dmpf_cli.data.review_text import LEXICON, PHRASES
from dmpf_cli.data.synthetic import generate
from dmpf_cli.model.backbone_files import BackboneError
from dmpf_cli.model.backbone_loader import load_backbone
from dmpf_cli.model.backbones import backbone_shapes, demo_lm_dir
from dmpf_cli.recipes.pretrain_lm import DEMO_SIZES, encode_documents, train_tokenizer, unigram_loss

from conftest import TINY, dmpf, error_line


def _adjective_pairs(reviews: list[str]) -> dict[str, list[tuple[float, float]]]:
    """Polarities of consecutive adjectives within a sentence, by whether a contrast word stands between them."""
    pairs: dict[str, list[tuple[float, float]]] = {"agree": [], "contrast": []}
    for review in reviews:
        for sentence in review.split(" . "):
            words = sentence.split()
            found = [(i, LEXICON[w]) for i, w in enumerate(words) if w in LEXICON]
            for (i, a), (j, b) in zip(found, found[1:]):
                turned = any(w in corpus.CONTRASTS for w in words[i + 1:j])
                pairs["contrast" if turned else "agree"].append((a, b))
    return pairs


def test_the_corpus_carries_sentiment_the_way_reviews_do():
    reviews = corpus.reviews(3000, seed=0)
    assert reviews == corpus.reviews(3000, seed=0) and reviews != corpus.reviews(3000, seed=1)
    pairs = _adjective_pairs(reviews)
    agree, contrast = (np.array(pairs[k]) for k in ("agree", "contrast"))
    assert np.corrcoef(agree.T)[0, 1] > 0.7  # a review's clauses share an attitude
    assert np.corrcoef(contrast.T)[0, 1] < -0.7  # a contrast word flips it
    assert len(agree) > 2 * len(contrast)  # agreement is the rule


def test_the_corpus_speaks_the_datasets_words_and_not_its_sentences():
    reviews = corpus.reviews(3000, seed=0)
    words = {w for r in reviews for w in r.split()}
    data, _ = generate("tiny", 0)
    dataset_words = {w for split in data.values() for text in split["raw_text"] for w in text.split()}
    assert dataset_words <= words | {"."}
    assert set(LEXICON) <= words and all(p.split()[0] in words for phrases in PHRASES.values() for p in phrases)
    sentences = {s for r in reviews for s in r.split(" . ")}
    assert not sentences & {str(t) for split in data.values() for t in split["raw_text"]} - {""}


def test_unigram_baseline_and_documents_from_position_zero():
    texts = corpus.reviews(200, seed=3)
    tokenizer = train_tokenizer(texts, 300, 64)
    rows = encode_documents(tokenizer, texts, 64)
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    short = min(range(len(texts)), key=lambda i: len(ids[i]))
    assert rows[short, : len(ids[short])].tolist() == ids[short] and rows[short, len(ids[short])] == eot
    assert (rows[short, len(ids[short]) + 1:] == -100).all()  # padding the loss skips
    long = max(range(len(texts)), key=lambda i: len(ids[i]))
    assert len(ids[long]) > 64 and rows[long].tolist() == ids[long][:64]  # cut at the LM's positions
    uniform = unigram_loss(rows[:0], rows, len(tokenizer))  # no training counts: add-one = uniform
    assert uniform == pytest.approx(np.log(len(tokenizer)))
    assert unigram_loss(rows, rows, len(tokenizer)) < uniform


def test_the_demo_backbone_says_how_to_build_it_until_it_exists():
    with pytest.raises(BackboneError, match=r"demo language model is not built yet .*`dmpf pretrain-lm` builds it"):
        load_backbone(BackboneConfig(name="gpt2-demo"))
    arch = backbone_shapes(BackboneConfig(name="gpt2-demo"))
    assert arch.built_by_dmpf and arch.n_positions == 64 and arch.label == "pretrained by dmpf"
    assert DEMO_SIZES["small"]().n_embd == arch.n_embd  # the recipe builds the catalogue's shapes


def test_pretrain_lm_on_a_corpus_of_ones_own(tmp_path, invoke):
    text = tmp_path / "reviews.txt"
    text.write_text("\n\n".join(corpus.reviews(300, seed=5)) + "\n", encoding="utf-8")  # blank lines are skipped
    out = tmp_path / "my-lm"
    shape = ["--steps", "30", "--layers", "1", "--width", "16", "--heads", "2", "--vocab-size", "280"]
    result = invoke("pretrain-lm", "--corpus", text, "--output", out, *shape, "--format", "json")
    assert result.exit_code == 0, result.stderr
    made = json.loads(result.stdout)
    assert made["corpus"].startswith(f"corpus {text.resolve()} (") and made["train_documents"] + made["heldout_documents"] == 300
    assert (made["recipe"]["n_layer"], made["recipe"]["n_embd"], made["recipe"]["steps"]) == (1, 16, 30)
    lm = load_backbone(BackboneConfig(name="gpt2-demo", path=str(out)))
    assert lm.model.config.n_layer == 1 and lm.tokenizer("so overall it was great")["input_ids"]

    # refused in one line, before any directory is made
    missing = invoke("pretrain-lm", "--corpus", tmp_path / "nope.txt", "--output", tmp_path / "a")
    error_line(missing.exit_code, missing.stderr, "--corpus:", "nope.txt", "no such file")
    (tmp_path / "short.txt").write_text("one review\ntwo reviews\n", encoding="utf-8")
    short = invoke("pretrain-lm", "--corpus", tmp_path / "short.txt", "--output", tmp_path / "b")
    error_line(short.exit_code, short.stderr, "--corpus:", "2 non-empty line(s)", "at least 20 documents")
    nowhere = invoke("pretrain-lm", "--corpus", text)
    error_line(nowhere.exit_code, nowhere.stderr, "--output: required with --corpus")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and "pretraining" not in short.stdout


@pytest.mark.slow
def test_pretrain_lm_saves_a_hugging_face_gpt2_that_dmpf_loads_and_trains_on(tmp_path, invoke):
    out = tmp_path / "lm"
    result = dmpf("pretrain-lm", "--size", "tiny", "--output", out, "--format", "json")
    made = json.loads(result.stdout)
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json", "dmpf.json"}
    assert made["heldout_lm_loss"] < made["heldout_unigram_loss"]  # it learnt more than word frequencies
    assert made["recipe"]["steps"] == DEMO_SIZES["tiny"]().steps and not made["up_to_date"]
    again = json.loads(dmpf("pretrain-lm", "--size", "tiny", "--output", out, "--format", "json").stdout)
    assert again["up_to_date"] and again["fingerprint"] == made["fingerprint"]
    refused = invoke("pretrain-lm", "--size", "tiny", "--output", out, "--steps", "5")
    error_line(refused.exit_code, refused.stderr, "--output:", "pass --overwrite")

    from transformers import GPT2LMHeadModel

    assert isinstance(GPT2LMHeadModel.from_pretrained(out), GPT2LMHeadModel)  # an ordinary HF checkpoint
    lm = load_backbone(BackboneConfig(name="gpt2-demo", path=str(out)))
    assert lm.source == f"pretrained from {out}" and not any(p.requires_grad for p in lm.model.parameters())
    run = tmp_path / "run"
    tiny = [o for o in TINY if not o.startswith("backbone.")]
    dmpf("train", "--output", run, *tiny, "training.max_epochs=1", "backbone.name=gpt2-demo",
         f"backbone.path={out}", "data.text_len=20", "mm.layers=[0, 1]")  # the tiny recipe has 2 blocks
    status = json.loads((run / "run.json").read_text())
    assert status["backbone"] == f"pretrained from {out}" and status["status"] == "finished"


@pytest.mark.slow
def test_the_demo_backbone_is_built_once_on_first_use(tmp_path, monkeypatch):
    """The demo LM is pretrained on first use, once; a second use reuses it and a changed recipe rebuilds it
    (the tiny recipe stands in for the small one)."""
    monkeypatch.setenv("DMPF_MODEL_DIR", str(tmp_path / "models"))  # this test's own demo LM
    monkeypatch.setitem(DEMO_SIZES, "small", DEMO_SIZES["tiny"])  # the first-use path, with seconds of pretraining
    from dmpf_cli.recipes.pretrain_lm import ensure_demo_lm

    built = ensure_demo_lm()
    assert built == demo_lm_dir() and (built / "dmpf.json").is_file()
    stamp = (built / "model.safetensors").stat().st_mtime_ns
    assert ensure_demo_lm() == built and (built / "model.safetensors").stat().st_mtime_ns == stamp
    lm = load_backbone(BackboneConfig(name="gpt2-demo"))
    assert lm.source == f"pretrained by dmpf on generated reviews: {built}"
    assert torch.equal(lm.model.wte.weight, load_backbone(BackboneConfig(name="gpt2-demo")).model.wte.weight)
    first = json.loads((built / "dmpf.json").read_text())["fingerprint"]
    monkeypatch.setitem(DEMO_SIZES, "small", lambda: replace(DEMO_SIZES["tiny"](), steps=60))  # the recipe changed
    assert ensure_demo_lm() == built and (built / "model.safetensors").stat().st_mtime_ns != stamp
    assert json.loads((built / "dmpf.json").read_text())["fingerprint"] != first


def test_the_shipped_demo_lm_is_the_current_recipes_and_is_installed_instead_of_pretraining(tmp_path, monkeypatch):
    """dmpf ships gpt2-demo (package data): a first `dmpf train` installs it in seconds rather than pretraining for
    minutes. It must be what the current recipe builds (a recipe change without rebuilding it fails here), and it is
    installed whole, as an ordinary LM directory the loader reads."""
    from dmpf_cli.recipes import pretrain_lm

    recipe = DEMO_SIZES["small"]()
    shipped = pretrain_lm.shipped_lm("small", recipe)
    assert shipped is not None, "dmpf_cli/assets/gpt2-demo was built by another recipe: rebuild it (see SHIPPED)"
    assert pretrain_lm.shipped_lm("small", replace(recipe, steps=recipe.steps + 1)) is None
    monkeypatch.setenv("DMPF_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setattr(pretrain_lm, "pretrain", lambda *a, **k: pytest.fail("pretrained instead of installing"))
    lines = []
    built = pretrain_lm.ensure_demo_lm(console=type("C", (), {"print": lambda self, s: lines.append(s)})())
    assert built == demo_lm_dir() and "installed the one dmpf ships" in lines[0]
    for name in pretrain_lm.SHIPPED_FILES:
        assert (built / name).read_bytes() == (shipped / name).read_bytes(), name
    assert not list(built.parent.glob(".*partial*"))
    lm = load_backbone(BackboneConfig(name="gpt2-demo"))
    arch = backbone_shapes(BackboneConfig(name="gpt2-demo"))
    assert (lm.model.config.n_layer, lm.model.config.n_embd) == (arch.n_layer, arch.n_embd)
    stamp = (built / "model.safetensors").stat().st_mtime_ns
    assert pretrain_lm.ensure_demo_lm() == built and (built / "model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_a_recipe_the_shipped_lm_was_not_built_by_is_pretrained(tmp_path, monkeypatch):
    from dmpf_cli.recipes import pretrain_lm

    monkeypatch.setenv("DMPF_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setitem(DEMO_SIZES, "small", lambda: replace(DEMO_SIZES["tiny"](), n_layer=4))  # seconds to build
    built = pretrain_lm.ensure_demo_lm()
    manifest = json.loads((built / "dmpf.json").read_text())
    assert manifest["recipe"]["steps"] == DEMO_SIZES["tiny"]().steps  # pretrained here, not the shipped one
