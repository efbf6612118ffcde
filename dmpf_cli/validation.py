"""The one way dmpf checks a YAML file against its schema: pydantic models, errors as one line per problem.

Configs (:mod:`dmpf_cli.config`), grid files (:mod:`dmpf_cli.experiments.grid`) and sweep space files
(:mod:`dmpf_cli.experiments.sweep.space`) are pydantic models; :func:`validate` checks a tree read by
:mod:`dmpf_cli.yamlio` against one and turns pydantic's errors into lines ``SOURCE: KEY.PATH: expected …, got
VALUE``, where SOURCE is the file, or the command-line override that set the key (:func:`origin_of`). An unknown
key lists the model's keys with the close matches first. The rules several files share live here too: the one
rule for names that become directories (:data:`Slug`), and lists of ``key=value`` overrides (:data:`Overrides`).

A validator whose message shows the value itself raises :class:`Whole` instead of ``ValueError``, so the line gets
no second ``, got VALUE``.
"""

from __future__ import annotations

import json
import re
import types
import typing
from typing import Annotated, Any, Iterable, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ValidationError

from . import yamlio
from .errors import DmpfError, did_you_mean

M = TypeVar("M", bound=BaseModel)


class Invalid(DmpfError):
    """A file or value that cannot be used. ``str(err)`` is one line per problem, ready to print."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class Whole(ValueError):
    """What a validator raises when its message already shows the value (no ``, got VALUE`` is added)."""


# -- names and overrides, the same rule in every file -----------------------------------------------

SLUG = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
SLUG_RULE = "expected a non-empty name of at most 100 letters, digits, '.', '_' or '-', not starting with '.'"


def is_slug(value: Any) -> bool:
    """Whether ``value`` is safe as one path component: a run's name (``runs/NAME-DATE-TIME``), a grid's or a
    variant's (``runs/grids/NAME/VARIANT``), a study's (``runs/sweeps/NAME``)."""
    return isinstance(value, str) and SLUG.fullmatch(value) is not None


def slug(rule: str = SLUG_RULE) -> Any:
    """A name type under :func:`is_slug`'s rule, refused with ``rule`` (a file may phrase the rule its own way)."""

    def check(value: str) -> str:
        if not is_slug(value):
            raise ValueError(rule)
        return value

    return Annotated[str, AfterValidator(check)]


Slug = slug()


def _overrides(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError("expected a list of key=value overrides")
    return [v.strip() for v in value]


# a list of ``key=value`` config overrides (null: none)
Overrides = Annotated[list[str], BeforeValidator(_overrides)]


def _base_name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a preset name or a config file")
    return value


# the base config a grid file or a space file names (config.base_config finds it, by one rule for both)
BaseName = Annotated[str, BeforeValidator(_base_name)]


# -- key.sub=value overrides ----------------------------------------------------------------------

def parse_override(text: str, error: type[Invalid] = Invalid) -> tuple[list[str], Any]:
    """``a.b.c=value`` → (["a","b","c"], value); the value is parsed as YAML 1.2 (``[7, 14]``, ``true``, ``1e-4``:
    :mod:`dmpf_cli.yamlio`); a value that is not YAML (``[1,``) is kept as the string it is."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise error([f"override '{text}': expected key.sub=value, e.g. fusion.n_a=8"])
    try:
        value = yamlio.load(raw, f"override '{text}'") if raw.strip() else ""
    except yamlio.YamlError:
        value = raw  # not YAML: keep it as a plain string
    return key.split("."), value


def apply_overrides(tree: dict[str, Any], texts: Iterable[str], error: type[Invalid] = Invalid
                    ) -> dict[tuple[str, ...], str]:
    """Set each ``key.sub=value`` of ``texts`` in ``tree``, in order; returns which override set which key path
    (the ``origins`` that :func:`validate` blames)."""
    origins: dict[tuple[str, ...], str] = {}
    for text in texts:
        keys, value = parse_override(text, error)
        node = tree
        for depth, part in enumerate(keys[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise error([f"override '{text}': {'.'.join(keys[: depth + 1])}: is a {type(child).__name__} value, "
                             f"it has no key '{keys[depth + 1]}'"])
            node = child
        node[keys[-1]] = value
        origins[tuple(keys)] = text
    return origins


# -- pydantic's errors as lines -------------------------------------------------------------------

def validate(model: type[M], tree: Any, source: str, origins: dict[tuple[str, ...], str] | None = None,
             error: type[Invalid] = Invalid) -> M:
    """``tree`` as a ``model``, or ``error`` with one line per problem, each naming ``source`` (or the override in
    ``origins``, key path -> override text, that set the key), the key path and what was expected."""
    try:
        return model.model_validate(tree)
    except ValidationError as exc:
        raise error(problems(model, exc, source, origins or {})) from None


def problems(model: type[BaseModel], exc: ValidationError, source: str,
             origins: dict[tuple[str, ...], str]) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc)
        # a section's own check (a model validator) names the values itself: no ", got {whole section}"
        quiet = err["type"] in ("extra_forbidden", "missing") or _whole(err) or (
            isinstance(err.get("input"), dict) and _is_section(model, loc))
        got = "" if quiet else f", got {shown_value(err.get('input'))}"
        key = f"{dotted}: " if dotted else ""
        lines.append(f"{origin_of(loc, origins, source)}: {key}{_expected(model, err)}{got}")
    return lines


def origin_of(loc: tuple[Any, ...], overrides: dict[tuple[str, ...], str], source: str) -> str:
    """Who set the key at ``loc``: the override of it (or of a section above it), else the overrides of
    keys inside it (a section whose check failed after an override changed one of its keys), else the file."""
    path = tuple(str(p) for p in loc)
    for n in range(len(path), 0, -1):
        if path[:n] in overrides:
            return f"override '{overrides[path[:n]]}'"
    inside = [f"'{text}'" for keys, text in overrides.items() if path and keys[: len(path)] == path]
    if inside:
        return f"override{'s' if len(inside) > 1 else ''} {', '.join(inside)}"
    return source


def shown_value(value: Any) -> str:
    """A value in an error line: JSON, a string quoted, at most 60 characters."""
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _whole(err: dict[str, Any]) -> bool:
    return isinstance((err.get("ctx") or {}).get("error"), Whole)


def _unwrap(annotation: Any) -> Any:
    """The type inside ``Annotated[T, …]`` and ``Optional[T]``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that holds the key at ``loc`` (for suggesting close key names): models' fields, and the
    values of mappings and lists of models (``space.KEY.low``)."""
    node: Any = model
    for part in loc[:-1]:
        node = _unwrap(node)
        if _is_model(node):
            field = node.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            node = field.annotation
        elif typing.get_origin(node) in (dict, list):
            node = typing.get_args(node)[-1]
        else:
            return None
    node = _unwrap(node)
    return node if _is_model(node) else None


def _is_section(model: type[BaseModel], loc: tuple[Any, ...]) -> bool:
    """Whether ``loc`` names a whole section (a pydantic model), e.g. ``mm`` or ``encoders.audio``."""
    return _model_at(model, loc + ("",)) is not None


def _field_type(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """'an integer' or 'a number' for the field at ``loc`` (for bound errors); list items count as their list's."""
    if loc and isinstance(loc[-1], int):  # an item of a list field, e.g. mm.layers.0
        loc = loc[:-1]
    holder = _model_at(model, loc)
    field = holder.model_fields.get(loc[-1]) if holder and loc and isinstance(loc[-1], str) else None
    if field is None:
        return "a number"
    annotation = _unwrap(field.annotation)
    if typing.get_origin(annotation) is list:
        annotation = _unwrap(typing.get_args(annotation)[0])
    return "an integer" if annotation is int else "a number"


def _expected(model: type[BaseModel], err: dict[str, Any]) -> str:
    """Turn one pydantic error into a short 'expected …' phrase."""
    kind, ctx, msg = err["type"], err.get("ctx") or {}, err["msg"]
    number = _field_type(model, tuple(err["loc"]))
    if kind == "extra_forbidden":
        holder = _model_at(model, tuple(err["loc"]))
        known = list(holder.model_fields) if holder else []
        return f"unknown key; {did_you_mean(str(err['loc'][-1]), known)}expected one of: {', '.join(known)}"
    if kind == "greater_than_equal":
        return f"expected {number} >= {ctx['ge']}"
    if kind == "greater_than":
        return f"expected {number} > {ctx['gt']}"
    if kind in ("less_than", "less_than_equal"):
        return f"expected {number} {'<' if kind == 'less_than' else '<='} {ctx.get('lt', ctx.get('le'))}"
    if kind == "literal_error":
        return f"expected one of {ctx['expected']}"
    if kind.startswith("int_"):
        return "expected an integer"
    if kind.startswith("float_"):
        return "expected a number"
    if kind == "finite_number":
        return "expected a finite number"
    if kind.startswith("bool_"):
        return "expected true or false"
    if kind in ("string_type",):
        return "expected a string"
    if kind in ("list_type", "tuple_type"):
        return "expected a list"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "expected a mapping of keys"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    return msg[0].lower() + msg[1:]
