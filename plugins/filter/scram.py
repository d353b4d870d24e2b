# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: scram_sha256
short_description: PostgreSQL SCRAM-SHA-256 verifier for a password
version_added: 0.1.0
description:
  - Returns the C(SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>) verifier PostgreSQL stores
    for a password (RFC 5802/7677), so roles can be created without sending the password in clear.
  - The salt is derived from I(salt_seed), so the same password and seed give the same verifier and
    C(community.postgresql.postgresql_user) stays idempotent.
positional: salt_seed
options:
  _input:
    description: The password.
    type: str
    required: true
  salt_seed:
    description: Any stable string unique to the role and host (e.g. C(inventory_hostname ~ user)).
    type: str
    required: true
  iterations:
    description: PBKDF2 iterations (PostgreSQL's default is 4096).
    type: int
    default: 4096
"""

EXAMPLES = r"""
- name: Create the app role from its vaulted password
  community.postgresql.postgresql_user:
    name: bot
    password: "{{ vault_bot_db_password | botstack.deploy.scram_sha256(inventory_hostname ~ 'bot') }}"
  no_log: true
"""

RETURN = r"""
_value:
  description: The SCRAM-SHA-256 verifier.
  type: str
"""

import base64
import hashlib
import hmac
import unicodedata

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_bytes, to_text


def _b64(data):
    return to_text(base64.b64encode(data))


def scram_sha256(password, salt_seed, iterations=4096):
    if not isinstance(password, str) or password == "":
        raise AnsibleFilterError("scram_sha256 needs a non-empty password string")
    if not salt_seed:
        raise AnsibleFilterError("scram_sha256 needs a salt_seed (e.g. inventory_hostname ~ user)")
    iterations = int(iterations)
    if iterations < 4096:
        raise AnsibleFilterError("scram_sha256 iterations must be at least 4096, got %d" % iterations)
    # SASLprep's main effect for real passwords: NFKC normalisation.
    normalized = unicodedata.normalize("NFKC", password)
    salt = hashlib.sha256(to_bytes("botstack-scram:" + salt_seed)).digest()[:16]
    salted = hashlib.pbkdf2_hmac("sha256", to_bytes(normalized), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return "SCRAM-SHA-256$%d:%s$%s:%s" % (iterations, _b64(salt), _b64(stored_key), _b64(server_key))


class FilterModule(object):
    def filters(self):
        return {"scram_sha256": scram_sha256}
