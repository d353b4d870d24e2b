# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: git_remote
short_description: A git repository URL split from its credentials
version_added: 0.1.0
description:
  - For every use of a repository URL that may carry a token (C(https://user:token@host/repo.git)) - task
    names, messages, git's arguments, a clone's C(.git/config) - use C(url), and give git C(credentials) through
    a root-only file (botstack.deploy.git_env).
  - Never fails; a value git would not read comes back with I(transport) C(other) or C(local) for the
    caller's checks.
positional: _input
options:
  _input:
    description: A repository URL or path, as git reads it (https, ssh, C(user@host:path), git, file, a path).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Name the repository without its token
  ansible.builtin.debug:
    msg: "Deploying from {{ (deploy_git_repo | botstack.deploy.git_remote).url }}"
"""

RETURN = r"""
_value:
  description: >-
    C(url) (without the password, and without the user of an http(s) URL), C(transport) (C(https), C(http),
    C(ssh), C(git), C(local) or C(other)), C(scheme), C(host), C(port) (null unless given), C(authority)
    (C(host[:port])) and C(credentials) (the user information of an http(s) URL, or of an SSH URL that
    carries a password, as written; empty when there is none) and C(credential_line) (the line of a git
    credential store file that gives git those credentials, C(https://user:token@host[:port]); empty without).
  type: dict
"""

from ansible_collections.botstack.deploy.plugins.module_utils.git import credential_line, split_url


def git_remote(url):
    parts = split_url(str(url or ""))
    parts["credential_line"] = credential_line(parts) if parts["credentials"] else ""
    return parts


class FilterModule(object):
    def filters(self):
        return {"git_remote": git_remote}
