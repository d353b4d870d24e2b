"""subject_alt_names: addresses become IP:, names DNS:, wildcards go."""
from __future__ import annotations

import pathlib
import sys

import pytest
from ansible.errors import AnsibleFilterError

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[4]))
from ansible_collections.botstack.deploy.plugins.filter.subject_alt_names import subject_alt_names  # noqa: E402


def test_addresses_names_and_wildcards():
    assert subject_alt_names(["db1", "10.20.0.21", "localhost", "*", "0.0.0.0", "::", "", "2001:db8::1", "[::1]"]) == [
        "DNS:db1", "IP:10.20.0.21", "DNS:localhost", "IP:2001:db8::1", "IP:::1"]


def test_spelled_entries_are_kept_once():
    assert subject_alt_names(["DNS:db.internal", "IP:127.0.0.1", "127.0.0.1", "db.internal"]) == [
        "DNS:db.internal", "IP:127.0.0.1"]


def test_not_a_list_is_refused():
    with pytest.raises(AnsibleFilterError, match="expects a list"):
        subject_alt_names("db1")
