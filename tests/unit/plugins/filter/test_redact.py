"""redact keeps the shape of entries and drops their secrets."""
from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[4]))
from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.botstack.deploy.plugins.filter.redact import redact  # noqa: E402


def test_secrets_become_a_marker_and_empty_ones_stay_empty():
    users = [{"name": "bot", "password": "s3cret"}, {"name": "ro", "password": ""}, {"name": "grp"}]
    assert redact(users) == [{"name": "bot", "password": "<redacted>"}, {"name": "ro", "password": ""}, {"name": "grp"}]
    assert users[0]["password"] == "s3cret"


def test_other_keys_and_a_single_dict():
    assert redact({"name": "a", "token": "t", "password": "p"}, ["token"]) == {"name": "a", "token": "<redacted>",
                                                                                 "password": "p"}


def test_non_dict_entries_are_refused():
    with pytest.raises(AnsibleFilterError):
        redact(["bot"])
