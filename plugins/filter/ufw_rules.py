# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: ufw_undeclared
short_description: The ufw rules a host holds that are not declared
version_added: 0.1.0
description:
  - Reads the rule tuples ufw keeps in C(/etc/ufw/user.rules) and C(user6.rules) (its own machine-readable
    record, the C(tuple) comment lines holding action, proto, dport, dst, sport, src and direction) and returns every rule not in
    I(declared), as arguments for M(community.general.ufw) with C(delete=true).
  - So a firewall converges to exactly the declared rules - a port or source removed from the variables is
    removed from ufw, as is a rule added by hand.
positional: declared
options:
  _input:
    description: The contents of C(user.rules) and C(user6.rules) (one string, or a list of them).
    type: raw
    required: true
  declared:
    description: The declared rules, each C(rule) (allow/limit/deny/reject), C(port), C(proto) and C(from) (a CIDR or C(any)).
    type: list
    elements: dict
    required: true
  owned_elsewhere:
    description: Comments of rules another role owns (it adds and removes them); such rules are never returned.
    type: list
    elements: str
    default: []
  only_comment:
    description: Consider only the rules with this comment (a role pruning the rules it owns).
    type: str
  replaced:
    description:
      - Declared rules about to be added (M(botstack.deploy.ufw_missing#filter)); a held rule with the same port, proto
        and source but another action is not returned, since ufw updates it in place.
    type: list
    elements: dict
    default: []
"""

EXAMPLES = r"""
- name: Remove the rules that are not declared
  community.general.ufw:
    delete: true
    rule: "{{ item.rule }}"
    port: "{{ item.port }}"
    proto: "{{ item.proto }}"
    from_ip: "{{ item.from_ip }}"
  loop: "{{ [v4_rules, v6_rules] | botstack.deploy.ufw_undeclared(declared) }}"
"""

RETURN = r"""
_value:
  description: The undeclared rules - C(rule), C(proto), C(port), C(from_ip), C(to_ip), C(from_port), C(direction), C(label).
  type: list
  elements: dict
"""

import ipaddress
import re

from ansible.errors import AnsibleFilterError

_TUPLE = re.compile(r"^### tuple ### (\S+) (\S+) (\S+) (\S+) (\S+) (\S+) (\S+)")
_COMMENT = re.compile(r" comment=([0-9a-fA-F]+)")
_ANY = ("0.0.0.0/0", "::/0", "any")


def _source(address):
    """One spelling per network: ufw writes 10.0.0.1 for 10.0.0.1/32 and 10.0.0.0/8 as given."""
    if address in _ANY:
        return "any"
    try:
        return ipaddress.ip_network(address, strict=False).with_prefixlen
    except ValueError:
        return address


def _declared_keys(declared):
    keys = set()
    for rule in declared:
        try:
            source = str(rule.get("from") or "any")
            keys.add((str(rule["rule"]), str(rule.get("proto", "tcp")), str(rule["port"]), _source(source)))
        except (KeyError, TypeError, AttributeError):
            raise AnsibleFilterError("ufw_undeclared: every declared rule needs rule and port, got %r" % (rule,))
    return keys


def _comment(line):
    """ufw keeps a rule's comment hex-encoded at the end of its tuple line."""
    match = _COMMENT.search(line)
    if not match:
        return ""
    try:
        return bytes.fromhex(match.group(1)).decode("utf-8", "replace")
    except ValueError:
        return ""


def ufw_undeclared(rules_files, declared, owned_elsewhere=None, only_comment=None, replaced=None):
    owned = set(owned_elsewhere or [])
    # (proto, port, source) of declared rules being added: ufw updates a held rule of another action in place.
    updated = set((key[1], key[2], key[3]) for key in _declared_keys(replaced or []))
    texts = [rules_files] if isinstance(rules_files, str) else list(rules_files or [])
    wanted = _declared_keys(declared)
    found = {}
    for text in texts:
        for line in (text or "").splitlines():
            match = _TUPLE.match(line)
            if not match:
                continue
            action, proto, dport, dst, sport, src, direction = match.groups()
            if owned and _comment(line) in owned:
                continue
            if only_comment is not None and _comment(line) != only_comment:
                continue
            source = "any" if src in _ANY else src
            plain_inbound = dst in _ANY and sport in _ANY and direction == "in"
            if plain_inbound and ((action, proto, dport, _source(src)) in wanted or (proto, dport, _source(src)) in updated):
                continue
            # One entry for the v4 and v6 tuples of the same rule: ufw deletes both at once.
            key = (action, proto, dport, "any" if dst in _ANY else dst, sport, source, direction)
            found[key] = {
                "rule": action, "proto": proto, "port": dport if dport != "any" else None,
                "from_ip": source, "to_ip": "any" if dst in _ANY else dst,
                "from_port": sport if sport != "any" else None, "direction": direction,
                "label": "%s %s/%s from %s%s" % (action, dport, proto, source, "" if direction == "in" else " " + direction),
            }
    return [found[key] for key in sorted(found)]


def _held(text):
    """(action, proto, dport, source) -> comment of the plain inbound rules in one rules file."""
    held = {}
    for line in (text or "").splitlines():
        match = _TUPLE.match(line)
        if not match:
            continue
        action, proto, dport, dst, sport, src, direction = match.groups()
        if dst in _ANY and sport in _ANY and direction == "in":
            held[(action, proto, dport, _source(src))] = _comment(line)
    return held


def ufw_missing(declared, rules_files, ipv6=None):
    """The declared rules ufw does not hold yet (or holds with another comment): what community.general.ufw would
    add or update. rules_files: [user.rules, user6.rules] contents. A rule from any source is held once user.rules
    has it and, where ufw keeps IPv6 rules (ipv6, or when not known user6.rules holds some), user6.rules too."""
    texts = list(rules_files or []) + ["", ""]
    v4, v6 = _held(texts[0]), _held(texts[1])
    keeps_v6 = bool(v6) if ipv6 is None else bool(ipv6)
    missing = []
    for rule in declared or []:
        key = next(iter(_declared_keys([rule])))
        source = key[3]
        if source == "any":
            files = [v4, v6] if keeps_v6 else [v4]
        else:
            files = [v6] if ":" in source else [v4]
        wanted_comment = rule.get("comment")
        if not all(key in held and (not wanted_comment or held[key] == wanted_comment) for held in files):
            missing.append(rule)
    return missing


def ufw_per_source(rules, action="allow"):
    """[{port, proto, from: [CIDR...], comment}] -> one rule per source (none listed: from any)."""
    flat = []
    for rule in rules or []:
        if not isinstance(rule, dict) or "port" not in rule:
            raise AnsibleFilterError("ufw_per_source: every rule needs a port, got %r" % (rule,))
        for source in rule.get("from") or ["any"]:
            entry = {"rule": rule.get("rule", action), "port": str(rule["port"]), "proto": rule.get("proto", "tcp"),
                     "from": source}
            if rule.get("comment"):
                entry["comment"] = rule["comment"]
            flat.append(entry)
    return flat


class FilterModule(object):
    def filters(self):
        return {"ufw_undeclared": ufw_undeclared, "ufw_per_source": ufw_per_source, "ufw_missing": ufw_missing}
