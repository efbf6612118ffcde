"""dmpf: Modality-Preserving Deep Fusion (DMPF) for multimodal sentiment analysis.

Importing the package is cheap: torch, transformers and xformers load only where they are used.
"""

__version__ = "0.1.0.dev0"
