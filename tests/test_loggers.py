"""Metric loggers (``training.loggers``, registry kind ``logger``): what TensorBoard and wandb hold is metrics.jsonl,
a resumed run logs no step twice, a missing package is refused before any run directory, plugins get the records."""

from __future__ import annotations

import glob
import json
import struct
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

from dmpf_cli import registry
from dmpf_cli.config import ConfigError, load_config
from dmpf_cli.recipes import runs
from dmpf_cli.recipes.loggers import JsonlLogger, Logger, logger_names, open_loggers
from dmpf_cli.recipes.train import gate_values, model_gates
from dmpf_cli.store.run import RunDir

from conftest import TINY, error_line, make_model

CPU = [*TINY, "training.device=cpu"]


class Stop(Exception):
    """Stands in for a kill: raised by the recorder at a chosen step, after jsonl and TensorBoard logged it."""


class Recorder(Logger):
    """A plugin-style logger that keeps what it is given."""

    stop_at: int | None = None  # raise Stop on the step record of this step
    opened: list[Recorder] = []

    def __init__(self, resume_step):
        self.resume_step, self.records, self.images, self.closed = resume_step, [], [], False

    def log(self, record):
        self.records.append(json.loads(json.dumps(record)))
        if record["kind"] == "step" and record["step"] == Recorder.stop_at:
            raise Stop

    def image(self, tag, path):
        self.images.append((tag, Path(path)))

    def close(self):
        self.closed = True


@pytest.fixture(scope="module", autouse=True)
def recorder_plugin():
    """``recorder``, registered as a plugin registers a logger; removed again after this module."""

    @registry.register("logger", "recorder")
    def recorder(cfg, run, *, resume_step):
        """Keeps the records (tests)."""
        logger = Recorder(resume_step)
        Recorder.opened.append(logger)
        return logger

    yield
    registry._registry["logger"].pop("recorder", None)


@pytest.fixture(autouse=True)
def fresh_recorder():
    Recorder.stop_at, Recorder.opened = None, []


def train(output: Path, *overrides: str, resume: bool = False) -> dict:
    cfg = load_config(overrides=[*CPU, *overrides])
    return runs.train(cfg, None if resume else output, None if resume else [1111], resume=output if resume else None,
                      console=Console(quiet=True))


def lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def expected_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar a logger should show, by tag, as (optimizer step, value): metrics.jsonl and results.json."""
    out: dict[str, list[tuple[int, float]]] = {}

    def add(tag, step, value):
        out.setdefault(tag, []).append((step, value))

    for r in lines(run):
        if r["kind"] == "step":
            for part, value in r["parts"].items():
                add(f"loss/{part}", r["step"], value)
            add("lr/lm", r["step"], r["lr_lm"])
            add("lr/encoders", r["step"], r["lr_encoders"])
            add("train/grad_norm", r["step"], r["grad_norm"])
            add("train/samples_per_s", r["step"], r["samples_per_s"])
            for gate, value in r["gates"].items():
                add(f"gates/{gate}", r["step"], value)
        else:
            for metric, value in r["valid"].items():
                add(f"valid/{metric}", r["step"], value)
    results = json.loads((run / "results.json").read_text())
    for metric, value in results["test"].items():
        add(f"test/{metric}", results["steps"], value)
    return out


def tensorboard_events(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def assert_same_scalars(shown: dict[str, list[tuple[int, float]]], run: Path) -> None:
    expected = expected_scalars(run)
    assert set(shown) == set(expected)
    for tag, points in expected.items():
        steps = [s for s, _ in shown[tag]]
        assert steps == [s for s, _ in points], tag  # every step once, in order
        assert [v for _, v in shown[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag


# -- a whole run -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("loggers") / "run"
    Recorder.opened = []
    train(root, "training.loggers=[tensorboard,recorder]")
    (recorder,) = Recorder.opened
    return root, recorder


@pytest.mark.slow
def test_tensorboard_holds_metrics_jsonl(finished):
    pytest.importorskip("tensorboard")
    root, _ = finished
    events = tensorboard_events(root)
    shown = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert_same_scalars(shown, root)
    cfg = load_config(config=root / "config.yaml")
    gates = {tag for tag in shown if tag.startswith("gates/")}
    assert gates == {f"gates/block{i}/{g}" for i in cfg.mm.layers for g in ("xattn_a", "xattn_v", "xattn_av", "ffn")}
    assert all(0 < v < 1 for tag in gates for _, v in shown[tag])  # sigmoid gates
    (image,) = events.Images("curves")
    from PIL import Image

    assert image.step == json.loads((root / "results.json").read_text())["steps"]
    assert (image.width, image.height) == Image.open(root / "curves.png").size


@pytest.mark.slow
def test_a_plugin_logger_gets_every_record(finished):
    root, recorder = finished
    records = lines(root)
    assert recorder.resume_step is None and recorder.closed
    assert recorder.records[:-1] == records  # exactly metrics.jsonl's records, in order
    assert {"kind": "step", "gates": recorder.records[0]["gates"]}.items() <= recorder.records[0].items()
    results = json.loads((root / "results.json").read_text())
    assert recorder.records[-1] == {"kind": "test", "step": results["steps"], "test": results["test"]}
    assert recorder.images == [("curves", RunDir(root).curves)]


@pytest.mark.slow
def test_a_resumed_run_logs_no_step_twice(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    root = tmp_path / "run"
    overrides = ("training.loggers=[tensorboard,recorder]", "training.checkpoint_every=4")
    Recorder.stop_at = 10  # epoch 2; the last checkpoint is at step 8
    with pytest.raises(Stop):
        train(root, *overrides)
    assert RunDir(root).read_status()["status"] == "running"
    assert [r["step"] for r in lines(root)][-1] == 10
    Recorder.stop_at = None
    train(root, resume=True)
    assert Recorder.opened[-1].resume_step == 8
    events = tensorboard_events(root)
    shown = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert_same_scalars(shown, root)  # steps 9 and 10 once each, with the resumed run's values
    written = [e.step for path in sorted((root / "tensorboard").iterdir())
               for e in EventFileLoader(str(path)).Load() if any(v.tag == "loss/total" for v in e.summary.value)]
    assert written.count(9) == written.count(10) == 2  # both processes wrote them; TensorBoard purged the first


# -- refusals, fast ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, module", [("tensorboard", "torch.utils.tensorboard"), ("wandb", "wandb")])
def test_a_missing_package_is_refused_before_the_run_directory(invoke, tmp_path, monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    result = invoke("train", "--output", tmp_path / "r", *CPU, f"training.loggers=[jsonl,{name}]")
    error_line(result.exit_code, result.stderr,
               f"training.loggers: '{name}' needs the {name} package: pip install dmpf[{name}]")
    assert not (tmp_path / "r").exists()


def test_unknown_and_repeated_logger_names(invoke):
    result = invoke("config", "show", "training.loggers=[jsonl,tensorbord]")
    error_line(result.exit_code, result.stderr, "training.loggers: unknown logger 'tensorbord': did you mean "
               "'tensorboard'?", "available: ", "wandb")
    with pytest.raises(ConfigError, match="training.loggers: must not repeat a logger"):
        load_config(overrides=["training.loggers=[tensorboard,tensorboard]"])


def test_logger_names_put_jsonl_first_always():
    assert logger_names([]) == logger_names(["jsonl"]) == ["jsonl"]
    assert logger_names(["tensorboard", "jsonl", "wandb"]) == ["jsonl", "tensorboard", "wandb"]
    assert load_config().training.loggers == ["jsonl"]
    assert "jsonl" in registry.names("logger") and {"tensorboard", "wandb"} <= set(registry.names("logger"))


def test_records_fan_out_and_jsonl_keeps_the_loop_records_only(tmp_path):
    run = RunDir(tmp_path)
    run.metrics.write_text("")
    loggers = open_loggers(load_config(overrides=["training.loggers=[recorder]"]), run, resume_step=3)
    assert [type(logger) for logger in loggers.loggers] == [JsonlLogger, Recorder]
    sent = [{"kind": "step", "epoch": 0, "step": 4, "parts": {"total": 1.0}}, {"kind": "epoch", "epoch": 0, "step": 4,
            "valid": {"MAE": 0.5}}, {"kind": "test", "step": 4, "test": {"MAE": 0.4}}]
    for record in sent:
        loggers.log(record)
    loggers.image("curves", tmp_path / "curves.png")
    loggers.close()
    (recorder,) = Recorder.opened
    assert recorder.records == sent and recorder.resume_step == 3 and recorder.closed
    assert recorder.images == [("curves", tmp_path / "curves.png")]
    assert [json.loads(line) for line in run.metrics.read_text().splitlines()] == sent[:2]


@pytest.mark.parametrize("gate", ["sigmoid", "tanh"])
def test_gate_values_are_what_each_gate_applies(gate):
    model = make_model(f"mm.gate={gate}")
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 0:
                p.uniform_(-2, 2)
    gates = model_gates(model)
    assert set(gates) == {f"block{i}/{g}" for i in (1, 3) for g in ("xattn_a", "xattn_v", "xattn_av", "ffn")}
    values = gate_values(gates)
    block = model.lm.mm["3"]
    squash = torch.sigmoid if gate == "sigmoid" else torch.tanh
    assert values["block3/xattn_av"] == pytest.approx(float(squash(block.xgate["audio_visual"].alpha.detach())))
    assert values["block3/ffn"] == pytest.approx(float(squash(block.ffn_gate.alpha.detach())))


# -- wandb, offline ----------------------------------------------------------------------------------

def wandb_records(path: Path):
    """The protobuf records of an offline run's ``.wandb`` file: a 7-byte header (":W&B", magic, version), then
    LevelDB log records (crc, length, type; full or split across 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", "not a wandb transaction log (its format changed?)"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_history(offline: Path) -> tuple[str, dict[int, dict[str, object]]]:
    (log,) = offline.glob("run-*.wandb")
    run_id, rows = None, {}
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_id = record.run.run_id
        elif kind == "history":
            row = {}
            for item in record.history.item:
                key, value = item.key or "/".join(item.nested_key), json.loads(item.value_json)
                # wandb 0.17 keeps a media value as one dict, later ones flatten it: curves/_type
                row.update({f"{key}/{k}": v for k, v in value.items()} if isinstance(value, dict) else {key: value})
            rows[row.get("_step", record.history.step.num)] = row  # wandb 0.17 leaves step.num at 0
    return run_id, rows


@pytest.mark.slow
def test_wandb_offline_run_holds_the_scalars_and_resumes_the_same_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    root = tmp_path / "run"
    Recorder.stop_at = 10
    with pytest.raises(Stop):
        train(root, "training.loggers=[wandb,recorder]", "training.checkpoint_every=4")
    Recorder.stop_at = None
    train(root, resume=True)
    run_id = RunDir(root).read_status()["wandb_id"]
    first, second = sorted(Path(p) for p in glob.glob(str(root / "wandb" / f"offline-run-*-{run_id}")))
    (_, before), (resumed_id, after) = wandb_history(first), wandb_history(second)
    assert resumed_id == run_id  # the same wandb run, continued
    assert max(before) == 10 and min(after) == 9  # the resumed run logs again from its checkpoint's next step
    rows = {**before, **after}
    for tag, points in expected_scalars(root).items():
        assert [rows[step][tag] for step, _ in points] == pytest.approx([v for _, v in points], rel=1e-6), tag
    assert rows[12]["curves/_type"] == "image-file"  # wandb flattens the image's description
    assert list((second / "files" / "media" / "images").glob("curves_*.png"))
