"""dmpf predict / eval on bad or odd input: unwritable outputs, nothing to score, unfinished runs, strict samples."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import dmpf, error_line, one_line

AUDIO, VISION = 74, 35  # the tiny synthetic dataset's feature dims


def sample(sample_id="a", seed=0, **fields) -> dict:
    rng = np.random.default_rng(seed)
    return {"id": sample_id, "raw_text": "the film was great", "audio": rng.normal(size=(3, AUDIO)).tolist(),
            "vision": rng.normal(size=(2, VISION)).tolist(), **fields}


def jsonl(path, *records) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


# -- 1: an unwritable --output fails before any work ------------------------------------------------

@pytest.mark.parametrize(
    "where, fragments",
    [
        (lambda tmp: "/proc/preds.csv", ["--output: /proc/preds.csv", "cannot create a file in /proc"]),
        (lambda tmp: tmp / "a-dir.csv", ["--output:", "a-dir.csv: is a directory"]),
        (lambda tmp: tmp / "input.jsonl" / "preds.csv", ["--output:", "input.jsonl is not a directory"]),
    ],
    ids=["proc", "directory", "parent-is-a-file"],
)
def test_unwritable_output_is_refused_before_the_run_is_loaded(invoke, trained, tmp_path, monkeypatch, where,
                                                              fragments):
    source = jsonl(tmp_path / "input.jsonl", sample())
    (tmp_path / "a-dir.csv").mkdir()
    import dmpf_cli.recipes.evaluate as evaluate

    def never(*args, **kwargs):
        raise AssertionError("the run was loaded although --output cannot be written")

    monkeypatch.setattr(evaluate, "load_trained", never)
    result = invoke("predict", "--run", trained, "--input", source, "--output", where(tmp_path))
    error_line(result.exit_code, result.stderr, *fragments)
    assert leftovers(tmp_path) == []


def test_the_input_file_is_never_the_output(invoke, trained, tmp_path):
    source = tmp_path / "samples.jsonl"
    jsonl(source, sample())
    before = source.read_text()
    result = invoke("predict", "--run", trained, "--input", source, "--output", tmp_path / "." / "samples.jsonl")
    error_line(result.exit_code, result.stderr, "--output:", "samples.jsonl is the --input file")
    assert source.read_text() == before


def test_a_write_error_after_scoring_is_one_line_and_leaves_nothing(invoke, trained, tmp_path, monkeypatch):
    import pathlib

    source = jsonl(tmp_path / "input.jsonl", sample())
    out = tmp_path / "out" / "preds.csv"

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", disk_full)
    result = invoke("predict", "--run", trained, "--input", source, "--output", out)
    error_line(result.exit_code, result.stderr, f"--output: {out}: cannot write (No space left on device)")
    assert not out.exists() and leftovers(out.parent) == []


def test_a_missing_output_folder_is_made(trained, tmp_path):
    out = tmp_path / "new" / "sub" / "preds.jsonl"
    dmpf("predict", "--run", trained, "--input", jsonl(tmp_path / "input.jsonl", sample()), "--output", out)
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["a"]
    assert leftovers(out.parent) == []


# -- 2: nothing scored is an error; a .json array of samples is read as one ---------------------------

def test_an_empty_input_is_an_error_and_writes_nothing(invoke, trained, tmp_path):
    out = tmp_path / "preds.csv"
    for name, text in (("empty.jsonl", ""), ("blank.jsonl", "\n  \n"), ("empty.json", "[ ]\n")):
        (tmp_path / name).write_text(text)
        result = invoke("predict", "--run", trained, "--input", tmp_path / name, "--output", out)
        error_line(result.exit_code, result.stderr, f"--input: {tmp_path / name}: nothing to score: it holds no samples")
        assert not out.exists()


def test_all_samples_malformed_is_an_error_after_the_warnings(invoke, trained, tmp_path):
    source = jsonl(tmp_path / "bad.jsonl", "{not json", {"id": "b"}, sample("c", raw_text=3))
    out = tmp_path / "preds.csv"
    result = invoke("predict", "--run", trained, "--input", source, "--output", out)
    assert result.exit_code == 2 and not out.exists() and result.stdout == ""
    lines = result.stderr.splitlines()
    assert [w.split(":")[2] for w in warnings(result.stderr)] == ["1", "2", "3"]
    assert lines[3:] == [f"error: --input: {source}: nothing to score: every sample is malformed "
                         "(3 skipped, see the warnings above)"]
    assert "Traceback" not in result.stderr


def test_a_pretty_printed_json_array_is_read_as_samples(trained, tmp_path):
    records = [sample("a"), sample("b", seed=1), sample("c", seed=2)]
    as_array = tmp_path / "samples.json"
    as_array.write_text(json.dumps(records, indent=2))
    as_lines = jsonl(tmp_path / "samples.jsonl", *records)
    result = dmpf("predict", "--run", trained, "--input", as_array)
    assert result.stderr == "" and result.stdout == dmpf("predict", "--run", trained, "--input", as_lines).stdout
    assert [line.split(",")[0] for line in result.stdout.splitlines()] == ["id", "a", "b", "c"]


def test_a_json_array_reports_bad_items_by_line(invoke, trained, tmp_path):
    source = tmp_path / "samples.json"
    source.write_text("[\n" + json.dumps(sample("a")) + ",\n" + json.dumps(sample(None)) + ",\n 7\n]\n")
    result = invoke("predict", "--run", trained, "--input", source)
    assert result.exit_code == 0 and [line.split(",")[0] for line in result.stdout.splitlines()] == ["id", "a"]
    assert warnings(result.stderr) == [
        f"warning: skipped {source}:3: id: expected a non-empty string or an integer, got null",
        f"warning: skipped {source}:4: expected a JSON object, got 7",
    ]
    failed = invoke("predict", "--run", trained, "--input", source, "--on-error", "fail")
    error_line(failed.exit_code, failed.stderr, f"{source}:3: id: expected a non-empty string")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[\n{}\n{}\n]", ":3: not a valid JSON array (expected ',' or ']' after an item)"),
        ("[\n{},\n]", ":3: not a valid JSON array (Expecting value, column 1)"),
        ("[{}]\n[{}]\n", ":2: not a valid JSON array (extra data after the array)"),
    ],
    ids=["missing-comma", "trailing-comma", "two-arrays"],
)
def test_a_broken_json_array_is_one_line(invoke, trained, tmp_path, text, fragment):
    source = tmp_path / "broken.json"
    source.write_text(text)
    result = invoke("predict", "--run", trained, "--input", source, "--output", tmp_path / "p.csv")
    error_line(result.exit_code, result.stderr, f"--input: {source}{fragment}")
    assert not (tmp_path / "p.csv").exists()


# -- 3: an unfinished run is scored with a warning ----------------------------------------------------

@pytest.fixture(scope="module")
def unfinished(trained, tmp_path_factory):
    """The tiny run as a killed one leaves it: a best checkpoint, run.json still "running"."""
    root = tmp_path_factory.mktemp("killed") / "run"
    shutil.copytree(trained, root)
    status = json.loads((root / "run.json").read_text())
    status["status"] = "running"
    del status["finished"]
    (root / "run.json").write_text(json.dumps(status))
    (root / "results.json").unlink()
    return root


def test_eval_warns_about_an_unfinished_run_and_reports_its_status(invoke, trained, unfinished):
    result = invoke("eval", "--run", unfinished, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert warnings(result.stderr) == result.stderr.splitlines() == [
        f"warning: {unfinished} is unfinished (status running): scoring its best checkpoint so far"]
    out = json.loads(result.stdout)
    assert out["run_status"] == "running"
    finished = invoke("eval", "--run", trained, "--format", "json")
    assert finished.exit_code == 0 and finished.stderr == ""
    assert json.loads(finished.stdout)["run_status"] == "finished"
    assert out["metrics"] == json.loads(finished.stdout)["metrics"]  # the same best checkpoint


def test_predict_warns_about_an_unfinished_run(invoke, unfinished, tmp_path):
    result = invoke("predict", "--run", unfinished, "--input", jsonl(tmp_path / "in.jsonl", sample()))
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"warning: {unfinished} is unfinished (status running): scoring its best checkpoint so far"]
    assert [line.split(",")[0] for line in result.stdout.splitlines()] == ["id", "a"]


def test_eval_and_predict_warn_when_the_backbone_is_not_the_trained_one(invoke, trained, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(trained, root)
    status = json.loads((root / "run.json").read_text())
    status["backbone_fingerprint"] = "0123456789abcdef"
    status["versions"]["transformers"] = "5.0.0"
    (root / "run.json").write_text(json.dumps(status))
    import transformers

    expected = [f"warning: the frozen backbone's weights differ from the ones {root} trained with (fingerprint "
                f"cb22dbd65577217d now, 0123456789abcdef then; transformers 5.0.0 then, {transformers.__version__} "
                "now): the scores are not the trained model's"]
    scored = invoke("eval", "--run", root, "--format", "json")
    assert scored.exit_code == 0 and scored.stderr.splitlines() == expected
    predicted = invoke("predict", "--run", root, "--input", jsonl(tmp_path / "in.jsonl", sample()))
    assert predicted.exit_code == 0 and predicted.stderr.splitlines() == expected


def test_a_run_file_instead_of_its_directory_says_so(invoke, trained):
    for command in (["eval"], ["predict", "--input", trained / "run.json"]):
        result = invoke(*command, "--run", trained / "config.yaml")
        error_line(result.exit_code, result.stderr, f"--run: {trained / 'config.yaml'} is a file; pass the run "
                   "directory that holds it")


# -- 4: strict samples ---------------------------------------------------------------------------------

def test_sample_values_are_checked_strictly(invoke, trained, tmp_path):
    frames = sample()["audio"]
    flagged = [row[:] for row in frames]
    flagged[1][5] = True
    huge = [row[:] for row in frames]
    huge[2][3] = 1e39
    np.save(tmp_path / "nan.npy", np.full((2, VISION), np.nan, dtype=np.float32))
    np.save(tmp_path / "wide.npy", np.full((2, VISION), 1e39, dtype=np.float64))
    records = [
        sample("ok"),
        sample(None),
        sample(""),
        sample(True),
        sample(1.5),
        sample("flag", audio=flagged),
        sample("huge", audio=huge),
        sample("bigint", audio=[[10 ** 400] * AUDIO]),
        '{"id": "inf", "raw_text": "x", "audio": [[' + "1.0, " * (AUDIO - 1) + 'Infinity]], "vision": '
        + json.dumps(sample()["vision"]) + "}",
        sample("nan-npy", vision="nan.npy"),
        sample("wide-npy", vision="wide.npy"),
        sample("ragged", audio=[[0.0] * AUDIO, [0.0] * (AUDIO - 1)]),
        sample(7, seed=1),
    ]
    source = jsonl(tmp_path / "samples.jsonl", *records)
    result = invoke("predict", "--run", trained, "--input", source)
    assert result.exit_code == 0, result.stderr
    assert "RuntimeWarning" not in result.stderr and "Traceback" not in result.stderr
    assert warnings(result.stderr) == result.stderr.splitlines()
    assert [w.removeprefix(f"warning: skipped {source}:") for w in warnings(result.stderr)] == [
        "2: id: expected a non-empty string or an integer, got null",
        '3: id: expected a non-empty string or an integer, got ""',
        "4: id: expected a non-empty string or an integer, got true",
        "5: id: expected a non-empty string or an integer, got 1.5",
        "6: audio: frame 1, value 5: expected a number, got true",
        "7: audio: frame 2, value 3: expected a number within float32's range (±3.403e+38), got 1e+39",
        f"8: audio: frame 0, value 0: expected a number within float32's range (±3.403e+38), got {'1' + '0' * 36}...",
        f"9: audio: frame 0, value {AUDIO - 1}: expected a finite number, got inf",
        f"10: vision: {tmp_path / 'nan.npy'}: frame 0, value 0: expected a finite number, got nan",
        f"11: vision: {tmp_path / 'wide.npy'}: frame 0, value 0: expected a number within float32's range "
        "(±3.403e+38), got 1e+39",
        f"12: audio: expected frames of {AUDIO} numbers each, got frames of {AUDIO - 1} to {AUDIO} numbers",
    ]
    assert [line.split(",")[0] for line in result.stdout.splitlines()] == ["id", "ok", "7"]  # an int id is kept
    failed = invoke("predict", "--run", trained, "--input", source, "--on-error", "fail")
    error_line(failed.exit_code, failed.stderr, f"{source}:2: id: expected a non-empty string or an integer")


def test_duplicate_ids_get_one_warning(invoke, trained, tmp_path):
    source = jsonl(tmp_path / "samples.jsonl", sample("a"), sample("b", seed=1), sample("a", seed=2),
                   sample("b", seed=3), sample("a", seed=4))
    result = invoke("predict", "--run", trained, "--input", source)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"warning: {source}: 3 sample(s) repeat an earlier id, the first 'a' (line 3 repeats line 1); every row is "
        "scored, so ids in the output are not unique"]
    assert [line.split(",")[0] for line in result.stdout.splitlines()] == ["id", "a", "b", "a", "b", "a"]
    unique = invoke("predict", "--run", trained, "--input", jsonl(tmp_path / "u.jsonl", sample("a"), sample("b")))
    assert unique.exit_code == 0 and unique.stderr == ""


@pytest.mark.parametrize("name, text, fragment", [
    ("deep.jsonl", '{"id": 1, "audio": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "deep.jsonl:1: not a JSON object: "
                                                                              "nested too deeply"),
    ("deep.json", "[" + "[" * 100_000 + "]" * 100_000 + "]", "deep.json:1: not a valid JSON array (an item nested "
                                                             "too deeply)"),
], ids=["jsonl", "json-array"])
def test_json_nested_too_deeply_is_one_line(tmp_path, name, text, fragment):
    from dmpf_cli.data.samples import InputError, read_jsonl

    source = tmp_path / name
    source.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as err:
        list(read_jsonl(source, (74, 35), "fail", warn=pytest.fail))
    assert fragment in one_line(err)
