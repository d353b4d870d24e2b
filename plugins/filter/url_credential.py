# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: url_credential
short_description: Percent-encode a user name or password for the user part of a connection URL
version_added: 0.1.0
description:
  - Encodes every character outside RFC 3986's unreserved set (C(A-Za-z0-9-._~)), C(/) included, so any
    password - base64 with C(/) and C(+), or one holding C(@), C(:), C(%), C(#) or C(?) - fits in
    C(scheme://user:password@host/...) and the app's URL parser reads back exactly the password.
  - Jinja's C(urlencode) keeps C(/), which a URL's user part cannot carry.
options:
  _input:
    description: The user name or password.
    type: str
    required: true
"""

EXAMPLES = r"""
app_env:
  DATABASE_URL: >-
    postgresql+asyncpg://bot:{{ vault_db_bot_password | botstack.deploy.url_credential }}@db1.internal:5432/botstack
  REDIS_URL: "redis://bot:{{ vault_redis_bot_password | botstack.deploy.url_credential }}@127.0.0.1:6379/0"
"""

RETURN = r"""
_value:
  description: The encoded value (unchanged when it holds only unreserved characters).
  type: str
"""

import re
from urllib.parse import quote

from ansible.errors import AnsibleFilterError

# Schemes of the services an app reaches with credentials in its URL.
CREDENTIAL_SCHEMES = re.compile(r"^(postgres(ql)?|redis|rediss|valkey|amqps?|mysql|mariadb|mongodb|nats)([+][a-z0-9_]+)*://",
                                re.IGNORECASE)


def url_credential(value):
    if not isinstance(value, str):
        raise AnsibleFilterError("url_credential expects a string (a user name or password), got %s"
                                 % type(value).__name__)
    return quote(value, safe="")


def url_credential_problem(value):
    """Why a connection URL's user part cannot be what its author meant, or None.

    Only the first '@' after the scheme can end the user part; a '/', '?' or '#' before it (an unencoded
    password) cuts the URL's authority short, and a '%' not followed by two hex digits is not an escape.
    """
    if not isinstance(value, str):
        return None
    match = CREDENTIAL_SCHEMES.match(value)
    if match is None:
        return None
    rest = value[match.end():]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" not in authority:
        if "@" in rest:
            return "a character of its user part ('/', '?' or '#') ends the URL's host part early"
        return None
    userinfo = authority.rsplit("@", 1)[0]
    if "@" in userinfo:
        return "its user part holds '@'"
    if re.search(r"%(?![0-9A-Fa-f]{2})", userinfo):
        return "its user part holds a '%' that is not an escape"
    return None


ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def app_env_problems(env):
    """One message per unusable entry of an app's environment, naming the entry and never its value."""
    if not isinstance(env, dict):
        raise AnsibleFilterError("app_env must be a mapping of NAME: value, got %s" % type(env).__name__)
    problems = []
    for key in sorted(env, key=str):
        value = env[key]
        name = "app_env.%s" % key
        if not isinstance(key, str) or not ENV_KEY.match(key):
            problems.append("%r is not an environment variable name (letters, digits and '_', not starting with "
                            "a digit)" % (key,))
            continue
        if isinstance(value, (dict, list)):
            problems.append("%s must be a string or a number, not a %s" % (name, "mapping" if isinstance(value, dict) else "list"))
            continue
        text = "" if value is None else str(value)
        if re.search(r"[\r\n\x00]", text):
            problems.append("%s must be one line (it holds a line break or a NUL)" % name)
            continue
        why = url_credential_problem(text)
        if why:
            problems.append("%s is a connection URL whose password the app would misread: %s. Build its user part "
                            "with the botstack.deploy.url_credential filter, e.g. "
                            "redis://bot:{{ vault_redis_bot_password | botstack.deploy.url_credential }}@host:6379/0"
                            % (name, why))
    return problems


class FilterModule(object):
    def filters(self):
        return {"url_credential": url_credential, "app_env_problems": app_env_problems}
