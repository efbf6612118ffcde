"""The public Python API (dmpf_cli.api): exported from the package, and its docstring examples run."""

from __future__ import annotations

import doctest

import dmpf_cli
from dmpf_cli import api


def test_the_package_exports_the_api():
    assert set(api.__all__) <= set(dmpf_cli.__all__)
    assert all(getattr(dmpf_cli, name) is getattr(api, name) for name in api.__all__)


def test_the_docstring_examples_run():
    result = doctest.testmod(api, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4
    assert result.failed == 0
