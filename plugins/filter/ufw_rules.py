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


def ufw_undeclared(rules_files, declared, owned_elsewhere=None, only_comment=None):
    owned = set(owned_elsewhere or [])
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
            if (action, proto, dport, _source(src)) in wanted and dst in _ANY and sport in _ANY and direction == "in":
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
        return {"ufw_undeclared": ufw_undeclared, "ufw_per_source": ufw_per_source}
