"""The one YAML reader (dmpf_cli.yamlio): numbers as YAML 1.2 reads them, what dmpf writes reads back the same, and
hostile documents (alias bombs, recursion, deep nesting, other tags, control characters) are one line."""

from __future__ import annotations

import math

import pytest
import yaml

from dmpf_cli.yamlio import MAX_ALIAS_NODES, YamlError, dump, flow, load

from conftest import one_line


@pytest.mark.parametrize("text, expected", [
    # floats as people write them: no dot needed before an exponent
    ("3e-4", 3e-4), ("1e3", 1000.0), ("-2E+2", -200.0), ("1.5", 1.5), (".5", 0.5), ("1.", 1.0), ("+0.25", 0.25),
    ("1.0e-05", 1e-05), (".inf", math.inf), ("-.Inf", -math.inf), ("+.INF", math.inf),
    # ints stay ints; 010 is ten (YAML 1.1: octal eight); 0o and 0x are YAML 1.2's
    ("42", 42), ("-7", -7), ("+5", 5), ("010", 10), ("0o17", 15), ("0x1F", 31), (str(2**70), 2**70),
    # true/false and null
    ("true", True), ("False", False), ("TRUE", True), ("null", None), ("~", None), ("", None),
    # strings: YAML 1.1's booleans, version numbers, 1.1's sexagesimal and dates, half-numbers
    ("yes", "yes"), ("no", "no"), ("on", "on"), ("off", "off"), ("y", "y"), ("1.2.3", "1.2.3"), ("3e", "3e"),
    ("e3", "e3"), ("1_000", "1_000"), ("1:30", "1:30"), ("2024-01-01", "2024-01-01"), (".", "."), ("=", "="),
    ("0b101", "0b101"), ("-0x1", "-0x1"), ("nan", "nan"), ("inf", "inf"),
])
def test_plain_scalars_resolve_by_yaml_1_2(text, expected):
    value = load(f"key: {text}\n", "f.yaml")["key"]
    assert value == expected and type(value) is type(expected)


def test_nan_and_numbers_inside_collections():
    assert math.isnan(load("x: .nan", "f.yaml")["x"])
    assert load("lr: [3e-4, 1e-3]\nopts: {t: 2e-1, n: 3}\n", "f.yaml") == {"lr": [3e-4, 1e-3],
                                                                             "opts": {"t": 0.2, "n": 3}}


ROUND_TRIP = [
    "3e-4", "1e3", "010", "0x1F", "0o7", "1.2.3", "yes", "no", "true", "True", "null", "~", "", " padded ", "=",
    "2024-01-01", "1:30", ".inf", ".nan", "a b", "it's", "#not a comment", "- dash", "a: b", "[1]",
    1e-05, 3e-4, 0.1, 1e16, -0.0, math.inf, -math.inf, 0, -5, 2**70, True, False, None,
    [1, "3e-4", 3e-4, {"a": "no", "b": 1e-5}], {"nested": {"lr": 1e-4, "name": "010"}}, [], {},
]


@pytest.mark.parametrize("value", ROUND_TRIP, ids=[repr(v) for v in ROUND_TRIP])
def test_what_dmpf_writes_reads_back_the_same_here_and_in_yaml_1_1_readers(value):
    assert load(flow(value), "override") == value
    assert load(dump({"key": value}), "config.yaml") == {"key": value}
    assert yaml.safe_load(dump({"key": value})) == {"key": value}  # PyYAML's own reader (YAML 1.1) agrees


def test_nan_round_trips():
    assert math.isnan(load(flow(math.nan), "override")) and math.isnan(load(dump([math.nan]), "f")[0])


def test_dump_keeps_key_order_and_flow_is_one_line():
    text = dump({"z": 1, "a": {"lr": 3e-4}, "m": [1, 2]})
    assert text == "z: 1\na: {lr: 0.0003}\nm: [1, 2]\n"  # flow style for leaf collections, as to_yaml always wrote
    assert flow({"b": [1e-5, "3e-4"]}) == "{b: [1.0e-05, '3e-4']}"


def test_the_merge_key_still_merges():
    assert load("base: &b {lr: 3e-4, d: 8}\nrun: {<<: *b, d: 16}\n", "f.yaml")["run"] == {"lr": 3e-4, "d": 16}


BILLION_LAUGHS = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


@pytest.mark.parametrize("text, fragments", [
    (BILLION_LAUGHS, ["its aliases expand it by 490,329,036 nodes", f"more than the {MAX_ALIAS_NODES:,}"]),
    ("a: &a [*a]\n", ["an alias refers to a node that contains it"]),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", ["nested too deeply"]),
    ("a: !!binary aGVsbG8=\n", ["line 1, column 4", "tag:yaml.org,2002:binary is not plain data"]),
    ("a: !!timestamp 2024-01-01\n", ["tag:yaml.org,2002:timestamp is not plain data"]),
    ("a: !!set {x}\n", ["tag:yaml.org,2002:set is not plain data"]),
    ("a: !!python/object:os.system {}\n", ["is not plain data"]),
    ("a: b\x00\n", ["character 5: special characters are not allowed"]),
    ("a: [1, 2\n", ["invalid YAML: line 2, column 1"]),
    ("{[1]: 2}\n", ["found unhashable key"]),
])
def test_hostile_documents_are_one_line_naming_the_file(text, fragments):
    with pytest.raises(YamlError) as err:
        load(text, "/some/where.yaml")
    message = one_line(err)
    assert message.startswith("/some/where.yaml: ")
    for fragment in fragments:
        assert fragment in message


def test_aliases_that_repeat_little_are_read():
    text = "x: &x [" + ", ".join(["1"] * 100) + "]\n" + "".join(f"k{i}: *x\n" for i in range(MAX_ALIAS_NODES // 101))
    assert len(load(text, "f.yaml")) == 1 + MAX_ALIAS_NODES // 101
    with pytest.raises(YamlError):
        load(text + "".join(f"more{i}: *x\n" for i in range(2)), "f.yaml")
