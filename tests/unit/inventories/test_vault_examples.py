"""Each inventory's vault.yml.example lists exactly the secrets that inventory uses: one it never uses would
be refused by the preflight while it still reads CHANGE-ME, one it lacks would fail the run undefined."""
from __future__ import annotations

import pathlib
import re

import pytest
import yaml

INVENTORIES = pathlib.Path(__file__).resolve().parents[3] / "inventories"
EXAMPLES = sorted(INVENTORIES.glob("*/group_vars/all/vault.yml.example"))


def used_secrets(inventory: pathlib.Path) -> set[str]:
    names = set()
    for path in inventory.rglob("*.yml"):
        if path.name != "vault.yml":
            names |= set(re.findall(r"\bvault_[a-z0-9_]+\b", path.read_text()))
    return names


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.parts[-4] for p in EXAMPLES])
def test_the_example_lists_exactly_the_secrets_its_inventory_uses(example):
    inventory = example.parents[2]
    listed = set(yaml.safe_load(example.read_text()))
    used = used_secrets(inventory)
    assert listed - used == set(), f"listed but never used by {inventory.name}: {sorted(listed - used)}"
    assert used - listed == set(), f"used by {inventory.name} but not in its example: {sorted(used - listed)}"
    assert all(str(v).startswith("CHANGE-ME") for v in yaml.safe_load(example.read_text()).values())


def test_there_are_examples_to_check():
    assert {p.parts[-4] for p in EXAMPLES} >= {"production", "staging"}
