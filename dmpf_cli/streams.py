"""The streams DMPF fuses and the datasets it reads, each named once: every other module derives from here.

Inside the frozen LM the sequence is ``text | A | V | AV``: the text, then one group of learnable fusion
tokens per *stream*. A stream reads one or more raw *modalities* (the MMSA file's feature arrays) through
its own encoder; its tokens attend to that encoder's output in the MM blocks, and it contributes two of the
seven representations the task head fuses (``<prefix>_tok``, ``<prefix>_enc``) and one auxiliary loss term.

From :data:`STREAMS` derive: the config keys (``fusion.n_a``, ``encoders.audio``, ``loss.a``), the mask
segments and their order, the model's token groups and encoders, the representations, the loss terms,
the modality ablation of ``dmpf eval`` and every display name. From :data:`DATASETS` derive: the feature
widths a model is built for, the validation of an imported file, the benchmark's padded lengths, the metric
family and the hash MMSA publishes. Adding a stream or a dataset is one entry here (plus, for a dataset,
its data; for a stream, a mask preset rule where the presets should treat it specially).

Nothing here imports torch: the config, the CLI and the data importer read it at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass

# -- the raw feature streams of the MMSA layout ----------------------------------------------------


@dataclass(frozen=True)
class Modality:
    """A non-verbal feature array of an MMSA file: frames ``(N, L, D)`` plus real lengths ``(N,)``.

    ``key`` names the frames in the MMSA file, the prepared format, a batch and a ``dmpf predict`` sample;
    ``lengths`` names the lengths likewise; ``label`` is its unimodal label (CH-SIMS ``regression_labels_A``).
    """

    key: str
    label: str

    @property
    def lengths(self) -> str:
        return f"{self.key}_lengths"


MODALITIES: tuple[Modality, ...] = (Modality("audio", "A"), Modality("vision", "V"))


@dataclass(frozen=True)
class Text:
    """The text segment: the frozen LM's own stream."""

    name: str  # mask segment
    short: str  # mask display
    label: str  # its unimodal label (CH-SIMS ``regression_labels_T``) and ``loss.text``'s target there
    representation: str  # the LM's state at the last real text token
    loss_key: str  # ``loss.<key>``: the weight of its auxiliary term
    colours: tuple[str, str]  # terminal (rich), picture (matplotlib)


TEXT = Text("text", "T", "T", "h_text", "text", ("dodger_blue1", "#1f77b4"))


@dataclass(frozen=True)
class Stream:
    """One fusion stream: its token group, encoder, representations and loss term."""

    name: str  # token group and mask segment name
    short: str  # mask display: A, V, AV
    display: str  # in reports: "w/o audio-visual"
    prefix: str  # representations <prefix>_tok and <prefix>_enc, loss weight loss.<prefix>
    tokens_key: str  # fusion.<key>: how many fusion tokens (0 removes the stream)
    encoder_key: str  # encoders.<key>: its encoder's config
    inputs: tuple[Modality, ...]  # the modalities its encoder reads, in this order
    colours: tuple[str, str]  # terminal (rich), picture (matplotlib)

    @property
    def tok(self) -> str:
        """Mean of the stream's fusion-token span of the LM's final state."""
        return f"{self.prefix}_tok"

    @property
    def enc(self) -> str:
        """Time-mean of the stream's encoder output."""
        return f"{self.prefix}_enc"

    @property
    def label(self) -> str | None:
        """The unimodal label a single-modality stream regresses with ``loss.unimodal_labels``."""
        return self.inputs[0].label if len(self.inputs) == 1 else None


_AUDIO, _VISION = MODALITIES
STREAMS: tuple[Stream, ...] = (
    Stream("audio", "A", "audio", "a", "n_a", "audio", (_AUDIO,), ("green3", "#2ca02c")),
    Stream("visual", "V", "visual", "v", "n_v", "vision", (_VISION,), ("magenta", "#b01fb4")),
    Stream("audio_visual", "AV", "audio-visual", "av", "n_av", "audio_visual", (_AUDIO, _VISION),
           ("dark_orange", "#ff7f0e")),
)
STREAM_BY_NAME: dict[str, Stream] = {s.name: s for s in STREAMS}

SEGMENTS: tuple[str, ...] = (TEXT.name, *STREAM_BY_NAME)  # the sequence order inside the LM
SHORT: dict[str, str] = {TEXT.name: TEXT.short, **{s.name: s.short for s in STREAMS}}
COLOURS: dict[str, tuple[str, str]] = {TEXT.name: TEXT.colours, **{s.name: s.colours for s in STREAMS}}

# The seven representations of design.md §5 in their canonical order (the task head's token order): the
# fusion-token spans, the text state, the encoder time-means.
REPRESENTATIONS: tuple[str, ...] = (*(s.tok for s in STREAMS), TEXT.representation, *(s.enc for s in STREAMS))

# The unimodal labels a dataset may carry (CH-SIMS: T, A, V), in the order MMSA lists them.
UNIMODAL_LABELS: tuple[str, ...] = (TEXT.label, *(m.label for m in MODALITIES))


# -- datasets --------------------------------------------------------------------------------------

SPLITS = ("train", "valid", "test")


MMSA_URL = "https://github.com/thuiar/MMSA"  # its README links the processed feature files


@dataclass(frozen=True)
class PublishedFile:
    """One processed file a dataset's publisher releases: where its download puts it and the hash it lists."""

    path: str  # where the publisher's download puts it: "MOSI/Processed/aligned_50.pkl"
    sha256: str | None  # as the publisher lists it; None where it lists none
    aligned: bool = False  # every stream at the text's length (MMSA's aligned_50.pkl; see data.mmsa)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Dataset:
    """The facts of one dataset (design.md §7) that code depends on."""

    name: str
    feature_dims: tuple[int, ...]  # per modality, in MODALITIES order: the widths a model is built for
    padded_lengths: tuple[int, ...] | None  # per modality in the (first) published file (synthetic: per size)
    label_range: tuple[float, float]
    metrics: str  # the metric family: "mosei" (Has0/Non0/Acc5/Acc7) or "sims" (Acc2/3/5 on clipped values)
    unimodal_labels: bool  # the file carries regression_labels_T/A/V
    files: tuple[PublishedFile, ...]  # the processed files published; the first is the one a preset is set for
    preset: str | None  # the config (configs/NAME.yaml) whose tokenizer `dmpf prepare` tokenises for
    generated: bool = False  # made by dmpf: feature widths follow the generated file, nothing is published
    publisher: tuple[str, str] = ("MMSA", MMSA_URL)  # who publishes the files, and where
    features: str | None = None  # what its published features are, in a sentence ("MOSEI's COVAREP/FACET features")
    recipe: str | None = None  # the feature recipe (registry kind ``extractor``) that computes them from a new clip

    @property
    def file(self) -> str | None:
        """The name of the (first) published file, e.g. ``unaligned_50.pkl``."""
        return self.files[0].name if self.files else None

    @property
    def published_as(self) -> str | None:
        return self.files[0].path if self.files else None

    @property
    def published_sha256(self) -> str | None:
        """The (first) published file's hash, as its publisher lists it."""
        return self.files[0].sha256 if self.files else None

    def published_file(self, sha256: str) -> PublishedFile | None:
        """The published file with this hash, if any."""
        return next((f for f in self.files if f.sha256 is not None and f.sha256 == sha256), None)

    def where_to_get(self) -> str:
        """Which file to get, where it is published and its hash, in one clause (for a missing dataset)."""
        who, url = self.publisher
        sha = f"sha256 {self.published_sha256}" if self.published_sha256 else "no sha256 published"
        return f"{who}'s {self.file} (published with {who}, {url}, as {self.published_as}; {sha})"


# The sha256 of MMSA's files: MMSA's README, section "2. Datasets" ("SHA-256 for feature files";
# https://github.com/thuiar/MMSA/blob/master/README.md). Its MOSI and MOSEI folders hold an aligned_50.pkl beside
# unaligned_50.pkl (every stream word-aligned, at the text's 50 steps: src/MMSA/config/config_regression.json,
# "aligned": seq_lens [50, 50, 50]); SIMS has only unaligned_39.pkl.
#
# CH-SIMS v2 (supervised part), from its publisher's repository https://github.com/thuiar/ch-sims-v2:
# * file: README ("Supervised standard pickle file (ch-simsv2s.pkl)", a Google Drive folder, no Processed/ path);
# * widths audio 25 (eGeMAPS LLDs), vision 177 (OpenFace) and padded lengths 925 / 232: config/config_regression.py
#   (feature_dims (768, 25, 177), seq_lens (50, 925, 232)). MMSA's own config_regression.json has a "simsv2" entry
#   with SIMS's numbers (33/709, 39/400/55) and another file name (SIMSv2/Processed/sims_unaligned.pkl): it is
#   not the file the publisher links, and is not followed here;
# * label range [-1, 1], the SIMS metric family: utils/metricsTop.py (SIMS3L is scored by the SIMS regression
#   metrics, on values clipped to [-1, 1]);
# * unimodal labels: data/load_data.py reads regression_labels_T/A/V — but from another file (SimsLargeV6.pkl),
#   and nothing published says ch-simsv2s.pkl carries them, so they are not required here;
# * sha256: none published (issue thuiar/ch-sims-v2#12 asks for one and is open).
SIMSV2_URL = "https://github.com/thuiar/ch-sims-v2"


DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("mosei", (74, 35), (500, 375), (-3.0, 3.0), "mosei", False, (
        PublishedFile("MOSEI/Processed/unaligned_50.pkl",
                      "ad8b23d50557045e7d47959ce6c5b955d8d983f2979c7d9b7b9226f6dd6fec1f"),
        PublishedFile("MOSEI/Processed/aligned_50.pkl",
                      "45eccfb748a87c80ecab9bfac29582e7b1466bf6605ff29d3b338a75120bf791", aligned=True),
    ), "mosei", features="MOSEI's COVAREP/FACET features"),
    Dataset("mosi", (5, 20), (375, 500), (-3.0, 3.0), "mosei", False, (
        PublishedFile("MOSI/Processed/unaligned_50.pkl",
                      "78e0f8b5ef8ff71558e7307848fc1fa929ecb078203f565ab22b9daab2e02524"),
        PublishedFile("MOSI/Processed/aligned_50.pkl",
                      "d3994fd25681f9c7ad6e9c6596a6fe9b4beb85ff7d478ba978b124139002e5f9", aligned=True),
    ), "mosi", features="MOSI's COVAREP/FACET features"),
    Dataset("sims", (33, 709), (400, 55), (-1.0, 1.0), "sims", True, (
        PublishedFile("SIMS/Processed/unaligned_39.pkl",
                      "c9e20c13ec0454d98bb9c1e520e490c75146bfa2dfeeea78d84de047dbdd442f"),
    ), "sims", features="CH-SIMS's librosa/OpenFace features", recipe="sims"),
    Dataset("simsv2", (25, 177), (925, 232), (-1.0, 1.0), "sims", False, (
        PublishedFile("ch-simsv2s.pkl", None),
    ), "simsv2", publisher=("CH-SIMS v2", SIMSV2_URL),
            features="CH-SIMS v2's features, whose extraction recipe is not published"),
    # generated in the MMSA layout with MOSEI's widths and label range (dmpf_cli.data.synthetic)
    Dataset("synthetic", (74, 35), None, (-3.0, 3.0), "mosei", False, (), "default", generated=True,
            features="dmpf's generated synthetic features"),
)}
