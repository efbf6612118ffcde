"""What a contract is: named checks for one kind of component, run against a registered name.

A check is a plain function ``check(component, **config)`` that builds the component from a small config and
asserts; it passes by returning, fails by raising (an ``AssertionError`` or whatever the component raised), and
is skipped by raising :class:`Skip` (a check that cannot run here, e.g. a logger whose package is missing). Every
check runs with torch's global RNG seeded to 0 and restored afterwards, so a check is reproducible and leaves the
caller's RNG as it was. ``config`` holds extra config fields for the component (``fuse_norm=False``), merged
into the small config each check builds.

Two ways to run a contract: :meth:`Contract.run` (``dmpf plugins check``: one :class:`Outcome` per check, never
raising for a failing check), and :meth:`Contract.pytest_tests` (a plugin's own test suite: one pytest test
per check and component). Importing this module needs neither pytest nor torch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from .. import registry
from ..errors import DmpfError, one_line


class Skip(Exception):
    """Raised by a check that cannot run here; the message says why (and how to make it run)."""


@dataclass(frozen=True)
class Check:
    name: str
    description: str  # one line: what the check verifies
    fn: Callable[..., None]


@dataclass(frozen=True)
class Outcome:
    check: str
    status: str  # "pass", "FAIL" or "skip"
    detail: str  # the check's description when it passed, the reason otherwise (one line)

    @property
    def ok(self) -> bool:
        return self.status != "FAIL"


@contextlib.contextmanager
def seeded(seed: int = 0) -> Iterator[None]:
    """torch's global RNG seeded for the block and restored after it (a check never disturbs the caller's)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def reason(exc: BaseException) -> str:
    """A failed check's reason in one line: the assertion's message, or the exception's type and message."""
    text = one_line(exc)
    if isinstance(exc, AssertionError):
        return text or "AssertionError (no message)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class Contract:
    """The checks every component of ``kind`` must pass; ``@contract.check`` adds one (in the order written)."""

    kind: str
    summary: str  # one line: the factory's signature and what it returns
    checks: list[Check] = field(default_factory=list)

    def check(self, fn: Callable[..., None]) -> Callable[..., None]:
        """Decorator: add ``fn`` as the check named after it (``padding_ignored`` -> ``padding-ignored``)."""
        doc = (fn.__doc__ or "").strip().splitlines()
        self.checks.append(Check(fn.__name__.replace("_", "-"), doc[0] if doc else "", fn))
        return fn

    def names(self) -> list[str]:
        return [c.name for c in self.checks]

    def get(self, check: str) -> Check:
        for c in self.checks:
            if c.name == check:
                return c
        raise registry.RegistryError(f"unknown {self.kind} check '{check}' (expected one of: {', '.join(self.names())})")

    def component(self, name: str) -> registry.Component:
        """The registered component ``name`` of this kind (a one-line error naming the close names otherwise)."""
        return registry.get(self.kind, name)

    def verify(self, name: str, check: str, **config: Any) -> None:
        """Run one check against component ``name``: returns when it passes, raises when it fails or is skipped."""
        component, c = self.component(name), self.get(check)
        with seeded():
            c.fn(component, **config)

    def run(self, name: str, **config: Any) -> list[Outcome]:
        """Run every check against component ``name``; one :class:`Outcome` each, in order. Only an unknown name
        raises (:class:`~dmpf_cli.registry.RegistryError`): a failing check is an outcome."""
        component = self.component(name)
        outcomes = []
        for c in self.checks:
            try:
                with seeded():
                    c.fn(component, **config)
            except Skip as exc:
                outcomes.append(Outcome(c.name, "skip", one_line(exc)))
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # whatever the component raised is that check's failure, never the runner's
                outcomes.append(Outcome(c.name, "FAIL", reason(exc)))
            else:
                outcomes.append(Outcome(c.name, "pass", c.description))
        return outcomes

    def pytest_tests(self, names: str | Iterable[str], **config: Any) -> Callable[..., None]:
        """A pytest test function parametrised over ``names`` × this contract's checks (ids ``NAME-CHECK``).

        Assign it to a ``test_*`` name in a test module::

            from dmpf_cli.plugin_kit import head_contract

            test_head_contract = head_contract.pytest_tests("gated-sum")

        A check that raises :class:`Skip` is reported as skipped. ``config`` is passed to every check.
        """
        import pytest

        names = [names] if isinstance(names, str) else list(names)
        params = [pytest.param(n, c.name, id=f"{n}-{c.name}") for n in names for c in self.checks]

        @pytest.mark.parametrize(("component", "check"), params)
        def test_contract(component: str, check: str) -> None:
            try:
                self.verify(component, check, **config)
            except Skip as exc:
                pytest.skip(str(exc))

        test_contract.__doc__ = f"The {self.kind} contract of dmpf_cli.plugin_kit, one check at a time."
        return test_contract


def assert_refused(build: Callable[[], Any], fragment: str, what: str) -> None:
    """``build()`` raises a ValueError or DmpfError whose message is one line holding ``fragment``."""
    try:
        build()
    except (ValueError, DmpfError) as exc:
        message = str(exc)
        assert fragment in message, f"{what} refused, but the message does not name {fragment!r}: {message!r}"
        assert "\n" not in message.strip(), f"{what} refused in several lines: {message!r}"
    else:
        raise AssertionError(f"{what} was accepted: expected a ValueError or DmpfError naming {fragment!r}")
