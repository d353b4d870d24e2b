# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: scram_sha256
short_description: PostgreSQL SCRAM-SHA-256 verifier for a password, kept while the password is unchanged
version_added: 0.1.0
description:
  - Returns the C(SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>) verifier PostgreSQL stores
    for a password (RFC 5802/7677), so roles can be created without sending the password in clear.
  - Given the verifier the server stores today (I(stored)), it is checked the way PostgreSQL checks a
    login - recomputed with its own salt and iterations - and returned unchanged when the password matches,
    so C(community.postgresql.postgresql_user) changes nothing. Otherwise (no stored verifier, another
    password, an md5 hash) a new verifier with a fresh random salt is returned.
positional: stored
options:
  _input:
    description: The password.
    type: str
    required: true
  stored:
    description: The role's current C(rolpassword) (from C(pg_authid)), or empty for a new role.
    type: str
    default: ""
  iterations:
    description: PBKDF2 iterations for a new verifier (PostgreSQL's default is 4096).
    type: int
    default: 4096
"""

EXAMPLES = r"""
- name: Read the stored verifiers
  community.postgresql.postgresql_query:
    query: SELECT rolname, rolpassword FROM pg_authid WHERE rolname = 'bot'
  register: stored
  no_log: true

- name: Create the app role from its vaulted password
  community.postgresql.postgresql_user:
    name: bot
    password: "{{ vault_bot_db_password | botstack.deploy.scram_sha256(stored.query_result[0].rolpassword | default('')) }}"
  no_log: true
"""

RETURN = r"""
_value:
  description: The SCRAM-SHA-256 verifier.
  type: str
"""

import base64
import binascii
import hashlib
import hmac
import os
import re
import unicodedata

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_bytes, to_text

_VERIFIER = re.compile(r"^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$")


def _b64(data):
    return to_text(base64.b64encode(data))


def _keys(password, salt, iterations):
    # SASLprep's main effect for real passwords: NFKC normalisation.
    salted = hashlib.pbkdf2_hmac("sha256", to_bytes(unicodedata.normalize("NFKC", password)), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hashlib.sha256(client_key).digest(), hmac.new(salted, b"Server Key", hashlib.sha256).digest()


def verifier(password, salt, iterations):
    stored_key, server_key = _keys(password, salt, iterations)
    return "SCRAM-SHA-256$%d:%s$%s:%s" % (iterations, _b64(salt), _b64(stored_key), _b64(server_key))


def matches(password, stored):
    """Whether stored is a SCRAM-SHA-256 verifier of password (what the server checks at login)."""
    match = _VERIFIER.match(stored or "")
    if not match:
        return False
    try:
        salt = base64.b64decode(match.group(2))
        expected = base64.b64decode(match.group(3)), base64.b64decode(match.group(4))
    except (binascii.Error, ValueError):
        return False
    got = _keys(password, salt, int(match.group(1)))
    return hmac.compare_digest(got[0], expected[0]) and hmac.compare_digest(got[1], expected[1])


def scram_sha256(password, stored="", iterations=4096):
    if not isinstance(password, str) or password == "":
        raise AnsibleFilterError("scram_sha256 needs a non-empty password string")
    iterations = int(iterations)
    if iterations < 4096:
        raise AnsibleFilterError("scram_sha256 iterations must be at least 4096, got %d" % iterations)
    if stored and matches(password, stored):
        return stored
    return verifier(password, os.urandom(16), iterations)


class FilterModule(object):
    def filters(self):
        return {"scram_sha256": scram_sha256}
