# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: git_env
short_description: The environment that gives git credentials and a deploy key through files, by their paths only
version_added: 0.1.0
description:
  - A task's C(environment) is printed at C(-vvv) (in the remote command line) and a process's arguments are
    visible in C(ps); this environment holds only paths. The same environment the botstack.deploy.git_ref
    module runs git with.
  - With C(credentials_file) (a git credential store file, C(https://user:token@host) lines), git's credential
    helpers are replaced by that file (C(GIT_CONFIG_COUNT), git 2.31 or later); nothing is written to a
    repository's C(.git/config).
  - With C(ssh_key_file) and/or C(known_hosts_file), C(GIT_SSH_COMMAND) is
    C(ssh -i <key> -o IdentitiesOnly=yes -o UserKnownHostsFile=<file> -o GlobalKnownHostsFile=/dev/null
    -o StrictHostKeyChecking=yes -o BatchMode=yes).
  - Terminal prompts are always off (C(GIT_TERMINAL_PROMPT=0)).
options:
  _input:
    description: >-
      The files, each a path or empty for none - C(credentials_file) (a credential store file),
      C(ssh_key_file) (a private key) and C(known_hosts_file) (the pinned host keys).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Fetch with the deploy key written before (the environment names the files only)
  ansible.builtin.git:
    repo: git@git.example.com:bots/botapp.git
    dest: /var/cache/botapp/repo
    version: "{{ commit }}"
  environment: "{{ {'ssh_key_file': '/var/cache/botapp/git/key',
                    'known_hosts_file': '/var/cache/botapp/git/known_hosts'} | botstack.deploy.git_env }}"
"""

RETURN = r"""
_value:
  description: Environment variables (names to strings).
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.botstack.deploy.plugins.module_utils.git import git_env as _git_env


_FILES = ("credentials_file", "ssh_key_file", "known_hosts_file")


def git_env(files):
    if not isinstance(files, dict) or set(files) - set(_FILES):
        raise AnsibleFilterError("git_env expects a dict of %s (paths, empty for none), got %r"
                                 % (", ".join(_FILES), files if not isinstance(files, dict) else sorted(files)))
    return _git_env(**dict((name, files.get(name) or None) for name in _FILES))


class FilterModule(object):
    def filters(self):
        return {"git_env": git_env}
