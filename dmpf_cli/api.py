"""dmpf from Python: the functions the ``dmpf`` commands call, for notebooks and scripts.

Everything here is exported from the package (``import dmpf_cli as dmpf``). Nothing prints unless asked
(``progress=True``), and a problem with the user's input is a :class:`~dmpf_cli.errors.DmpfError` whose message is
the one line the command would print.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from .config import ExperimentConfig
    from .model.dmpf import DMPF

__all__ = ["build_model", "load_config"]


def load_config(config: str | Path | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """An experiment config, checked: a preset by name (``"default"``, ``"mosei"``, ``"mosi"``, ``"sims"``) or a
    YAML file, then ``overrides`` (``"key.sub=value"``, as on the command line). None: the embedded default.

    Raises:
        ConfigError: an unknown preset, a file that cannot be read, a bad key or value (one line each).

    Example:
        >>> cfg = load_config("default", ["training.max_epochs=2", "fusion.n_a=8"])
        >>> cfg.training.max_epochs, cfg.fusion.n_a, cfg.backbone.name
        (2, 8, 'gpt2-demo')
    """
    from .recipes.preflight import resolve_config

    return resolve_config(None, config, list(overrides))


def build_model(config: ExperimentConfig, *, dims: tuple[int, ...] | None = None, seed: int = 0,
                device: str = "cpu") -> DMPF:
    """The untrained DMPF model for ``config`` (a :class:`torch.nn.Module`), as ``dmpf train`` builds it: the frozen
    backbone loaded (the demo LM installed on first use), the trainable parts initialised from ``seed``.

    ``dims``: each modality's feature width (audio, vision); default: the config's dataset's.

    Example:
        >>> model = build_model(load_config("default"))
        >>> sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
        True
    """
    from .model.dmpf import build_model as _build
    from .recipes.pretrain_lm import ensure_backbone

    ensure_backbone(config.backbone, None)
    model, _ = _build(config, dims=dims, seed=seed, device=device)
    return model
