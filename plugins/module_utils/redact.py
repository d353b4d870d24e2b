# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Secrets kept out of a module's results: evidence copied from an application's journal (a traceback
printing its settings) must not carry the values the deploy gave it, however the app printed them."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible.module_utils.six.moves.urllib.parse import quote, quote_plus

MASK = "********"
# Shorter values are not secrets worth the name, and masking them would garble every line.
MIN_LENGTH = 4

# The option modules add to take the values (no_log: Ansible masks the exact values too).
SECRETS_OPTION = dict(type="list", elements="str", default=[], no_log=True)


def forms(secrets):
    """The values and the ways an app prints them (URL-quoted, JSON- and repr-escaped), longest first."""
    found = set()
    for value in secrets or []:
        value = str(value)
        if len(value) < MIN_LENGTH:
            continue
        found.update((value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1],
                      repr(value)[1:-1]))
    return sorted((f for f in found if len(f) >= MIN_LENGTH), key=len, reverse=True)


def mask(data, masked):
    """data (strings, lists and dicts, recursively) with every form in masked replaced."""
    if not masked:
        return data
    if isinstance(data, str):
        for form in masked:
            data = data.replace(form, MASK)
        return data
    if isinstance(data, dict):
        return dict((key, mask(value, masked)) for key, value in data.items())
    if isinstance(data, (list, tuple)):
        return [mask(value, masked) for value in data]
    return data


def protect(module, secrets):
    """From now on, everything the module returns (exit_json, fail_json) has the secrets masked."""
    masked = forms(secrets)
    if not masked:
        return
    for name in ("exit_json", "fail_json"):
        setattr(module, name, _masking(getattr(module, name), masked))


def _masking(original, masked):
    def returning(*args, **kwargs):
        return original(*args, **mask(kwargs, masked))
    return returning
