"""dmpf: Modality-Preserving Deep Fusion (DMPF) for multimodal sentiment analysis.

The public Python API is :mod:`dmpf_cli.api`'s, exported here (``import dmpf_cli as dmpf``). Importing the package
is cheap: torch, transformers and xformers load only where they are used.
"""

from . import api
from .api import *  # noqa: F403 (the public API, listed in api.__all__)

__version__ = "0.1.0.dev0"
__all__ = [*api.__all__, "__version__"]
