"""Sharing a trained model: ``dmpf export`` (a run, or a multi-seed root, into an exported model directory with its
model card) and ``push_to_hub`` (that directory uploaded through ``huggingface_hub``). The directory's format is
:mod:`dmpf_cli.store.exported`'s; loading one back is :func:`dmpf_cli.recipes.evaluate.load_trained`'s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import ExperimentConfig
from ..metrics import mean_std
from ..model.backbones import backbone_shapes
from ..store.exported import CARD, is_exported, read_exported, write_exported
from ..store.roots import is_multi_seed_root, read_seeds
from ..store.run import RunDir, RunError, RunState
from ..streams import DATASETS
from .feature_recipe import recorded_recipe
from .preflight import resolve_config

# the card's headline metrics, in this order, where the dataset reports them
HEADLINE = ("MAE", "Corr", "Has0_acc_2", "Non0_acc_2", "Non0_F1_score", "Mult_acc_7", "Mult_acc_5", "Mult_acc_3")


def _finished_runs(source: Path) -> list[tuple[int, RunDir]]:
    """(seed, run) of every seed ``source`` holds: itself (one run) or a multi-seed root's; each finished."""
    source = Path(source).expanduser()
    if is_multi_seed_root(source):
        runs = [(seed, RunDir(source / f"seed-{seed}")) for seed in read_seeds(source)]
    else:
        run = RunDir(source)
        run.require("--run")
        runs = [(run.read_status().get("seed"), run)]
    for seed, run in runs:
        if not run.is_run() or run.state is not RunState.FINISHED:
            raise RunError(f"--run: {run.root} has not finished (seed {seed}); only a finished run is exported")
    return runs


def export_run(source: Path, output: Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Export ``source`` (a finished run, or a multi-seed root whose seeds have all finished) to ``output``.

    The weights are those of the seed with the best validation MAE; the card and dmpf.json give every seed's test
    metrics and their mean ± std. Returns dmpf.json's content."""
    runs = _finished_runs(source)
    cfg = resolve_config(config=runs[0][1].config)
    per_seed = {}
    for seed, run in runs:
        results = run.read_results()
        per_seed[seed] = {"test": results["test"], "valid": results.get("valid", {}),
                          "best_epoch": results.get("best_epoch")}
    chosen_seed, chosen = min(runs, key=lambda sr: per_seed[sr[0]]["valid"].get("MAE", float("inf")))
    status = chosen.read_status()
    if not chosen.best.is_file():
        raise RunError(f"--run: {chosen.root}: no best checkpoint (checkpoints/best.safetensors)")
    dims = status.get("dims")
    if not dims:
        raise RunError(f"--run: {chosen.root}: run.json does not record the feature dims; train the run again")
    arch = backbone_shapes(cfg.backbone)
    tree = cfg.model_dump(mode="json")
    tree["data"]["path"] = None  # where the data was on the training machine means nothing elsewhere
    tree["training"]["seeds"] = [seed for seed, _ in runs]
    manifest = {
        "dmpf_version": __version__,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "exported_from": Path(source).expanduser().resolve().name,
        "feature_dims": [int(d) for d in dims],
        "backbone": {"name": cfg.backbone.name, "hub_id": None if arch.random_init or arch.built_by_dmpf else arch.hub_id,
                     "weights": arch.label, "fingerprint": status.get("backbone_fingerprint"),
                     "source": status.get("backbone")},
        "data": {"dataset": cfg.data.dataset, "fingerprint": status.get("data_fingerprint"),
                 "generated": DATASETS[cfg.data.dataset].generated,
                 "features": recorded_recipe(status.get("features"), cfg.data.dataset).record()},
        "seeds": [seed for seed, _ in runs],
        "weights_from_seed": chosen_seed,
        "metrics": {split: {key: mean_std([per_seed[s][split][key] for s, _ in runs]) for key in per_seed[chosen_seed][split]}
                    for split in ("test", "valid") if all(per_seed[s][split] for s, _ in runs)},
        "per_seed": {str(seed): entry for seed, entry in per_seed.items()},
        "versions": status.get("versions", {}),
    }
    write_exported(output, config=tree, weights=chosen.best, manifest=manifest, card=model_card(cfg, manifest),
                   overwrite=overwrite)
    return manifest


def _features_line(data: dict[str, Any]) -> str:
    """What made the features the model reads, and whether a new clip can be scored."""
    recipe = recorded_recipe(data.get("features"), data["dataset"])
    if recipe.name is None:
        return f"{recipe.features}, which cannot be computed from a new clip: the model cannot score new clips"
    version = f" version {recipe.version}" if recipe.version else ""
    return (f"dmpf's `{recipe.name}` feature recipe{version}; `dmpf predict --run PATH_OR_HUB_ID --media clip.mp4` "
            "extracts a new clip with it and scores it")


def _fmt(entry: dict[str, float], n: int) -> str:
    return f"{entry['mean']:.4f}" + (f" ± {entry['std']:.4f}" if n > 1 else "")


def model_card(cfg: ExperimentConfig, manifest: dict[str, Any]) -> str:
    """The exported model's README.md: Hugging Face card metadata (YAML front matter), then what the model is, its
    scores (mean ± std over the seeds), how to use it and the command that reproduces it."""
    backbone, data = manifest["backbone"], manifest["data"]
    synthetic, random_lm = data["generated"], backbone["weights"] == "random weights"
    seeds = manifest["seeds"]
    tags = ["dmpf", "multimodal-sentiment-analysis", "sentiment-analysis", "multimodal"]
    if synthetic:
        tags.append("synthetic-data")
    if random_lm:
        tags.append("random-backbone")
    front = ["---", "library_name: dmpf", "tags:", *[f"- {t}" for t in tags]]
    if backbone["hub_id"]:
        front.append(f"base_model: {backbone['hub_id']}")
    test = manifest["metrics"].get("test", {})
    if test:
        front.append("metrics:")
        front += [f"- {k.lower()}" for k in HEADLINE if k in test]
    front.append("---")
    lines = [*front, "", f"# DMPF trained on {data['dataset']}", ""]
    if synthetic or random_lm:
        why = " and ".join(w for w, on in (("dmpf's generated synthetic data", synthetic),
                                            ("a randomly initialised language model", random_lm)) if on)
        lines += [f"> **Demonstration only.** This model was trained on {why}. Its scores say nothing about "
                  "sentiment in real recordings or about the DMPF paper's results.", ""]
    lm = (f"`{backbone['hub_id']}` (frozen; not included here, loaded from the Hugging Face Hub or cache)"
          if backbone["hub_id"] else f"`{backbone['name']}` ({backbone['weights']}; frozen; not included here)")
    lines += [
        "A DMPF model (*All Interactions Matter: Modality-Preserving Deep Fusion for Multimodal Sentiment Analysis*)"
        " trained with dmpf: audio, visual and audio-visual transformer encoders feed a frozen "
        "GPT-2 through gated cross-attention, with modality-specific fusion tokens and a fusion attention mask.",
        "",
        f"* **Dataset:** `{data['dataset']}`" + (f" (prepared data fingerprint `{data['fingerprint']}`)" if data["fingerprint"] else ""),
        f"* **Backbone:** {lm}" + (f"; weights fingerprint `{backbone['fingerprint']}`" if backbone["fingerprint"] else ""),
        f"* **Feature widths:** audio {manifest['feature_dims'][0]}, vision {manifest['feature_dims'][1]}",
        f"* **Features:** {_features_line(data)}",
        f"* **Seeds:** {', '.join(map(str, seeds))}; the weights here are seed {manifest['weights_from_seed']}'s "
        "(the best validation MAE)",
        f"* **dmpf:** {manifest['dmpf_version']}",
        "",
    ]
    if test:
        n = len(seeds)
        lines += [f"## Test scores ({'mean ± std over ' + str(n) + ' seeds' if n > 1 else 'one seed'})", "",
                  "| metric | test |", "|---|---|"]
        lines += [f"| {k} | {_fmt(test[k], n)} |" for k in HEADLINE if k in test]
        lines.append("")
    seed_list = ",".join(map(str, seeds))
    lines += [
        "## Use", "",
        "```bash",
        "dmpf predict --run PATH_OR_HUB_ID --input samples.jsonl   # id, score and label bins per sample",
        "dmpf eval --run PATH_OR_HUB_ID --split test",
        "```", "",
        "```python",
        "import dmpf_cli as dmpf",
        "model = dmpf.from_pretrained(\"PATH_OR_HUB_ID\")",
        "scores = model.predict([{\"text\": \"...\", \"audio\": audio_frames, \"vision\": vision_frames}])",
        "```", "",
        "## Reproduce", "",
        "`config.json` is the resolved config the run trained with:", "",
        "```bash",
        f"dmpf train --config config.json --seeds {seed_list}",
        "```", "",
    ]
    return "\n".join(lines)


def push_to_hub(directory: Path, repo_id: str, *, token: str | None = None, private: bool = False,
                commit_message: str | None = None, api=None) -> str:
    """Upload the exported model in ``directory`` to the Hub repository ``repo_id`` (made if missing); returns the
    commit's URL. ``api``: the ``huggingface_hub.HfApi`` to use (default: a new one with ``token``)."""
    directory = Path(directory).expanduser()
    if not is_exported(directory):
        read_exported(directory, "--model")  # says what is missing
    if not (directory / CARD).is_file():
        raise RunError(f"--model: {directory}: no model card ({CARD}); export the run again")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    from huggingface_hub.utils import HfHubHTTPError

    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(directory), repo_type="model",
                                   commit_message=commit_message or f"dmpf {__version__}: upload the exported model")
    except (HfHubHTTPError, OSError) as exc:
        raise RunError(f"--push-to-hub: {repo_id}: the upload failed ({' '.join(str(exc).split())[:160]})") from None
    return str(getattr(commit, "commit_url", commit))
