"""``dmpf report`` and the statistics under it: fake-but-real run directories written on disk (config, run.json,
results.json from compute_metrics, predictions.npz), so every expected number is known."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest

from dmpf_cli.config import load_config, to_yaml
from dmpf_cli.experiments.report import PAPER_METRICS, build_report
from dmpf_cli.experiments.report_compare import RESAMPLES
from dmpf_cli.experiments.report_render import layout, render
from dmpf_cli.experiments.report_rows import ReportError
from dmpf_cli.experiments.stats import betainc, paired_bootstrap, paired_t, t_cdf, t_quantile, t_two_sided_p
from dmpf_cli.metrics import METRIC_KEYS, batch_metrics, compute_metrics
from dmpf_cli.store.checkpoints import save_predictions
from dmpf_cli.store.run import RunDir

from conftest import error_line, one_line

N = 300
IDS = [f"clip{i:04d}" for i in range(N)]
LABELS = (np.round(np.random.default_rng(0).uniform(-3, 3, N) * 3) / 3).astype(np.float32)


def noise(seed: int, scale: float = 0.8) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, scale, N).astype(np.float32)


def write_run(path, seed, pred, *, overrides=(), label=LABELS, ids=IDS, dataset="synthetic",
              backbone="gpt2-demo (dmpf's own)", finished=True, predictions=True):
    """A run directory as dmpf train leaves it, without training: its test scores are ``pred``."""
    cfg = load_config(overrides=[*overrides, f"training.seeds=[{seed}]"])
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
    run = RunDir(path)
    run.write_status(status="finished" if finished else "running", seed=seed)
    if finished:
        test = compute_metrics(pred, label, dataset)
        run.results.write_text(json.dumps({"seed": seed, "best_epoch": 0, "epochs": 1, "test": test, "valid": test,
                                           "backbone": backbone, "dataset": dataset}), encoding="utf-8")
        if predictions:
            save_predictions(run.predictions, {"test": (ids, pred, label)})
    return path


def write_root(root, seeds, make_pred, *, overrides=(), unfinished=(), **kw):
    """A multi-seed root (dmpf train --seeds): config.yaml, seeds.json, seed-N/."""
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(to_yaml(load_config(overrides=list(overrides))), encoding="utf-8")
    (root / "seeds.json").write_text(json.dumps({"seeds": list(seeds)}), encoding="utf-8")
    for s in seeds:
        write_run(root / f"seed-{s}", s, make_pred(s), overrides=overrides, finished=s not in unfinished, **kw)
    return root


def write_grid(root, variants, *, baseline, name="ablation"):
    """A grid directory: {variant: (overrides, {seed: pred})} → VARIANT/seed-N run directories and grid.json."""
    record = {"name": name, "baseline": baseline, "variants": {}}
    for variant, (overrides, preds) in variants.items():
        record["variants"][variant] = {"overrides": list(overrides), "runs": {}}
        for seed, pred in preds.items():
            rel = f"{variant}/seed-{seed}"
            if pred is not None:
                write_run(root / rel, seed, pred, overrides=overrides)
            record["variants"][variant]["runs"][str(seed)] = rel
    root.mkdir(parents=True, exist_ok=True)
    (root / "grid.json").write_text(json.dumps(record), encoding="utf-8")
    return root


SEEDS = (1111, 1112, 1113, 1114)


@pytest.fixture
def shifted(tmp_path):
    """Baseline: label + noise; variant: label + 0.7·noise on the same seeds — lower MAE by 0.3·mean|noise|."""
    base = write_root(tmp_path / "full", SEEDS, lambda s: LABELS + noise(s))
    variant = write_root(tmp_path / "better", SEEDS, lambda s: LABELS + np.float32(0.7) * noise(s),
                         overrides=["fusion.n_av=6"])
    return base, variant


# -- statistics ------------------------------------------------------------------------------------

@pytest.mark.parametrize("q, df, expected", [
    (0.975, 4, 2.7764), (0.975, 1, 12.706), (0.975, 29, 2.0452), (0.975, 2, 4.3027), (0.95, 10, 1.8125),
    (0.995, 5, 4.0321), (0.975, 1000, 1.9623),
])
def test_t_quantiles_match_the_tables(q, df, expected):
    assert t_quantile(q, df) == pytest.approx(expected, abs=6e-4)
    assert t_quantile(1 - q, df) == pytest.approx(-expected, abs=6e-4)
    assert t_cdf(t_quantile(q, df), df) == pytest.approx(q, abs=1e-10)


@pytest.mark.parametrize("t", [-40.0, -3.0, -0.7, 0.0, 0.2, 1.0, 6.0])
def test_t_cdf_closed_forms(t):
    assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)  # Cauchy
    assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    assert t_two_sided_p(t, 3) == pytest.approx(2 * min(t_cdf(t, 3), 1 - t_cdf(t, 3)), abs=1e-12)


def test_incomplete_beta_known_values():
    assert betainc(2, 3, 0.4) == pytest.approx(0.5248, abs=1e-12)  # Σ_{j≥2} C(4,j) 0.4^j 0.6^(4-j)
    assert betainc(1, 1, 0.3) == pytest.approx(0.3, abs=1e-14)
    assert betainc(5, 1, 0.5) == pytest.approx(0.5 ** 5, abs=1e-14)
    assert betainc(7.5, 7.5, 0.5) == pytest.approx(0.5, abs=1e-12)
    assert betainc(0.5, 0.5, 0.25) == pytest.approx(2 / math.pi * math.asin(0.5), abs=1e-12)
    assert betainc(3, 2, 0.0) == 0.0 and betainc(3, 2, 1.0) == 1.0


def test_paired_t_by_hand():
    d = [0.10, 0.20, 0.15, 0.12]
    t = paired_t(d)
    mean, sd = 0.1425, math.sqrt(0.005675 / 3)
    half = 3.182446305284 * sd / 2  # t_{0.975,3} · sd / √4
    assert (t.n, t.df) == (4, 3) and t.mean == pytest.approx(mean)
    assert (t.low, t.high) == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert t.p == pytest.approx(t_two_sided_p(mean / (sd / 2), 3)) and 0.005 < t.p < 0.01
    same = paired_t([0.0, 0.0, 0.0])
    assert (same.low, same.high, same.p) == (0.0, 0.0, 1.0)
    with pytest.raises(ValueError):
        paired_t([0.3])


def test_paired_bootstrap_is_reproducible_and_pairs_rows():
    rng = np.random.default_rng(3)
    a = rng.normal(0, 1, 200)
    b = a + 0.5 + rng.normal(0, 0.1, 200)  # b − a: 0.5 ± small; unpaired, the spread of a would swamp it

    def stat(index):
        return {"diff": b[index].mean(axis=1) - a[index].mean(axis=1)}

    one, two = paired_bootstrap(stat, 200, seed=7), paired_bootstrap(stat, 200, seed=7)
    assert one == two
    r = one["diff"]
    assert r.estimate == pytest.approx((b - a).mean()) and r.low < r.estimate < r.high
    assert r.high - r.low < 0.05 and r.resamples == r.valid == 2000


# -- the vectorised metrics are compute_metrics ----------------------------------------------------

@pytest.mark.parametrize("dataset", ["mosei", "sims"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_metrics_agree_exactly_with_compute_metrics(dataset, dtype):
    rng = np.random.default_rng(11)
    n = 257
    if dataset == "sims":  # values on the bin edges too, where float32 and float64 part ways
        t = rng.choice(np.array([-1, -0.7, -0.3, -0.1, 0, 0.1, 0.5, 0.7, 1]), n).astype(dtype)
        p = rng.normal(0, 0.6, n).astype(dtype)
        p[:40] = rng.choice(np.array([-0.7, -0.1, 0.0, 0.1, 0.7], dtype=dtype), 40)
    else:  # zero labels (Has0 vs Non0), halves for the rounding
        t = (np.round(rng.uniform(-3, 3, n) * 2) / 2).astype(dtype)
        p = rng.normal(0, 1.5, n).astype(dtype)
        p[:30] = np.round(p[:30] * 2) / 2
    index = np.vstack([np.arange(n)[None, :], rng.integers(0, n, (5, n))])
    rows = batch_metrics(p[index], t[index], dataset)
    assert tuple(rows) == METRIC_KEYS[dataset]
    for i, row_index in enumerate(index):
        alone = compute_metrics(p[row_index], t[row_index], dataset)
        for key, value in alone.items():
            assert float(rows[key][i]) == value, (key, i)  # exactly, not approximately


def test_batch_metrics_edge_rows():
    # a row without non-zero labels: Non0 NaN there only; a constant row: Corr 0
    p = np.array([[0.5, -1.0, 2.0], [1.0, 1.0, 1.0]])
    t = np.array([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]])
    rows = batch_metrics(p, t, "mosei", ["Non0_acc_2", "Non0_F1_score", "Corr"])
    assert math.isnan(rows["Non0_acc_2"][0]) and math.isnan(rows["Non0_F1_score"][0])
    assert rows["Non0_acc_2"][1] == compute_metrics(p[1], t[1], "mosei")["Non0_acc_2"]
    assert rows["Corr"][1] == 0.0


# -- rows, differences, tests ----------------------------------------------------------------------

def test_a_known_improvement_is_found_by_both_tests(shifted):
    base, variant = shifted
    report = build_report([base, variant])
    assert [r.name for r in report.rows] == ["full", "better"] and report.baseline == "full"
    assert report.metrics == list(PAPER_METRICS["mosei"])
    row = report.row("better")
    assert row.seeds == list(SEEDS) and report.row("full").comparison is None
    mae = row.comparison["MAE"]
    truth = np.mean([-0.3 * np.abs(noise(s).astype(np.float64)).mean() for s in SEEDS])
    assert mae["diff"] == pytest.approx(truth, abs=1e-6) and mae["better"] is True
    t, boot = mae["paired_t"], mae["bootstrap"]
    assert t["test"] == "paired t over seeds" and t["n"] == 4 and t["df"] == 3 and t["seeds"] == list(SEEDS)
    assert t["low"] < truth < t["high"] < 0 and t["p"] < 0.001
    assert boot["test"] == "paired bootstrap over test samples" and boot["samples"] == N
    assert boot["resamples"] == RESAMPLES and boot["estimate"] == pytest.approx(mae["diff"], abs=1e-12)
    assert boot["low"] < truth < boot["high"] < 0
    corr = row.comparison["Corr"]
    assert corr["diff"] > 0 and corr["better"] is True and corr["bootstrap"]["low"] > 0
    assert not any("reproduce" in note for note in report.notes)


def test_identical_runs_differ_by_exactly_zero(tmp_path):
    preds = {s: LABELS + noise(s) for s in SEEDS[:3]}
    grid = write_grid(tmp_path / "g", {"a": ([], preds), "b": (["mm.gate=tanh"], preds)}, baseline="a")
    report = build_report([grid])
    for c in report.row("b").comparison.values():
        assert c["diff"] == 0.0 and c["better"] is None
        assert (c["paired_t"]["low"], c["paired_t"]["high"], c["paired_t"]["p"]) == (0.0, 0.0, 1.0)
        assert (c["bootstrap"]["low"], c["bootstrap"]["high"]) == (0.0, 0.0)


def test_seeds_that_do_not_match_give_no_t_but_a_bootstrap(tmp_path):
    base = write_root(tmp_path / "base", (1, 2), lambda s: LABELS + noise(s))
    other = write_root(tmp_path / "other", (3, 4), lambda s: LABELS + noise(s), overrides=["mm.gate=tanh"])
    one = write_run(tmp_path / "one", 1, LABELS + noise(9), overrides=["head.d=32"])
    report = build_report([base, other, one])
    t = report.row("other").comparison["MAE"]["paired_t"]
    assert t["low"] is None and t["reason"] == "no shared seeds; a paired t needs 2"
    assert report.row("other").comparison["MAE"]["bootstrap"]["low"] is not None
    assert report.row("one").comparison["MAE"]["paired_t"]["reason"] == "1 shared seed (1); a paired t needs 2"
    md = render(report, "md")
    assert "n/a: no shared seeds; a paired t needs 2" in md and "n/a: 1 shared seed (1)" in md
    # Δ: unpaired, the difference of the means; paired, over the shared seeds only (here seed 1 of 1 and 2)
    assert report.row("other").compared == {"paired": False, "seeds": [3, 4], "baseline_seeds": [1, 2]}
    assert report.row("other").comparison["MAE"]["diff"] == pytest.approx(
        report.row("other").summary["MAE"]["mean"] - report.row("base").summary["MAE"]["mean"])
    assert report.row("one").compared == {"paired": True, "seeds": [1], "baseline_seeds": [1]}
    base_seed_1 = report.row("base").summary["MAE"]["values"][0]
    assert report.row("one").comparison["MAE"]["diff"] == pytest.approx(
        report.row("one").summary["MAE"]["mean"] - base_seed_1)
    assert "| other† (unpaired: 2 vs 2 seeds) |" in md and "| one† (1 paired seed) |" in md


def test_a_baseline_without_finished_runs_compares_nothing(tmp_path):
    grid = write_grid(tmp_path / "g", {"full": ([], {1: None, 2: None}),
                                       "x": (["head.d=8"], {1: LABELS + noise(1), 2: LABELS + noise(2)})},
                      baseline="full")
    report = build_report([grid])
    c = report.row("x").comparison["MAE"]
    assert c["diff"] is None and c["paired_t"]["reason"] == c["bootstrap"]["reason"] == (
        "the baseline has no finished runs")
    assert "full: no finished runs" in report.notes and "2 of 4 runs unfinished" in report.notes[0]
    for fmt in ("md", "latex", "csv", "json"):
        assert render(report, fmt)


def test_runs_of_one_config_form_one_row_named_after_the_first(tmp_path):
    a = write_run(tmp_path / "runs" / "mine-a", 1111, LABELS + noise(1), overrides=["name=first"])
    b = write_run(tmp_path / "runs" / "mine-b", 1112, LABELS + noise(2), overrides=["name=second"])
    c = write_run(tmp_path / "runs" / "other", 1111, LABELS + noise(3), overrides=["head.d=32"])
    report = build_report([a, c, b])
    assert [(r.name, r.seeds) for r in report.rows] == [("mine-a", [1111, 1112]), ("other", [1111])]
    # the same run twice counts once; a seed inside a multi-seed root is named by its root
    root = write_root(tmp_path / "root", (5, 6), lambda s: LABELS + noise(s), overrides=["head.d=8"])
    report = build_report([root / "seed-6", a, root, a])
    assert [(r.name, r.seeds) for r in report.rows] == [("root", [6, 5]), ("mine-a", [1111])]


def test_a_seed_twice_in_a_row_is_an_error(tmp_path):
    a = write_run(tmp_path / "a", 1111, LABELS + noise(1))
    b = write_run(tmp_path / "b", 1111, LABELS + noise(2))
    with pytest.raises(ReportError) as exc:
        build_report([a, b])
    assert "two runs of seed 1111" in one_line(exc)


def test_grid_rows_in_file_order_with_the_grids_baseline_and_an_override(tmp_path):
    grid = write_grid(tmp_path / "g", {
        "no_av": (["fusion.n_av=0"], {1: LABELS + noise(1, 1.0), 2: LABELS + noise(2, 1.0)}),
        "full": ([], {1: LABELS + noise(1), 2: LABELS + noise(2)}),
        "tanh": (["mm.gate=tanh"], {1: LABELS + noise(1, 0.9), 2: None}),  # seed 2 not started yet
    }, baseline="full")
    report = build_report([grid])
    assert [r.name for r in report.rows] == ["no_av", "full", "tanh"] and report.baseline == "full"
    assert report.row("no_av").overrides == ["fusion.n_av=0"] and report.row("full").comparison is None
    assert report.notes[0].startswith("1 of 6 runs unfinished: skipped (") and "tanh/seed-2" in report.notes[0]
    other = build_report([grid], baseline="no_av")
    assert other.baseline == "no_av" and other.row("no_av").comparison is None
    assert other.row("full").comparison["MAE"]["diff"] < 0


def test_two_grids_name_their_rows_by_grid(tmp_path):
    preds = {1: LABELS + noise(1), 2: LABELS + noise(2)}
    g1 = write_grid(tmp_path / "g1", {"full": ([], preds), "x": (["head.d=8"], preds)}, baseline="full", name="one")
    g2 = write_grid(tmp_path / "g2", {"full": ([], preds)}, baseline="full", name="two")
    report = build_report([g1, g2])
    assert [r.name for r in report.rows] == ["one/full", "x", "two/full"] and report.baseline == "one/full"


def test_unfinished_runs_are_counted_and_named(tmp_path):
    root = write_root(tmp_path / "r", (1, 2, 3), lambda s: LABELS + noise(s), unfinished=(2,))
    missing = write_root(tmp_path / "m", (1,), lambda s: LABELS + noise(s), overrides=["head.d=8"])
    (missing / "seeds.json").write_text(json.dumps({"seeds": [1, 7]}))  # seed 7: never started
    report = build_report([root, missing])
    assert report.runs_total == 5 and report.runs_unfinished == 2
    assert report.notes[0] == f"2 of 5 runs unfinished: skipped ({root / 'seed-2'}, {missing / 'seed-7'})"
    assert report.to_json()["runs"] == {"total": 5, "finished": 3, "unfinished": 2}
    for fmt in ("md", "latex"):
        assert "2 of 5 runs unfinished: skipped" in render(report, fmt)


def test_runs_without_stored_predictions_have_no_bootstrap(tmp_path):
    base = write_root(tmp_path / "base", (1, 2), lambda s: LABELS + noise(s))
    old = write_root(tmp_path / "old", (1, 2), lambda s: LABELS + noise(s, 0.5), overrides=["head.d=8"],
                     predictions=False)
    c = build_report([base, old]).row("old").comparison["MAE"]
    assert c["bootstrap"]["low"] is None and "no stored predictions" in c["bootstrap"]["reason"]
    assert c["paired_t"]["low"] is not None


def test_bootstrap_pairs_by_id_and_refuses_other_labels(tmp_path):
    order = np.random.default_rng(5).permutation(N)
    base = write_run(tmp_path / "base", 1, LABELS + noise(1))
    shuffled = write_run(tmp_path / "shuffled", 1, (LABELS + noise(1))[order], label=LABELS[order],
                         ids=[IDS[i] for i in order], overrides=["head.d=8"])
    c = build_report([base, shuffled]).row("shuffled").comparison["MAE"]
    assert c["diff"] == 0.0 and (c["bootstrap"]["low"], c["bootstrap"]["high"]) == (0.0, 0.0)
    other = write_run(tmp_path / "other", 1, LABELS + noise(1), label=LABELS + 1, overrides=["head.d=4"])
    c = build_report([base, other]).row("other").comparison["MAE"]
    assert c["bootstrap"]["low"] is None and "labels differ" in c["bootstrap"]["reason"]


def test_the_report_is_reproducible(shifted):
    assert render(build_report(list(shifted)), "json") == render(build_report(list(shifted)), "json")


def test_sims_defaults_and_chosen_metrics(tmp_path):
    label = np.clip(LABELS / 3, -1, 1).astype(np.float32)
    a = write_run(tmp_path / "a", 1, label + noise(1, 0.3), label=label, dataset="sims",
                  overrides=["data.dataset=sims"])
    report = build_report([a])
    assert report.metrics == list(PAPER_METRICS["sims"]) and report.family == "sims"
    assert build_report([a], metrics=["Corr", "MAE", "Corr"]).metrics == ["Corr", "MAE"]


# -- renderings ------------------------------------------------------------------------------------

def test_markdown_is_two_tables_with_footnotes(shifted):
    md = render(build_report(list(shifted)), "md")
    lines = md.splitlines()
    assert lines[0].startswith("| config | seeds | Has0_acc_2 ↑ |") and "| MAE ↓ |" in lines[0]
    assert lines[1].startswith("|---|---:|")
    assert any(line.startswith("| full† (baseline) | 4 | ") for line in lines)  # † generated data
    assert "| config | metric | Δ | 95% CI, t | p, t | 95% CI, bootstrap |" in lines
    assert any(line.startswith("| better† (4 paired seeds) | Has0_acc_2 ↑ | ") for line in lines)
    assert "paired t over seeds" in md and "paired bootstrap over test samples" in md
    assert "**" in md and " ± " in md and "−" in md  # the best mean in bold; a minus sign, not a hyphen
    best_mae = [line for line in lines if line.startswith("| better† |")][0].split(" | ")[-2]
    assert best_mae.startswith("**")


def test_accuracies_are_percentages_in_tables_and_fractions_in_csv_and_json(shifted):
    report = build_report(list(shifted))
    acc = report.row("full").summary["Has0_acc_2"]["mean"]
    assert 0 < acc < 1
    assert f"{acc * 100:.2f} ±" in render(report, "md")
    rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    assert float(rows[0]["Has0_acc_2_mean"]) == acc
    assert json.loads(render(report, "json"))["rows"][0]["metrics"]["Has0_acc_2"]["mean"] == acc


def test_latex_is_ready_to_paste(shifted):
    tex = render(build_report(list(shifted), metrics=["Has0_acc_2", "MAE"]), "latex")
    for piece in ("\\toprule", "\\midrule", "\\bottomrule", "\\begin{tabular}{lrrr}", "Has0\\_acc\\_2",
                  "$\\pm$", "\\caption{Test results: mean $\\pm$ std over 4 seeds", "paired t over seeds",
                  "paired bootstrap over test samples (2000 resamples)", "\\textbf{", "$\\uparrow$",
                  "$\\downarrow$", "needs \\usepackage{booktabs}", "95\\%"):
        assert piece in tex, piece
    body = tex.replace("\\_", "").replace("\\%", "").replace("\\usepackage{booktabs}", "")
    assert "_" not in body and "%" not in body.split("\n", 1)[1] and "±" not in tex and "−" not in tex
    assert tex.count("\\begin{table}") == tex.count("\\end{table}") == 2


def test_csv_parses_back_with_the_numbers(shifted):
    report = build_report(list(shifted))
    rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    assert [r["config"] for r in rows] == ["full", "better"]
    base, better = rows
    assert base["baseline"] == "yes" and base["n_seeds"] == "4" and base["seeds"] == "1111 1112 1113 1114"
    assert base["MAE_diff"] == "" and base["MAE_t_low"] == ""
    c = report.row("better").comparison["MAE"]
    assert float(better["MAE_mean"]) == report.row("better").summary["MAE"]["mean"]
    assert float(better["MAE_diff"]) == c["diff"] and float(better["MAE_t_p"]) == c["paired_t"]["p"]
    assert float(better["MAE_boot_low"]) == c["bootstrap"]["low"] and better["MAE_t_n"] == "4"


def test_json_round_trips_and_is_strict(shifted, tmp_path):
    report = build_report(list(shifted))
    text = render(report, "json")

    def refuse(name):
        raise AssertionError(f"not JSON: {name}")

    assert json.loads(text, parse_constant=refuse) == report.to_json()
    data = json.loads(text)
    assert data["baseline"] == "full" and data["metrics"] == report.metrics
    assert data["rows"][1]["vs_baseline"]["MAE"]["bootstrap"]["seed"] == 0
    assert set(data["tests"]) == {"diff", "paired_t", "bootstrap"}
    # NaN (Non0 with every label 0) is null
    zero = np.zeros(N, dtype=np.float32)
    z = write_run(tmp_path / "zero", 1, zero + noise(1), label=zero)
    assert json.loads(render(build_report([z]), "json"), parse_constant=refuse)["rows"][0]["metrics"][
        "Non0_acc_2"]["mean"] is None


def test_synthetic_and_random_backbones_are_marked_in_every_format(tmp_path):
    real = write_run(tmp_path / "real", 1, LABELS + noise(1), dataset="mosei", overrides=["data.dataset=mosei"])
    mixed = write_root(tmp_path / "mixed", (1, 2), lambda s: LABELS + noise(s), dataset="mosei",
                       overrides=["data.dataset=mosei", "head.d=8"])
    results = RunDir(mixed / "seed-2").results
    results.write_text(results.read_text().replace("gpt2-demo (dmpf's own)", "gpt2-tiny-random (random init)"))
    synthetic = write_root(tmp_path / "toy", (1,), lambda s: LABELS + noise(s), dataset="synthetic",
                           backbone="gpt2-tiny-random (random init)")
    report = build_report([real, mixed, synthetic])  # mosei and synthetic: one metric family
    md, tex = render(report, "md"), render(report, "latex")
    text = [row[0] for row in layout(report, "text").results.rows]
    assert "| real (baseline) |" in md and "| mixed‡ |" in md and "| toy†‡ |" in md
    assert text == ["real (baseline)", "mixed‡", "toy†‡"]
    assert "† synthetic data generated by dmpf" in md and "‡ a random-init frozen backbone" in md
    assert "mixed: 1 of 2 runs" in md
    assert "toy$^{\\dagger\\ddagger}$" in tex and "mixed$^\\ddagger$" in tex
    rows = {r["config"]: r for r in csv.DictReader(io.StringIO(render(report, "csv")))}
    assert (rows["real"]["synthetic"], rows["real"]["random_backbone"]) == ("no", "no")
    assert (rows["mixed"]["synthetic"], rows["mixed"]["random_backbone"]) == ("no", "mixed")
    assert (rows["toy"]["synthetic"], rows["toy"]["random_backbone"]) == ("yes", "yes")
    data = {r["name"]: r for r in json.loads(render(report, "json"))["rows"]}
    assert data["mixed"]["random_backbone"] is True and data["mixed"]["random_backbone_runs"] == 1
    assert data["toy"]["synthetic"] is True and data["real"]["synthetic"] is False


# -- the command line ------------------------------------------------------------------------------

def test_cli_text_and_formats(invoke, shifted, tmp_path):
    base, variant = shifted
    result = invoke("report", base, variant)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "test results: mean ± std over seeds" in out and "difference to the baseline (full)" in out
    assert "full† (baseline)" in out and "paired bootstrap over test samples" in out
    assert json.loads(invoke("report", base, variant, "--format", "json").stdout)["baseline"] == "full"
    assert invoke("report", base, variant, "-f", "md", "--metrics", "MAE").stdout.startswith(
        "| config | seeds | MAE ↓ |")
    target = tmp_path / "table.tex"
    result = invoke("report", base, variant, "--format", "latex", "--output", target)
    assert result.exit_code == 0 and result.stdout == "" and "\\toprule" in target.read_text()
    error_line(*_err(invoke("report", base, "--format", "latex", "--output", target)), "exists; pass --overwrite")
    assert invoke("report", base, "-f", "csv", "--output", target, "--overwrite").exit_code == 0
    assert target.read_text().startswith("config,baseline,n_seeds")
    text = tmp_path / "table.txt"
    assert invoke("report", base, variant, "--output", text).exit_code == 0
    assert "\x1b[" not in text.read_text() and "full† (baseline)" in text.read_text()


def _err(result):
    return result.exit_code, result.stderr


def test_cli_warns_about_unfinished_runs(invoke, tmp_path):
    root = write_root(tmp_path / "r", (1, 2), lambda s: LABELS + noise(s), unfinished=(2,))
    result = invoke("report", root, "-f", "json")
    assert result.exit_code == 0
    assert result.stderr.startswith("warning: 1 of 2 runs unfinished: skipped")
    assert json.loads(result.stdout)["runs"]["unfinished"] == 1


def test_cli_bad_inputs_are_one_line(invoke, shifted, tmp_path):
    base, variant = shifted
    (tmp_path / "plain").mkdir()
    (tmp_path / "file.txt").write_text("x")
    sims = write_run(tmp_path / "sims", 1, np.clip(LABELS / 3, -1, 1), label=np.clip(LABELS / 3, -1, 1),
                     dataset="sims", overrides=["data.dataset=sims"])
    unfinished = write_root(tmp_path / "u", (1,), lambda s: LABELS, unfinished=(1,))
    cases = [
        ((tmp_path / "missing",), ("missing: no such directory; expected a run directory",)),
        ((tmp_path / "plain",), ("plain: not a run directory (config.yaml, run.json), a multi-seed root",)),
        ((tmp_path / "file.txt",), ("file.txt: a file; expected",)),
        ((base, "--metrics", "MEA"), ("--metrics: unknown metric 'MEA' (did you mean 'MAE'?)", "Corr")),
        ((base, "--metrics", ","), ("--metrics: no metric named",)),
        ((base, variant, "--baseline", "ful"), ("--baseline: no row named 'ful' (did you mean 'full'?)",
                                                "the rows: full, better")),
        ((base, sims), ("different metric families", "mosei family: full", "sims family: sims")),
        ((unfinished,), ("no finished runs", "1 of 1 runs unfinished")),
        ((base, "--format", "pdf"), ("--format: expected text, md, latex, csv or json, got 'pdf'",)),
        ((base, "--output", tmp_path), ("is a directory",)),
    ]
    for args, fragments in cases:
        error_line(*_err(invoke("report", *args)), *fragments)


def _results(path, **test) -> str:
    """The run's results.json with ``test`` metrics replaced."""
    results = json.loads((path / "results.json").read_text(encoding="utf-8"))
    results["test"].update(test)
    return json.dumps(results)


DAMAGED_RUNS = {  # id: (file, its new content from the run directory, fragments of the one error line)
    "metric-string": ("results.json", lambda p: _results(p, MAE="abc"), ['test.MAE: expected a number or null, got "abc"']),
    "metric-list": ("results.json", lambda p: _results(p, Corr=[1, 2]), ["test.Corr: expected a number or null, got [1, 2]"]),
    "metric-true": ("results.json", lambda p: _results(p, MAE=True), ["test.MAE: expected a number or null, got true"]),
    "results-truncated": ("results.json", lambda p: '{"test": {"MAE": 0.', ["unreadable (JSONDecodeError"]),
    "results-list": ("results.json", lambda p: "[1, 2]", ["no test metrics"]),
    "run-json-list": ("run.json", lambda p: "[1]", ["run.json: damaged: expected a JSON object", "got [1]"]),
    "run-json-truncated": ("run.json", lambda p: '{"status": "fin', ["run.json: unreadable"]),
    "config-list": ("config.yaml", lambda p: "- a\n- b\n", ["config.yaml: not a config (expected a mapping)"]),
    "config-invalid": ("config.yaml", lambda p: "a: [\n", ["config.yaml: invalid YAML: line 2, column 1"]),
    "config-alias-bomb": ("config.yaml", lambda p: __import__("test_yamlio").BILLION_LAUGHS,
                          ["config.yaml: its aliases expand it by"]),
}


@pytest.mark.parametrize("name, content, fragments", DAMAGED_RUNS.values(), ids=DAMAGED_RUNS)
def test_a_damaged_run_directory_is_one_line_naming_the_file(invoke, tmp_path, name, content, fragments):
    run = write_run(tmp_path / "run", 1, LABELS + noise(1))
    (run / name).write_text(content(run), encoding="utf-8")
    error_line(*_err(invoke("report", run)), f"{run / name}: ", *fragments)


@pytest.mark.parametrize("text, fragments", [
    ('{"seeds": [1,', ["seeds.json: unreadable (JSONDecodeError"]),
    ("[1, 2]", ['seeds.json: expected {"seeds": [1111, ...]}, distinct integers from 0 to 4294967295, got [1, 2]']),
    ('{"seeds": [1e400]}', ['got {"seeds": [Infinity]}']),
    ('{"seeds": ["a"]}', ['got {"seeds": ["a"]}']),
])
def test_a_damaged_seeds_json_is_one_line(invoke, tmp_path, text, fragments):
    root = write_root(tmp_path / "r", (1, 2), lambda s: LABELS + noise(s))
    (root / "seeds.json").write_text(text, encoding="utf-8")
    error_line(*_err(invoke("report", root)), f"{root / 'seeds.json'}", *fragments)


@pytest.mark.parametrize("record", ['{"variants": {', "[1]", '{"variants": {"a": {"runs": [1]}}}',
                                    '{"variants": {"a": {"overrides": "x", "runs": {}}}}',
                                    '{"variants": {"a": {"runs": {"1": null}}}}', '{"baseline": ["a"], "variants": {}}'])
def test_a_damaged_grid_json_is_one_line(invoke, tmp_path, record):
    root = write_grid(tmp_path / "g", {"a": ((), {1: LABELS + noise(1)})}, baseline="a")
    (root / "grid.json").write_text(record, encoding="utf-8")
    error_line(*_err(invoke("report", root)), f"{root / 'grid.json'}: ")


# -- on a real run ---------------------------------------------------------------------------------

def test_report_of_a_trained_run(trained, invoke):
    """The end to end check: a real run's results.json and predictions.npz, as dmpf train wrote them."""
    report = build_report([trained])
    (row,) = report.rows
    results = json.loads((trained / "results.json").read_text())
    assert row.seeds == [results["seed"]] and report.family == "mosei"
    assert row.summary["MAE"]["mean"] == results["test"]["MAE"]
    assert row.count("synthetic") == 1 and row.count("random_backbone") == 1  # tiny random GPT-2, generated data
    assert not any("reproduce" in note for note in report.notes)
    for fmt in ("md", "latex", "csv", "json"):
        assert render(report, fmt)
    assert invoke("report", trained).exit_code == 0
