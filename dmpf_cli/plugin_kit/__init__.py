"""The plugin author's kit: the contract every registered component of a kind must pass, as named checks.

dmpf's own tests run them on every built-in component, ``dmpf plugins check NAME`` runs them against any
registered component (an installed plugin's too), and a plugin's own test suite imports them::

    from dmpf_cli.plugin_kit import head_contract

    test_head_contract = head_contract.pytest_tests("gated-sum")   # one test per check

One contract per kind (``CONTRACTS``): ``encoder_contract``, ``backbone_contract``, ``head_contract``,
``mask_contract``, ``logger_contract`` and ``extractor_contract``; each kind's factory signature and forward contract are in its
module's docstring and in docs/how-to/plugins.md. :func:`check_component` runs a component's contract by
name. Importing the kit imports torch (the checks build modules) but not pytest.
"""

from __future__ import annotations

from .. import registry
from ..errors import did_you_mean
from .backbones import backbone_contract
from .contract import Check, Contract, Outcome, Skip, assert_refused
from .encoders import encoder_contract
from .extractors import extractor_contract
from .heads import head_contract
from .loggers import logger_contract
from .masks import mask_contract

__all__ = ["CONTRACTS", "Check", "Contract", "Outcome", "Skip", "assert_refused", "backbone_contract",
           "check_component", "contract", "encoder_contract", "extractor_contract", "find_component", "head_contract", "logger_contract",
           "mask_contract"]

CONTRACTS: dict[str, Contract] = {c.kind: c for c in (
    encoder_contract, backbone_contract, head_contract, mask_contract, logger_contract, extractor_contract)}
assert tuple(sorted(CONTRACTS)) == tuple(sorted(registry.KINDS)), "every registry kind has its contract"


def contract(kind: str) -> Contract:
    """The contract of ``kind`` (a one-line error naming the kinds otherwise)."""
    try:
        return CONTRACTS[kind]
    except KeyError:
        raise registry.RegistryError(
            f"unknown component kind '{kind}' (expected one of: {', '.join(registry.KINDS)})") from None


def find_component(name: str, kind: str | None = None) -> registry.Component:
    """The registered component ``name`` (of ``kind``, when given). A name no kind has, or one that several kinds
    have when ``kind`` is not given, is a one-line :class:`~dmpf_cli.registry.RegistryError`."""
    if kind is not None:
        contract(kind)
        return registry.get(kind, name)
    found = [c for c in registry.components() if c.name == name]
    if len(found) == 1:
        return found[0]
    if found:
        kinds = [c.kind for c in found]
        raise registry.RegistryError(f"'{name}' is registered as {' and '.join(kinds)}: choose one with --kind")
    known = sorted({c.name for c in registry.components()})
    raise registry.RegistryError(f"unknown component '{name}': {did_you_mean(name, known, n=3)}"
                                 "dmpf plugins lists every registered name")


def check_component(name: str, kind: str | None = None, **config) -> tuple[registry.Component, list[Outcome]]:
    """Run the contract of component ``name``'s kind against it: the component and one outcome per check."""
    component = find_component(name, kind)
    return component, CONTRACTS[component.kind].run(component.name, **config)
