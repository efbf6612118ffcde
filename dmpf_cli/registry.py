"""Registry of swappable components: encoders, backbones, heads, mask presets, metric loggers and feature recipes.

Built-ins register with a decorator on a plain factory (the timm ``register_model`` pattern)::

    @register("head", "self-attention")
    def self_attention_head(cfg, dims): ...

Third-party distributions register through the ``dmpf.plugins`` entry-point group: each entry
point names a module (or a callable) that, when imported or called, uses the same decorator.
Entry points are discovered lazily, on the first lookup, with :mod:`importlib.metadata`. A plugin
that fails to load produces a one-line warning naming the plugin and the error; everything else
keeps working.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from .errors import DmpfError, did_you_mean

ENTRY_POINT_GROUP = "dmpf.plugins"
KINDS = ("encoder", "backbone", "head", "mask", "logger", "extractor")
BUILTIN = "built-in"

# Modules whose import registers the built-in components of each kind.
_BUILTIN_MODULES = ("dmpf_cli.model.mask", "dmpf_cli.model.backbones", "dmpf_cli.model.encoders", "dmpf_cli.model.heads",
                    "dmpf_cli.recipes.loggers", "dmpf_cli.media.extractors")


class RegistryError(DmpfError, LookupError):
    """An unknown kind or component name; the message names the close matches."""


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    factory: Callable[..., Any]
    origin: str  # "built-in" or the name of the distribution that provided it
    doc: str


_registry: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
_origin_stack: list[str] = []  # the distribution whose entry point is being loaded, if any
_state = {"builtins": False, "plugins": False}
_plugin_warnings: list[str] = []


def _check_kind(kind: str) -> None:
    if kind not in _registry:
        raise RegistryError(f"unknown component kind '{kind}' (expected one of: {', '.join(KINDS)})")


def register(kind: str, name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn`` as component ``name`` (default: the function name) of ``kind``.

    Registering a name that is already taken by another origin is refused, so a plugin can never
    silently replace a built-in.
    """
    _check_kind(kind)

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        key = name or fn.__name__.replace("_", "-")
        origin = _origin_stack[-1] if _origin_stack else BUILTIN
        existing = _registry[kind].get(key)
        if existing is not None and existing.factory is not fn:
            if existing.origin == origin and existing.factory.__qualname__ == fn.__qualname__:
                pass  # the same module imported twice (e.g. reloaded); keep the newest
            else:
                raise RegistryError(
                    f"{kind} '{key}' from {origin} clashes with the one from {existing.origin}; "
                    "choose another name"
                )
        doc = (fn.__doc__ or "").strip().splitlines()
        _registry[kind][key] = Component(kind, key, fn, origin, doc[0] if doc else "")
        return fn

    return deco


def _load_builtins() -> None:
    if _state["builtins"]:
        return
    _state["builtins"] = True
    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)


def _warn(message: str) -> None:
    _plugin_warnings.append(message)
    print(f"warning: {message}", file=sys.stderr)


def load_plugins() -> None:
    """Import every ``dmpf.plugins`` entry point once; failures warn and are skipped."""
    if _state["plugins"]:
        return
    _state["plugins"] = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else ep.value.split(":")[0]
        _origin_stack.append(dist)
        try:
            obj = ep.load()
            if ep.attr and callable(obj):  # "pkg.mod:setup" style: call the setup hook
                obj()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a broken plugin (even one calling sys.exit) must never take the toolkit down
            detail = " ".join(str(exc).split())  # one line, whatever the message holds
            _warn(f"plugin '{ep.name}' ({dist}) failed to load: {type(exc).__name__}{': ' + detail if detail else ''}")
        finally:
            _origin_stack.pop()


def _ensure_loaded() -> None:
    _load_builtins()
    load_plugins()


def get(kind: str, name: str) -> Component:
    """Return the component ``name`` of ``kind``; unknown names fail with the close matches."""
    _check_kind(kind)
    _ensure_loaded()
    try:
        return _registry[kind][name]
    except KeyError:
        raise RegistryError(unknown_name_message(kind, name)) from None


def unknown_name_message(kind: str, name: str) -> str:
    known = sorted(_registry[kind])
    return f"unknown {kind} '{name}': {did_you_mean(name, known, n=3)}available: {', '.join(known) or '(none)'}"


def create(kind: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """Look up ``name`` and call its factory."""
    return get(kind, name).factory(*args, **kwargs)


def names(kind: str) -> list[str]:
    _check_kind(kind)
    _ensure_loaded()
    return sorted(_registry[kind])


def components(kind: str | None = None) -> Iterator[Component]:
    """Every registered component (of one kind, or all kinds in ``KINDS`` order), sorted by name."""
    _ensure_loaded()
    for k in (kind,) if kind else KINDS:
        _check_kind(k)
        yield from (c for _, c in sorted(_registry[k].items()))


def plugin_warnings() -> list[str]:
    """The warnings produced while loading plugins in this process."""
    _ensure_loaded()
    return list(_plugin_warnings)
