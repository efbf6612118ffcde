"""Which feature recipe (registry kind ``extractor``) made a dataset's features — or why none can make them from a new
clip. One answer, shared by ``dmpf prepare --media`` (which writes it), training (which records it in run.json),
``dmpf export`` (dmpf.json) and ``dmpf predict --media`` (which extracts a new clip with it).

* A dataset prepared from clips: its manifest's ``"features": {"recipe": NAME, "recipe_version": VERSION}``.
* An MMSA CH-SIMS pickle (``"dataset": "sims"``, no ``features``): CH-SIMS's published recipe, which the built-in
  ``sims`` recipe reproduces — at the version of the ``sims`` recipe installed now.
* MOSEI and MOSI (COVAREP and FACET, proprietary tools) and the synthetic data (generated): no recipe; the reason
  names the dataset (:data:`dmpf_cli.streams.DATASETS`' ``features``).

A run or an exported model that predates the record is answered from its dataset alone, as an MMSA import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import registry
from ..streams import DATASETS


@dataclass(frozen=True)
class FeatureRecipe:
    """The recipe that made a dataset's features (``name``, ``version``), or none (``name`` None; ``features`` says
    what they were instead, for the message)."""

    name: str | None
    version: str | None
    dataset: str
    features: str | None = None  # where name is None: "MOSEI's COVAREP/FACET features"

    @property
    def why_none(self) -> str | None:
        """Where no recipe made them: "trained on MOSEI's COVAREP/FACET features, which cannot be computed from a
        new clip"."""
        if self.name is not None:
            return None
        return f"trained on {self.features}, which cannot be computed from a new clip"

    def record(self) -> dict[str, Any]:
        """As run.json and dmpf.json record it: ``{"recipe": NAME or null, "recipe_version": VERSION or null}``."""
        return {"recipe": self.name, "recipe_version": self.version}


def current_version(name: str) -> str | None:
    """The version of the recipe ``name`` installed here (None: not installed)."""
    try:
        return str(registry.get("extractor", name).factory().version)
    except registry.RegistryError:
        return None


def _from_dataset(dataset: str) -> FeatureRecipe:
    facts = DATASETS.get(dataset)
    if facts is not None and facts.recipe:
        return FeatureRecipe(facts.recipe, current_version(facts.recipe), dataset)
    what = facts.features if facts is not None and facts.features else f"the {dataset} dataset's features"
    return FeatureRecipe(None, None, dataset, what)


def _block(block: Any, dataset: str) -> FeatureRecipe | None:
    """A recorded ``features`` block, where it names a recipe; ``{"recipe": null}`` is "none", by the dataset."""
    if not isinstance(block, dict) or "recipe" not in block:
        return None
    name, version = block.get("recipe"), block.get("recipe_version")
    if isinstance(name, str) and name:
        return FeatureRecipe(name, str(version) if version is not None else None, dataset)
    recipe = _from_dataset(dataset)
    return recipe if recipe.name is None else FeatureRecipe(None, None, dataset,
                                                            f"{dataset} features that no recipe made")


def features_recipe(manifest: dict[str, Any] | None, dataset: str) -> FeatureRecipe:
    """The recipe that made the features of a prepared dataset (its ``manifest.json``, as a dict) of ``dataset``."""
    return _block((manifest or {}).get("features"), dataset) or _from_dataset(dataset)


def recorded_recipe(record: dict[str, Any] | None, dataset: str) -> FeatureRecipe:
    """The recipe a run (its run.json's ``features``) or an exported model (its dmpf.json's ``data.features``) was
    trained on: ``record`` is that ``features`` block; missing (an older run or export), by ``dataset`` alone."""
    return _block(record, dataset) or _from_dataset(dataset)
