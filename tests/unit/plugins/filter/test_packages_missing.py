"""packages_missing: only what package_facts does not show installed goes to apt."""
from __future__ import annotations

import pathlib
import sys

import pytest
from ansible.errors import AnsibleFilterError

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[4]))
from ansible_collections.botstack.deploy.plugins.filter.packages_missing import packages_missing  # noqa: E402

FACTS = ["ufw", "nginx", "libc6"]


def test_installed_names_are_dropped_others_kept_in_order():
    assert packages_missing(["zstd", "ufw", "age", "nginx"], FACTS) == ["zstd", "age"]


def test_a_string_is_one_name():
    assert packages_missing("ufw", FACTS) == [] and packages_missing("git", FACTS) == ["git"]


@pytest.mark.parametrize("name", ["nginx=1.22.1", "nginx>=1.0", "nginx:amd64", "nginx*", "./nginx.deb"])
def test_names_apt_must_decide_are_kept(name):
    assert packages_missing([name], FACTS) == [name]


def test_without_facts_everything_is_kept():
    assert packages_missing(["ufw", "git"], None) == ["ufw", "git"]


def test_bad_input_is_refused():
    with pytest.raises(AnsibleFilterError, match="list of package names"):
        packages_missing({"ufw": 1}, FACTS)
    with pytest.raises(AnsibleFilterError, match="installed package names"):
        packages_missing(["ufw"], "ufw")
