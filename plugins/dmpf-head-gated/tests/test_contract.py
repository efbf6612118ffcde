"""dmpf's head contract, run on this plugin's head as dmpf itself runs it (``dmpf plugins check gated-sum``).

Run with the plugin installed beside dmpf (``pip install -e .``: dmpf finds the head through the entry point)::

    python -m pytest tests
"""

from dmpf_cli import registry
from dmpf_cli.plugin_kit import head_contract

# one test per check of the head contract (ids gated-sum-shapes, gated-sum-backward, ...)
test_gated_sum_head_contract = head_contract.pytest_tests("gated-sum")


def test_registered_through_the_entry_point():
    assert registry.get("head", "gated-sum").origin == "dmpf-head-gated"
