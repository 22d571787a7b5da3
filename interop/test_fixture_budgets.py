"""Every part of fixtures/ within its budget (tools/fixture_budgets.py, which the generators check too): a fixture
that outgrows its share fails here, in CI, rather than when its generator is next run."""
import sys

import pytest

from conftest import FIXTURES, ROOT

sys.path.insert(0, str(ROOT / "tools"))
import fixture_budgets as budgets  # noqa: E402


@pytest.mark.parametrize("part, budget", [
    ("", budgets.ALL),
    ("models", budgets.MODELS),
    ("builder", budgets.BUILDER),
    ("int8", budgets.INT8),
    ("q4", budgets.Q4),
])
def test_fixture_part_within_budget(part, budget):
    size = budgets.size(FIXTURES / part)
    assert size > 0, f"fixtures/{part} is empty or missing"
    assert size <= budget, f"fixtures/{part} is {size} bytes, over its budget of {budget}"


def test_each_attention_model_within_budget():
    folders = [entry for entry in (FIXTURES / "attention").iterdir() if (entry / "model.onnx").exists()]
    assert folders, "no whole-model attention fixtures"
    for folder in folders:
        assert budgets.size(folder) <= budgets.ATTENTION_MODEL, folder.name
