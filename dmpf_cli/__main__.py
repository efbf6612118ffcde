"""``python -m dmpf_cli`` (and ``torchrun -m dmpf_cli``) runs the ``dmpf`` command line."""

from .cli import main

main()
