"""Pretraining a small GPT-2 with the causal language-modelling objective: the demo backbone, or one of your own.

DMPF's premise is a *pretrained* frozen LM whose states already read the text; a random one reads nothing, so
the embedded default could not show it. ``dmpf pretrain-lm`` trains a small GPT-2 — its own byte-level BPE
tokenizer, then next-token prediction only, never a label — on generated reviews
(:mod:`dmpf_cli.data.corpus`, the synthetic dataset's words with realistic sentiment statistics) or on a
text corpus of yours, and saves an ordinary Hugging Face GPT-2 directory (config.json, model.safetensors,
tokenizer.json) that loads through the same offline path as gpt2-large: ``backbone.path=DIR``.

The demo backbone ``gpt2-demo`` is the one built on generated reviews: :func:`ensure_demo_lm` builds it once,
on first use (``dmpf train`` calls it), into ``$DMPF_MODEL_DIR/gpt2-demo`` with a progress bar, and rebuilds
it only when its recipe (:data:`DEMO_SIZES`, the corpus generator) changes — the recipe's fingerprint is in
the directory's ``dmpf.json`` with the held-out LM loss and the unigram baseline it is measured against.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from .. import __version__
from ..errors import DmpfError
from ..fileio import atomic_write_text, building, follow_umask, move_into_place
from ..progress import Progress
from .schedule import lr_factor

MANIFEST = "dmpf.json"
EOT = "<|endoftext|>"


@dataclass(frozen=True)
class LMRecipe:
    """Everything a pretrained LM depends on: its shapes, its tokenizer, its data and its optimisation."""

    n_layer: int = 4
    n_embd: int = 64
    n_head: int = 4
    n_positions: int = 64  # the demo's text_len (32) plus every fusion token fits
    vocab_size: int = 1024
    documents: int = 40_000  # generated reviews (ignored for a corpus of your own)
    heldout: float = 0.05  # the share of documents the reported LM loss is measured on
    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.1
    dropout: float = 0.0
    seed: int = 0

    def fingerprint(self, corpus: str) -> str:
        key = json.dumps({"recipe": asdict(self), "corpus": corpus}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:12]


def _demo_recipe() -> LMRecipe:
    """gpt2-demo's recipe, in the shapes its catalogue entry (dmpf_cli.model.backbones) declares."""
    from ..config import BackboneConfig
    from ..registry import get

    arch = get("backbone", "gpt2-demo").factory(BackboneConfig(name="gpt2-demo"))
    return LMRecipe(n_layer=arch.n_layer, n_embd=arch.n_embd, n_head=arch.n_head, n_positions=arch.n_positions,
                    vocab_size=arch.vocab_size)


# The demo backbone's recipes: "small" is gpt2-demo (the embedded default's LM, ~3 CPU minutes once), "tiny" a
# seconds-long build for tests and a first look (too short to learn much: it is not meant to read sentiment).
DEMO_SIZES: dict[str, Callable[[], LMRecipe]] = {
    "small": _demo_recipe,
    "tiny": lambda: LMRecipe(n_layer=2, n_embd=32, n_head=2, vocab_size=512, documents=2_000, steps=120,
                             batch_size=32),
}


class PretrainError(DmpfError):
    """A corpus or output that cannot be used; one line."""


# -- the tokenizer ----------------------------------------------------------------------------------

def train_tokenizer(texts: list[str], vocab_size: int, n_positions: int):
    """A byte-level BPE (GPT-2's scheme) learnt on ``texts``, as a transformers fast tokenizer whose only special
    token, ``<|endoftext|>``, ends documents and pads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=EOT, eos_token=EOT, unk_token=EOT, pad_token=EOT,
                                   model_max_length=n_positions, padding_side="right")


def encode_documents(tokenizer, texts: list[str], n_positions: int) -> torch.Tensor:
    """(N, n_positions) token ids: each document from position 0 — as DMPF feeds a text — ended by
    ``<|endoftext|>`` and padded with it; -100 marks the padding the loss skips (the first end token counts)."""
    eot = tokenizer.convert_tokens_to_ids(EOT)
    rows = torch.full((len(texts), n_positions), -100, dtype=torch.long)
    for i, ids in enumerate(tokenizer(texts, add_special_tokens=False)["input_ids"]):
        ids = (ids + [eot])[:n_positions]
        rows[i, : len(ids)] = torch.tensor(ids)
    return rows


# -- measuring --------------------------------------------------------------------------------------

def unigram_loss(train: torch.Tensor, heldout: torch.Tensor, vocab_size: int) -> float:
    """Cross-entropy (nats per token) on ``heldout`` of the add-one unigram distribution of ``train``: the
    baseline a language model must beat (it knows word frequencies, nothing of context)."""
    counts = torch.bincount(train[train >= 0], minlength=vocab_size).double() + 1.0
    log_p = (counts / counts.sum()).log()
    tokens = heldout[heldout >= 0]
    return float(-log_p[tokens].mean())


@torch.no_grad()
def lm_loss(model, rows: torch.Tensor, batch_size: int = 256) -> float:
    """Mean next-token cross-entropy (nats per token) of ``model`` on ``rows`` (-100 = not scored)."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        ids = batch.clamp(min=0)
        logits = model(input_ids=ids, attention_mask=(batch >= 0).long()).logits[:, :-1]  # (B, L-1, V)
        target = batch[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                 ignore_index=-100, reduction="sum")
        total += float(loss)
        count += int((target >= 0).sum())
    return total / max(count, 1)


# -- training ---------------------------------------------------------------------------------------

def pretrain(texts: list[str], recipe: LMRecipe, progress: Callable[[int, int, float], None] | None = None):
    """Train a tokenizer and a GPT-2 LM on ``texts`` with ``recipe``; returns (model, tokenizer, stats).

    ``progress(step, steps, loss)`` is called after every optimizer step. The documents are split once into
    train and held-out by the recipe's seed; ``stats`` holds the held-out LM loss, the unigram baseline on
    the same tokens, the token counts and the wall time.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    if len(texts) < 20:
        raise PretrainError(f"a language model needs more text than {len(texts)} document(s)")
    start_time = time.perf_counter()
    generator = torch.Generator().manual_seed(recipe.seed)
    order = torch.randperm(len(texts), generator=generator).tolist()
    n_heldout = max(1, int(len(texts) * recipe.heldout))
    heldout_texts = [texts[i] for i in order[:n_heldout]]
    train_texts = [texts[i] for i in order[n_heldout:]]

    tokenizer = train_tokenizer(train_texts, recipe.vocab_size, recipe.n_positions)
    train_rows = encode_documents(tokenizer, train_texts, recipe.n_positions)
    heldout_rows = encode_documents(tokenizer, heldout_texts, recipe.n_positions)

    with torch.random.fork_rng(devices=[]):  # the caller's RNG is left as it was
        torch.manual_seed(recipe.seed)
        eot = tokenizer.convert_tokens_to_ids(EOT)
        config = GPT2Config(
            vocab_size=len(tokenizer), n_positions=recipe.n_positions, n_embd=recipe.n_embd, n_layer=recipe.n_layer,
            n_head=recipe.n_head, resid_pdrop=recipe.dropout, embd_pdrop=recipe.dropout, attn_pdrop=recipe.dropout,
            bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        )
        model = GPT2LMHeadModel(config)
        groups: dict[bool, list] = {True: [], False: []}  # decay on weight matrices only, not on the embeddings
        for name, param in model.named_parameters():
            groups[param.ndim >= 2 and "wpe" not in name and "wte" not in name].append(param)
        optimizer = torch.optim.AdamW([{"params": groups[True], "weight_decay": recipe.weight_decay},
                                       {"params": groups[False], "weight_decay": 0.0}], lr=recipe.lr, betas=(0.9, 0.95))
        # linear warm-up, then cosine to a tenth: DMPF's own schedule
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, recipe.warmup, recipe.steps, "cosine", 0.1))
        model.train()
        for step in range(recipe.steps):
            picks = torch.randint(len(train_rows), (recipe.batch_size,), generator=generator)
            batch = train_rows[picks]
            longest = int((batch >= 0).sum(1).max())  # the batch's longest document: no work on padding
            batch = batch[:, :max(longest, 2)]
            out = model(input_ids=batch.clamp(min=0), attention_mask=(batch >= 0).long(), labels=batch)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            if progress:
                progress(step + 1, recipe.steps, float(out.loss.detach()))
    model.eval()
    stats = {
        "heldout_lm_loss": round(lm_loss(model, heldout_rows), 4),
        "heldout_unigram_loss": round(unigram_loss(train_rows, heldout_rows, len(tokenizer)), 4),
        "train_documents": len(train_texts), "heldout_documents": len(heldout_texts),
        "train_tokens": int((train_rows >= 0).sum()), "heldout_tokens": int((heldout_rows >= 0).sum()),
        "vocab_size": len(tokenizer), "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(time.perf_counter() - start_time, 1), "threads": torch.get_num_threads(),
    }
    return model, tokenizer, stats


def read_corpus(path: Path) -> list[str]:
    """A text file of your own: one document per line (blank lines skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise PretrainError(f"--corpus: {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PretrainError(f"--corpus: {path}: cannot read it as UTF-8 text ({exc})") from None
    texts = [line.strip() for line in lines if line.strip()]
    if len(texts) < 20:
        raise PretrainError(f"--corpus: {path}: {len(texts)} non-empty line(s); expected at least 20 documents, "
                            "one per line")
    return texts


@contextlib.contextmanager
def _filled_in_place(output: Path) -> Iterator[Path]:
    """A hidden sibling of ``output`` to fill; when the block ends it is renamed into place (so an interrupted write
    never leaves a directory that looks finished), and removed if the block fails."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        yield partial
        follow_umask(partial)  # model.safetensors is written 0600 (safetensors' save_file)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    move_into_place(partial, output)


def save(model, tokenizer, output: Path, manifest: dict[str, Any]) -> None:
    """Write an ordinary Hugging Face GPT-2 directory plus ``dmpf.json``, atomically (:func:`_filled_in_place`)."""
    from ..model.backbone_files import offline_and_quiet

    with _filled_in_place(output) as partial:
        with offline_and_quiet():  # no progress bars or load reports from transformers
            model.save_pretrained(partial)
            tokenizer.save_pretrained(partial)
        atomic_write_text(partial / MANIFEST, json.dumps(manifest, indent=1))  # last: a directory with it is complete


def read_lm_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(directory) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def build(recipe: LMRecipe, output: Path, *, corpus: Path | None = None, texts: list[str] | None = None,
          progress=None) -> dict[str, Any]:
    """Pretrain on generated reviews (or ``corpus``, whose ``texts`` may be read already) with ``recipe`` and save to
    ``output``; returns the manifest."""
    from ..data.corpus import GENERATOR, reviews

    if corpus is None:
        texts, source = reviews(recipe.documents, recipe.seed), GENERATOR
    else:
        texts = texts if texts is not None else read_corpus(corpus)
        digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
        source = f"corpus {Path(corpus).resolve()} ({digest})"
    from ..model.backbone_files import offline_and_quiet

    with offline_and_quiet():  # transformers' load reports and length warnings are not the user's business here
        model, tokenizer, stats = pretrain(texts, recipe, progress)
    manifest = {"kind": "dmpf pretrained language model", "dmpf_version": __version__, "corpus": source,
                "recipe": asdict(recipe), "fingerprint": recipe.fingerprint(source), **stats}
    save(model, tokenizer, output, manifest)
    return manifest


# The demo LM dmpf ships (package data): gpt2-demo as `dmpf pretrain-lm` builds it on 2 CPU threads (rebuild it with
# `dmpf pretrain-lm --output dmpf_cli/assets/gpt2-demo --overwrite --threads 2`). Installed into the model directory
# instead of pretraining when the current recipe built it; a test keeps the two in step.
SHIPPED = {"small": Path(__file__).resolve().parent.parent / "assets" / "gpt2-demo"}
SHIPPED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", MANIFEST)


def shipped_lm(size: str, recipe: LMRecipe) -> Path | None:
    """The directory of the demo LM dmpf ships for ``size``, if ``recipe`` on generated reviews built it."""
    from ..data.corpus import GENERATOR

    directory = SHIPPED.get(size)
    manifest = read_lm_manifest(directory) if directory is not None else None
    if manifest is None or manifest.get("fingerprint") != recipe.fingerprint(GENERATOR):
        return None
    return directory if all((directory / name).is_file() for name in SHIPPED_FILES) else None


def install_shipped(source: Path, output: Path) -> dict[str, Any]:
    """Copy the shipped LM in ``source`` to ``output``, atomically (:func:`_filled_in_place`); returns its manifest."""
    with _filled_in_place(output) as partial:
        partial.mkdir()
        for name in SHIPPED_FILES[:-1]:
            shutil.copyfile(source / name, partial / name)
        atomic_write_text(partial / MANIFEST, (source / MANIFEST).read_text(encoding="utf-8"))  # last: complete
    return read_lm_manifest(output) or {}


def ensure_demo_lm(console=None, size: str = "small") -> Path:
    """The demo backbone's directory, built first (once, with a progress bar) if it is missing or was built by
    another recipe."""
    output, manifest, up_to_date = make_lm(size=size, console=console)
    if console is not None and not up_to_date:
        console.print(f"demo language model ready: held-out LM loss {manifest['heldout_lm_loss']:.3f} nats/token "
                      f"against {manifest['heldout_unigram_loss']:.3f} for unigram frequencies "
                      f"({manifest['seconds']:.0f} s)")
    return output


def names_demo_lm(cfg) -> bool:
    """Whether ``cfg`` (a BackboneConfig) is the demo backbone in its own directory (no ``backbone.path``)."""
    from ..model.backbones import backbone_shapes

    return not cfg.path and backbone_shapes(cfg).built_by_dmpf


def ensure_backbone(cfg, console=None) -> None:
    """Build the demo backbone first when ``cfg`` (a BackboneConfig) names it and it is missing or stale; any other
    backbone is left to the loader (which never downloads)."""
    if names_demo_lm(cfg):
        ensure_demo_lm(console)


def make_lm(*, size: str = "small", corpus: Path | None = None, output: Path | None = None,
            changes: dict[str, Any] | None = None, overwrite: bool = False, console=None) -> tuple[Path, dict, bool]:
    """``dmpf pretrain-lm``: a language model of ``size`` (with ``changes`` to its recipe) on generated reviews or on
    ``corpus``, saved to ``output``. Returns (directory, its dmpf.json, whether it was already there).

    Without ``output`` (and without ``corpus``) the LM goes to the demo backbone's directory for its size, and is
    rebuilt only if its recipe changed. A directory that holds anything else is never replaced; another LM there is
    replaced only with ``overwrite``.
    """
    from dataclasses import replace

    from ..data.corpus import GENERATOR
    from ..model.backbones import demo_lm_dir

    if size not in DEMO_SIZES:
        raise PretrainError(f"--size: expected one of {', '.join(DEMO_SIZES)}, got '{size}'")
    if (corpus is not None or changes) and output is None:
        # the demo backbone's directory holds exactly its recipe: the default config's MM blocks depend on it
        raise PretrainError("--output: required with --corpus or a changed recipe (where to save the language model)")
    recipe = replace(DEMO_SIZES[size](), **(changes or {}))
    texts_source = GENERATOR if corpus is None else None
    output = Path(output).expanduser() if output is not None else demo_lm_dir(size)
    default_demo = corpus is None and output == demo_lm_dir(size) and not changes

    def current() -> tuple[dict[str, Any] | None, bool]:
        """The LM there (its dmpf.json), and whether this recipe built it already."""
        existing = read_lm_manifest(output) if output.is_dir() else None
        if output.exists() and not output.is_dir():
            raise PretrainError(f"--output: {output} is a file; choose a directory")
        if output.is_dir() and existing is None and any(output.iterdir()):
            raise PretrainError(f"--output: {output} exists and is not a dmpf language model (no {MANIFEST}); nothing "
                                "in it is replaced, even with --overwrite: choose another --output")
        return existing, bool(existing and texts_source
                              and existing.get("fingerprint") == recipe.fingerprint(texts_source))

    existing, fresh = current()
    if fresh:
        return output, existing, True
    # one process builds it; another one that wants it at the same time waits, then finds it built
    what = f"the {'demo ' if default_demo else ''}language model in {output}"
    with building(output, what, console.print if console is not None else None):
        existing, fresh = current()
        if fresh:
            return output, existing, True
        if default_demo and not overwrite and (source := shipped_lm(size, recipe)) is not None:
            manifest = install_shipped(source, output)
            if console is not None:
                console.print(f"demo language model: installed the one dmpf ships in {output} (built by "
                              f"`dmpf pretrain-lm`, recipe {manifest['fingerprint']}; held-out LM loss "
                              f"{manifest['heldout_lm_loss']:.3f} nats/token against "
                              f"{manifest['heldout_unigram_loss']:.3f} for unigram frequencies)")
            return output, manifest, True
        return _make_lm(recipe, output, corpus, existing, overwrite=overwrite, default_demo=default_demo,
                        console=console)


def _make_lm(recipe: LMRecipe, output: Path, corpus: Path | None, existing: dict[str, Any] | None, *, overwrite: bool,
             default_demo: bool, console) -> tuple[Path, dict, bool]:
    """Pretrain and save the LM to ``output`` (its lock held)."""
    if existing and not (overwrite or default_demo):
        raise PretrainError(f"--output: {output} holds a language model already; pass --overwrite to replace it")

    texts = read_corpus(corpus) if corpus is not None else None  # a bad corpus is refused before anything starts
    if console is not None:
        what = f"on {corpus}" if corpus is not None else "on generated reviews, never the labels"
        console.print(f"pretraining a language model in {output} ({recipe.steps} steps; causal language modelling "
                      f"{what})" + (" — the demo backbone, built once on first use" if default_demo else ""))
    with Progress(console) as bar:
        task = bar.add_task("pretraining", total=recipe.steps, unit="steps")

        def progress(step: int, steps: int, loss: float) -> None:
            bar.update(task, completed=step, info=f"LM loss {loss:.3f}")

        manifest = build(recipe, output, corpus=corpus, texts=texts, progress=progress)
    return output, manifest, False
