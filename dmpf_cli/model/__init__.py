"""The DMPF model library (design.md §1-§5): encoders, the frozen GPT-2 with fusion tokens, MM blocks and the fusion
mask, the heads and the loss. :func:`dmpf_cli.model.dmpf.build_model` is its front door; the "Layout" of
docs/development.md says which idea lives in which file. Nothing here imports the application or the CLI.
"""
