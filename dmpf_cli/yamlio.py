"""The one YAML reader and writer of dmpf: configs, overrides, grid files, space files, a run's config.yaml.

**YAML 1.2 scalars.** PyYAML resolves plain scalars by YAML 1.1's rules, in which ``3e-4`` is a string (a float
needs a dot) while ``yes``, ``off``, ``010`` (octal 8), ``1:30`` (90) and ``2024-01-01`` (a date) are not. People
write numbers as YAML 1.2 reads them, so dmpf resolves by YAML 1.2's core schema instead:

* a float: ``1.5``, ``3e-4``, ``1e3`` (1000.0), ``.5``, ``.inf``, ``-.inf``, ``.nan``;
* an int: ``42``, ``-7``, ``010`` (ten), ``0o17``, ``0x1F``;
* a bool: ``true`` and ``false`` only (``yes``, ``no``, ``on``, ``off`` are strings; a config's boolean keys still
  take them, as pydantic does);
* null: ``null``, ``~`` or nothing;
* everything else is a string: ``1.2.3``, ``3e``, ``1_000``, ``1:30``, ``2024-01-01``.

Only plain data comes out: mappings, lists and those scalars. YAML's other tags (``!!binary``, ``!!timestamp``,
``!!set``, ``!!omap``, ``!!pairs``) are refused, so every value read can be shown and compared as JSON.

**Hostile files.** Aliases are counted: a document whose aliases would expand it by more than
:data:`MAX_ALIAS_NODES` nodes (a "billion laughs") or refer to themselves is refused before anything is built
— its value would be shared, not copied, in memory, but printing or checking it walks every copy. A document
nested too deeply for the parser is refused too. Every failure is one line of :class:`YamlError` naming the file.

:func:`dump` and :func:`flow` write with the same rules, so what dmpf writes reads back as the same value
(``"3e-4"`` the string is quoted, ``1e-05`` the float is written ``1.0e-05``); strings that YAML 1.1 would take
for something else (``yes``, ``1:30``) are quoted too, so other programs' YAML readers read the same values.

API::

    read(path, what)    # -> (the file's value, its text); YamlError naming the file on any problem
    load(text, where)   # -> the document's value (None for an empty one); YamlError on any problem
    dump(value)         # -> block YAML, keys in their order (a run's config.yaml)
    flow(value)         # -> one line of flow YAML, e.g. an override's value: f"{key}={flow(value)}"
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import DmpfError

MAX_ALIAS_NODES = 10_000  # nodes that aliases may add to a document (a config has a few hundred in all)

STR, BOOL, INT, FLOAT, NULL = (f"tag:yaml.org,2002:{t}" for t in ("str", "bool", "int", "float", "null"))

# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution), with the first characters each can
# start with (PyYAML indexes its resolvers by the first character)
RESOLVERS = (
    (BOOL, re.compile(r"(?:true|True|TRUE|false|False|FALSE)\Z"), "tTfF"),  # PyYAML calls .match: \Z ends it
    (INT, re.compile(r"(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)\Z"), "-+0123456789"),
    (FLOAT, re.compile(r"(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                       r"|[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN)\Z"), "-+.0123456789"),
    (NULL, re.compile(r"(?:~|null|Null|NULL|)\Z"), ["~", "n", "N", ""]),
)
PLAIN_TAGS = {STR, BOOL, INT, FLOAT, NULL, "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"}


class YamlError(DmpfError):
    """A YAML document that cannot be read: one line naming the file."""


def _core_resolvers(cls) -> None:
    """Give ``cls`` (a loader or a dumper) YAML 1.2's implicit resolvers in place of YAML 1.1's; the merge key
    ``<<`` stays (a mapping can include another)."""
    cls.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag == "tag:yaml.org,2002:merge"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    for tag, regexp, first in RESOLVERS:
        cls.add_implicit_resolver(tag, regexp, list(first))


class _Loader(yaml.SafeLoader):
    def construct_yaml_int(self, node: ScalarNode) -> int:
        value = self.construct_scalar(node)
        base = {"0o": 8, "0x": 16}.get(value[:2], 10)
        return int(value[2:] if base != 10 else value, base)  # 010 is ten, not YAML 1.1's octal eight

    def construct_undefined(self, node: Node):
        raise yaml.constructor.ConstructorError(None, None, f"the tag {node.tag} is not plain data (dmpf reads "
                                                "mappings, lists, strings, numbers, true/false and null)",
                                                node.start_mark)


_core_resolvers(_Loader)
_Loader.yaml_constructors = {tag: fn for tag, fn in yaml.SafeLoader.yaml_constructors.items()
                             if tag in PLAIN_TAGS or tag is None}
_Loader.add_constructor(INT, _Loader.construct_yaml_int)
_Loader.add_constructor(None, _Loader.construct_undefined)


_YAML_1_1 = yaml.resolver.Resolver()  # PyYAML's own rules, which other programs read dmpf's files with


class _Dumper(yaml.SafeDumper):
    def resolve(self, kind, value, implicit):
        """A string that either YAML 1.2 or YAML 1.1 would read as something else (``3e-4``, ``yes``, ``1:30``) is
        quoted, so a file dmpf writes reads the same with any YAML reader."""
        tag = super().resolve(kind, value, implicit)
        if kind is ScalarNode and implicit[0] and tag == STR:
            other = _YAML_1_1.resolve(kind, value, implicit)
            return other if other != STR else tag
        return tag


_core_resolvers(_Dumper)


def _expansion(root: Node) -> int:
    """How many nodes aliases add to the document (each alias counts the whole subtree it repeats); a node that
    contains itself is a :class:`ValueError`. Linear in the document's size, whatever the expansion."""
    size: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:  # iterative: a deep document must not exhaust Python's recursion
        node, done = stack.pop()
        key = id(node)
        if done:
            children = _children(node)
            size[key] = 1 + sum(size[id(c)] for c in children)
            visiting.discard(key)
            continue
        if key in size:
            continue
        if key in visiting:
            raise ValueError("an alias refers to a node that contains it (a recursive document)")
        visiting.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)
    return size[id(root)] - len(size)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def read(path: Path, what: str = "YAML file") -> tuple[Any, str]:
    """The value of the YAML file at ``path`` (None when it is empty) and its text. A file that is not there
    (``no such {what}``), cannot be read or is not YAML is one line of :class:`YamlError` naming it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise YamlError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise YamlError(f"{path}: is a directory, expected a YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise YamlError(f"{path}: cannot read: {exc}") from None
    return load(text, str(path)), text


def load(text: str, where: str) -> Any:
    """The value of the YAML document ``text`` (None when it is empty), read by YAML 1.2's rules. ``where``
    names the document (a file's path) in the one-line :class:`YamlError` raised for anything wrong with it."""
    loader = None
    try:
        loader = _Loader(text)  # refuses unprintable characters at once
        node = loader.get_single_node()
        if node is None:
            return None
        added = _expansion(node)
        if added > MAX_ALIAS_NODES:
            raise YamlError(f"{where}: its aliases expand it by {added:,} nodes, more than the {MAX_ALIAS_NODES:,} "
                            "dmpf reads (a YAML alias bomb?); write the values out")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise YamlError(f"{where}: invalid YAML: {_problem(exc)}") from None
    except ValueError as exc:  # _expansion's recursive document
        raise YamlError(f"{where}: invalid YAML: {exc}") from None
    except RecursionError:
        raise YamlError(f"{where}: invalid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def _problem(exc: yaml.YAMLError) -> str:
    """A PyYAML error in one line: where, then what."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    if isinstance(exc, yaml.reader.ReaderError):  # an unprintable character (a NUL, a stray control code)
        return f"character {exc.position + 1}: {exc.reason}"
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return where + " ".join(problem.split())


def dump(value: Any) -> str:
    """``value`` as block YAML (flow style for lists of scalars), keys in their order; :func:`load` reads it back
    as ``value``."""
    return yaml.dump(value, Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=100)


def flow(value: Any) -> str:
    """``value`` as one line of flow YAML that :func:`load` reads back as ``value`` (an override's value)."""
    return yaml.dump(value, Dumper=_Dumper, default_flow_style=True, width=10_000).removesuffix("\n...\n").strip()
