# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: age_keypair
short_description: A new age X25519 key pair, or the recipient of an identity
version_added: 0.1.0
description:
  - With no term, generates a new age identity (C(AGE-SECRET-KEY-1...)) and returns it with its recipient
    (C(age1...), the public key backups are encrypted to), as C(age-keygen) would; with identities as terms,
    returns the recipient of each.
  - Runs on the controller with the C(pyrage) library (C(pip install pyrage)); no C(age) binary needed.
  - Keep the identity secret (C(no_log)); the recipient is not.
options:
  _terms:
    description: Identities whose recipients to return (none to generate a new pair).
    type: list
    elements: str
    required: false
"""

EXAMPLES = r"""
- name: A key pair for the backups
  ansible.builtin.set_fact:
    backup_keys: "{{ lookup('botstack.deploy.age_keypair') }}"
  no_log: true

- name: The recipient of the vaulted identity
  ansible.builtin.debug:
    msg: "{{ lookup('botstack.deploy.age_keypair', vault_backup_age_identity).recipient }}"
"""

RETURN = r"""
_raw:
  description: One dict per pair, with C(identity) (absent for a given identity) and C(recipient).
  type: list
  elements: dict
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

try:
    import pyrage
except ImportError:
    pyrage = None


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        if pyrage is None:
            raise AnsibleLookupError("age_keypair needs the pyrage library on the controller: pip install pyrage "
                                     "(requirements/controller.txt)")
        if not terms:
            identity = pyrage.x25519.Identity.generate()
            return [{"identity": str(identity), "recipient": str(identity.to_public())}]
        pairs = []
        for term in terms:
            try:
                identity = pyrage.x25519.Identity.from_str(str(term).strip())
            except pyrage.IdentityError:  # the identity must not reach the message
                raise AnsibleLookupError("age_keypair: a term is not an age identity (AGE-SECRET-KEY-1...)")
            pairs.append({"recipient": str(identity.to_public())})
        return pairs
