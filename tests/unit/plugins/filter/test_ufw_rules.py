"""ufw_undeclared against the tuples ufw writes (taken from a real host's user.rules/user6.rules)."""
from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[4]))
from ansible_collections.botstack.deploy.plugins.filter.ufw_rules import ufw_undeclared  # noqa: E402

V4 = """*filter
### tuple ### limit tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment=737368
-A ufw-user-input -p tcp --dport 22 -j ufw-user-limit
### tuple ### allow tcp 5432 0.0.0.0/0 any 10.10.0.0/16 in comment=706f737467726573716c
### tuple ### allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in comment=776562
### tuple ### allow tcp 9999 0.0.0.0/0 any 0.0.0.0/0 in
"""
V6 = """### tuple ### limit tcp 22 ::/0 any ::/0 in comment=737368
### tuple ### allow tcp 80 ::/0 any ::/0 in comment=776562
### tuple ### allow tcp 9999 ::/0 any ::/0 in
### tuple ### allow tcp 22 ::/0 any 2001:db8::/32 in
"""
DECLARED = [{"rule": "limit", "port": "22", "proto": "tcp", "from": "any"},
            {"rule": "allow", "port": "5432", "proto": "tcp", "from": "10.10.0.0/16"},
            {"rule": "allow", "port": "80", "proto": "tcp", "from": "any"}]


def test_declared_rules_are_kept_and_others_returned_once():
    stale = ufw_undeclared([V4, V6], DECLARED)
    assert [s["label"] for s in stale] == ["allow 22/tcp from 2001:db8::/32", "allow 9999/tcp from any"]
    assert stale[1] == {"rule": "allow", "proto": "tcp", "port": "9999", "from_ip": "any", "to_ip": "any",
                        "from_port": None, "direction": "in", "label": "allow 9999/tcp from any"}


def test_narrowing_ssh_makes_the_open_rule_undeclared():
    narrowed = [{"rule": "limit", "port": 22, "from": "10.0.0.0/8"}] + DECLARED[1:]
    labels = [s["label"] for s in ufw_undeclared([V4, V6], narrowed)]
    assert "limit 22/tcp from any" in labels


def test_nothing_held_nothing_undeclared():
    assert ufw_undeclared(["", None], DECLARED) == []


def test_rules_with_several_sources_become_one_rule_each():
    from ansible_collections.botstack.deploy.plugins.filter.ufw_rules import ufw_per_source
    assert ufw_per_source([{"port": 5432, "from": ["10.0.0.0/8", "192.168.0.0/16"], "comment": "pg"},
                           {"port": 6379, "proto": "tcp"}]) == [
        {"rule": "allow", "port": "5432", "proto": "tcp", "from": "10.0.0.0/8", "comment": "pg"},
        {"rule": "allow", "port": "5432", "proto": "tcp", "from": "192.168.0.0/16", "comment": "pg"},
        {"rule": "allow", "port": "6379", "proto": "tcp", "from": "any"}]


def test_a_single_address_matches_its_slash_32():
    held = "### tuple ### limit tcp 22 0.0.0.0/0 any 172.17.0.3 in comment=737368\n"
    assert ufw_undeclared([held], [{"rule": "limit", "port": 22, "from": "172.17.0.3/32"}]) == []
    assert ufw_undeclared(["### tuple ### allow tcp 22 ::/0 any 2001:db8::1 in\n"],
                          [{"rule": "allow", "port": 22, "from": "2001:db8::1/128"}]) == []


def test_rules_another_role_owns_are_left_to_it():
    owned = "botstack-monitoring".encode().hex()
    held = ("### tuple ### allow tcp 9100 0.0.0.0/0 any 10.0.0.9 in comment=%s\n" % owned
            + "### tuple ### allow tcp 9101 0.0.0.0/0 any 10.0.0.9 in comment=%s\n" % "by-hand".encode().hex())
    labels = [s["label"] for s in ufw_undeclared([held], DECLARED, ["botstack-monitoring"])]
    assert labels == ["allow 9101/tcp from 10.0.0.9"]
    # Without the exemption the monitoring rule is as undeclared as any other.
    assert len(ufw_undeclared([held], DECLARED)) == 2


def test_a_role_prunes_only_the_rules_it_owns():
    owned = "botstack-monitoring".encode().hex()
    held = ("### tuple ### allow tcp 9100 0.0.0.0/0 any 10.0.0.9 in comment=%s\n" % owned
            + "### tuple ### allow tcp 9100 0.0.0.0/0 any 10.0.0.8 in comment=%s\n" % owned
            + "### tuple ### allow tcp 9999 0.0.0.0/0 any 0.0.0.0/0 in\n")
    declared = [{"rule": "allow", "port": 9100, "from": "10.0.0.9"}]
    stale = ufw_undeclared([held], declared, only_comment="botstack-monitoring")
    assert [s["label"] for s in stale] == ["allow 9100/tcp from 10.0.0.8"]


def test_missing_rules_are_the_declared_ones_ufw_does_not_hold():
    from ansible_collections.botstack.deploy.plugins.filter.ufw_rules import ufw_missing
    declared = [{"rule": "limit", "port": "22", "proto": "tcp", "from": "any", "comment": "ssh"},
                {"rule": "allow", "port": "5432", "proto": "tcp", "from": "10.10.0.0/16", "comment": "postgresql"},
                {"rule": "allow", "port": "80", "proto": "tcp", "from": "any", "comment": "web"},
                {"rule": "allow", "port": "443", "proto": "tcp", "from": "any", "comment": "web"},
                {"rule": "allow", "port": "22", "proto": "tcp", "from": "2001:db8::/32"},
                {"rule": "allow", "port": "6379", "proto": "tcp", "from": "10.0.0.1/32"}]
    assert [r["port"] for r in ufw_missing(declared, [V4, V6])] == ["443", "6379"]
    # Another comment is an update; the action is part of the rule.
    assert ufw_missing([dict(declared[2], comment="http")], [V4, V6]) == [dict(declared[2], comment="http")]
    assert ufw_missing([dict(declared[0], rule="allow")], [V4, V6]) == [dict(declared[0], rule="allow")]
    # A rule from any source held in user.rules alone, where ufw keeps IPv6 rules, still needs its v6 half.
    v6_without_80 = "\n".join(line for line in V6.splitlines() if " 80 " not in line)
    assert ufw_missing([declared[2]], [V4, v6_without_80]) == [declared[2]]
    # Without IPv6 rules at all, user.rules decides.
    assert ufw_missing([declared[0], declared[2]], [V4, ""]) == []
    # Nothing held (ufw just installed): everything.
    assert ufw_missing(declared, ["", ""]) == declared


def test_where_ufw_keeps_ipv6_rules_a_rule_from_any_source_needs_its_v6_half():
    from ansible_collections.botstack.deploy.plugins.filter.ufw_rules import ufw_missing
    web = {"rule": "allow", "port": "80", "proto": "tcp", "from": "any", "comment": "web"}
    # IPV6 switched on after the rules went in: user6.rules holds nothing yet.
    assert ufw_missing([web], [V4, ""], True) == [web]
    assert ufw_missing([web], [V4, ""], False) == []
    assert ufw_missing([web], [V4, V6], True) == []


def test_a_held_rule_a_declared_one_replaces_in_place_is_not_undeclared():
    """limit 22 held, allow 22 declared (rate limit switched off): ufw updates the rule, nothing to delete."""
    from ansible_collections.botstack.deploy.plugins.filter.ufw_rules import ufw_missing
    declared = [{"rule": "allow", "port": "22", "proto": "tcp", "from": "any"}] + DECLARED[1:]
    adding = ufw_missing(declared, [V4, V6])
    assert adding == declared[:1]
    labels = [s["label"] for s in ufw_undeclared([V4, V6], declared, replaced=adding)]
    assert "limit 22/tcp from any" not in labels and "allow 9999/tcp from any" in labels
    assert "limit 22/tcp from any" in [s["label"] for s in ufw_undeclared([V4, V6], declared)]
