"""dmpf from Python: the functions the ``dmpf`` commands call, for notebooks and scripts.

Everything here is exported from the package (``import dmpf_cli as dmpf``)::

    cfg = dmpf.load_config("default", ["training.max_epochs=2"])   # a preset or a YAML file, then overrides
    result = dmpf.train(cfg, output="runs/demo")                     # one seed or several; prints nothing
    model = dmpf.from_pretrained(result.run)                         # a run, an exported model, or a Hub id
    model.evaluate("test")["MAE"]                                    # the MMSA metrics on a split
    model.predict([{"text": "...", "audio": a, "vision": v}])        # numpy scores, batched
    model.predict_media("clip.mp4", transcript="...")                # a clip, by its training data's recipe
    model.save_pretrained("exported/demo")                           # config.json, model.safetensors, README.md
    model.push_to_hub("my-lab/dmpf-demo")                            # through huggingface_hub

Nothing prints unless asked (``progress=True``), and a problem with the user's input is a
:class:`~dmpf_cli.errors.DmpfError` whose message is the one line the command would print.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    import numpy as np
    from rich.console import Console

    from .config import ExperimentConfig
    from .model.dmpf import DMPF
    from .recipes.evaluate import TrainedModel

__all__ = ["Model", "TrainResult", "build_model", "export", "from_pretrained", "load_config", "train"]


def load_config(config: str | Path | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """An experiment config, checked: a preset by name (``"default"``, ``"mosei"``, ``"mosi"``, ``"sims"``) or a
    YAML file (an exported model's ``config.json`` too), then ``overrides`` (``"key.sub=value"``, as on the command
    line). None: the embedded default.

    Raises:
        ConfigError: an unknown preset, a file that cannot be read, a bad key or value (one line each).

    Example:
        >>> cfg = load_config("default", ["training.max_epochs=2", "fusion.n_a=8"])
        >>> cfg.training.max_epochs, cfg.fusion.n_a, cfg.backbone.name
        (2, 8, 'gpt2-demo')
        >>> load_config("default", ["training.max_epochs=zero"])
        Traceback (most recent call last):
        ...
        dmpf_cli.config.ConfigError: override 'training.max_epochs=zero': training.max_epochs: expected an integer, got 'zero'
    """
    from .recipes.preflight import resolve_config

    return resolve_config(None, config, list(overrides))


def _config(config: ExperimentConfig | str | Path | None, overrides: Sequence[str]) -> ExperimentConfig:
    """``config`` as a checked :class:`ExperimentConfig`: one already, or a preset's name or a file; then the
    overrides (applied to a config object through its YAML, as the command line applies them to a file)."""
    from .config import ExperimentConfig, to_yaml

    if not isinstance(config, ExperimentConfig):
        return load_config(config, overrides)
    if not overrides:
        return config
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{config.name}.yaml"
        path.write_text(to_yaml(config), encoding="utf-8")
        return load_config(path, overrides)


def build_model(config: ExperimentConfig | str | Path | None = None, *, dims: tuple[int, ...] | None = None,
                seed: int = 0, device: str = "cpu") -> DMPF:
    """The untrained DMPF model for ``config`` (a :class:`torch.nn.Module`), as ``dmpf train`` builds it: the frozen
    backbone loaded (the demo LM installed on first use), the trainable parts initialised from ``seed``.

    ``dims``: each modality's feature width (audio, vision); default: the config's dataset's.

    Example:
        >>> model = build_model("default")
        >>> model.backbone.config.n_layer, sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
        (4, True)
    """
    from .model.dmpf import build_model as _build
    from .recipes.pretrain_lm import ensure_backbone

    cfg = _config(config, ())
    ensure_backbone(cfg.backbone, None)
    model, _ = _build(cfg, dims=dims, seed=seed, device=device)
    return model


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` did: each run directory with its results (test and valid metrics, best epoch, …), and
    for several seeds the mean ± std of each test metric."""

    runs: dict[Path, dict[str, Any]]
    summary: dict[str, dict[str, float]] | None = None
    seeds: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """As ``dmpf train --format json`` prints it: ``{"runs": {dir: results}, "summary": ...}``."""
        return {"runs": {str(path): results for path, results in self.runs.items()},
                **({"summary": self.summary} if self.summary else {})}

    @property
    def run(self) -> Path:
        """The run directory (one seed), or the root holding ``seed-N`` directories (several)."""
        paths = list(self.runs)
        return paths[0] if len(paths) == 1 else paths[0].parent

    @property
    def test(self) -> dict[str, float]:
        """The test metrics: the run's (one seed), or their means over the seeds."""
        if self.summary:
            return {k: v["mean"] for k, v in self.summary.items()}
        return next(iter(self.runs.values()))["test"]


def _console(progress: bool | Console) -> Console:
    from rich.console import Console

    if isinstance(progress, Console):
        return progress
    return Console(stderr=True, highlight=False) if progress else Console(quiet=True)


def train(config: ExperimentConfig | str | Path | None = None, *, overrides: Sequence[str] = (),
          output: str | Path | None = None, seeds: Sequence[int] | None = None, overwrite: bool = False,
          resume: str | Path | None = None, progress: bool | Console = False,
          threads: int | str | None = None) -> TrainResult:
    """Train ``config`` (an :class:`ExperimentConfig`, a preset's name or a YAML file; None: the embedded default)
    with ``overrides``, once per seed, into run directories, and test each best checkpoint: ``dmpf train``.

    ``output``: the run directory (one seed) or the root of ``seed-N`` directories (several); default
    ``runs/NAME-DATE-TIME``. ``seeds``: default the config's ``training.seeds``. ``resume``: continue an
    interrupted run (or root) with its own config. ``progress``: show progress and messages on stderr (or on this
    rich console); default silent. ``threads``: CPU threads (default: all this process may use).

    Returns:
        A :class:`TrainResult`: ``.run`` (the directory), ``.runs`` (each run's results), ``.test`` (test metrics).
    """
    from .errors import DmpfError
    from .recipes.runs import train as _train
    from .recipes.runtime import use_threads

    if resume is not None and (config is not None or overrides or seeds):
        raise DmpfError("resume: continues a run with its own config and seeds; drop config, overrides and seeds")
    use_threads(threads)
    cfg = None if resume is not None else _config(config, overrides)
    summary = _train(cfg, Path(output) if output is not None else None, list(seeds) if seeds else None,
                     resume=Path(resume) if resume is not None else None, overwrite=overwrite,
                     console=_console(progress))
    runs = {Path(root): results for root, results in summary["runs"].items()}
    return TrainResult(runs, summary.get("summary"), [r.get("seed") for r in runs.values() if r])


class Model:
    """A trained DMPF, ready to score: a run's best checkpoint, or an exported model (:func:`from_pretrained`).

    Attributes: ``config`` (the resolved :class:`ExperimentConfig` it was trained with), ``dims`` (the feature
    widths it takes: audio, vision), ``module`` (the :class:`torch.nn.Module`, in eval mode), ``source`` (where it
    was loaded from).
    """

    def __init__(self, loaded: TrainedModel, warnings: list[str] | None = None):
        self._loaded = loaded
        self.config = loaded.cfg
        self.dims = loaded.dims
        self.module = loaded.model
        self.source = loaded.source
        self.warnings: list[str] = warnings or []  # what loading warned about (an unfinished run, another backbone's weights)

    def __repr__(self) -> str:
        return (f"Model(source={str(self.source)!r}, dataset={self.config.data.dataset!r}, "
                f"backbone={self.config.backbone.name!r}, dims={self.dims})")

    @classmethod
    def from_pretrained(cls, source: str | Path, *, progress: bool | Console = False) -> Model:
        """See :func:`from_pretrained`."""
        from .recipes.evaluate import load_trained

        warnings: list[str] = []
        return cls(load_trained(source, warn=warnings.append, console=_console(progress)), warnings)

    def predict(self, samples: Any, *, batch_size: int | None = None, records: bool = False) -> np.ndarray | list[dict]:
        """Score ``samples`` in batches (default: the config's batch size).

        ``samples``: a list of dicts, or one dict of equal-length columns. Each sample has ``text`` (a string), one
        frames array per modality — ``audio`` (length, dims[0]) and ``vision`` (length, dims[1]), numpy arrays or
        nested lists, any length >= 1 — and optionally an ``id``. Checked as ``dmpf predict`` checks a file: the
        first problem is one :class:`~dmpf_cli.errors.DmpfError` line naming the sample.

        Returns:
            The scores as a float32 array, in the samples' order; with ``records``, one dict per sample (``id``,
            ``score`` and the dataset's label bins), as ``dmpf predict`` writes its rows.
        """
        import numpy as np

        from .data.samples import from_memory
        from .recipes.evaluate import score_samples

        rows = score_samples(self._loaded, from_memory(samples, self.dims), batch_size)
        return rows if records else np.asarray([r["score"] for r in rows], dtype=np.float32)

    @property
    def features_recipe(self) -> str | None:
        """The feature recipe (``dmpf extract --recipe``) its training data was made with, which
        :meth:`predict_media` extracts new clips with; None where no recipe can compute those features from a clip
        (MOSEI's and MOSI's COVAREP/FACET, the synthetic data)."""
        return self._loaded.features_recipe.name

    def predict_media(self, media: str | Path | Sequence[str | Path], *, transcript: str | None = None,
                      openface: str | Path | None = None, on_error: str = "fail", batch_size: int | None = None,
                      records: bool = False) -> np.ndarray | list[dict]:
        """Score clips (video or audio files, or directories of them): ``dmpf predict --media``. Each clip's features are extracted with the
        recipe the model's training data was made with (:attr:`features_recipe`; the ``media`` extra installs
        librosa and PyAV); a model trained on features no recipe computes (MOSEI, MOSI, synthetic data) is refused
        in one line.

        ``transcript`` and ``openface`` (OpenFace 2's CSV for the clip, or your own per-frame ``.npy``) go with one
        clip; several clips take ``CLIP.txt`` (or ``.srt``) and ``CLIP.csv`` (or ``CLIP.npy``) beside each.
        ``on_error="skip"``: of several clips, one that cannot be used is skipped (its line in ``warnings``).

        Returns:
            The scores as a float32 array, in the clips' order; with ``records``, one dict per clip (``id``: the
            file's stem, ``score``, the dataset's label bins), as ``dmpf predict --media`` writes its rows.

        Example (needs a model trained on clips, and the media)::

            model = dmpf.from_pretrained("runs/my-clips")
            model.predict_media("interview.mp4", transcript="I loved it", openface="interview.csv")
            model.predict_media(["a.mp4", "b.mp4"], records=True)   # a.txt, a.csv, b.txt, b.csv beside them
        """
        import numpy as np

        from .recipes.predict_media import score_media

        paths = [media] if isinstance(media, (str, Path)) else list(media)
        rows = score_media(self._loaded, [Path(p) for p in paths], transcript=transcript,
                           openface=Path(openface) if openface is not None else None, on_error=on_error,
                           warn=self.warnings.append, batch_size=batch_size)
        return rows if records else np.asarray([r["score"] for r in rows], dtype=np.float32)

    def evaluate(self, split: str = "test", *, data: str | Path | None = None,
                 progress: bool | Console = False) -> dict[str, float]:
        """The MMSA metrics on ``split`` (``test`` or ``valid``) of the data it was trained on: a run's recorded
        prepared directory, else the dataset's default place (``dmpf prepare``); ``data``: another prepared
        directory with the same feature widths."""
        from .recipes.evaluate import eval_loaded

        result = eval_loaded(self._loaded, split, False, self.warnings.append, _console(progress),
                             Path(data) if data is not None else None)
        return result["metrics"]

    def save_pretrained(self, directory: str | Path, *, overwrite: bool = False) -> Path:
        """Write this model as an exported model directory (:func:`export`): ``config.json``, ``model.safetensors``,
        ``dmpf.json`` and the ``README.md`` model card. Returns the directory."""
        directory = Path(directory).expanduser()
        if self._loaded.run is not None:
            return export(self.source, directory, overwrite=overwrite)
        from .store.exported import copy_exported

        copy_exported(Path(self.source), directory, overwrite=overwrite)
        return directory

    def push_to_hub(self, repo_id: str, *, token: str | None = None, private: bool = False,
                    commit_message: str | None = None) -> str:
        """Upload this model (exported first, where it is a run) to the Hub repository ``repo_id`` through
        ``huggingface_hub`` (made if missing). Returns the commit's URL."""
        from .recipes.share import push_to_hub

        if self._loaded.run is None:  # an exported model already: its directory goes up as it is
            return push_to_hub(self.source, repo_id, token=token, private=private, commit_message=commit_message)
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "model")
            return push_to_hub(folder, repo_id, token=token, private=private, commit_message=commit_message)


def from_pretrained(source: str | Path, *, progress: bool | Console = False) -> Model:
    """Load a trained model for scoring: a run directory (its best checkpoint), an exported model directory
    (``dmpf export``, :meth:`Model.save_pretrained`), or a Hugging Face Hub id (``org/name``: looked up in the
    Hugging Face cache first, offline; downloaded only where the Hub is reachable and ``HF_HUB_OFFLINE`` is not
    set). The frozen backbone is loaded as the model names it (the demo LM is installed if missing).

    Warnings (an unfinished run, a backbone whose weights differ from the trained one) are kept in
    ``model.warnings``. ``progress``: show the demo LM's installation, where it happens.
    """
    return Model.from_pretrained(source, progress=progress)


def export(run: str | Path, output: str | Path, *, overwrite: bool = False) -> Path:
    """``dmpf export``: a finished run (or a multi-seed root, all seeds finished) as an exported model directory —
    ``config.json`` (the resolved config), ``model.safetensors`` (the trainable weights of the seed with the best
    validation MAE; the frozen backbone is named by its Hub id or dmpf's demo LM with its weights' fingerprint,
    never copied), ``dmpf.json`` and the ``README.md`` model card (metrics mean ± std over the seeds, the command
    that reproduces the run; synthetic-data and random-backbone models marked as demonstrations). Returns ``output``.
    """
    from .recipes.share import export_run

    export_run(Path(run), Path(output), overwrite=overwrite)
    return Path(output).expanduser()
