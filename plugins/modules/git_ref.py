#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: git_ref
short_description: Resolve a tag, branch, ref name or commit id of a remote git repository to its commit, exactly
version_added: 0.1.0
description:
  - Runs C(git ls-remote) on the host and resolves I(version) exactly, never by suffix.
  - A full commit id (40 hex, or 64 in a SHA-256 repository) is used as is (the repository is still read, so
    access problems show here). A full ref name (C(refs/tags/v2), C(refs/heads/main), C(refs/pull/7/head),
    C(HEAD)) is looked up as itself. A short name is looked up as C(refs/tags/<name>) and C(refs/heads/<name>);
    when both exist and point at different commits the module fails and asks for the full name. An annotated
    tag resolves to the commit it points at.
  - An abbreviated commit id cannot be resolved (a remote lists refs, not commits) and is refused.
  - Credentials never reach git's arguments, its environment or the output. I(credentials) go to git through a
    credential store file and I(ssh_key) through C(GIT_SSH_COMMAND) (C(-i <file>)), each file in a private
    temporary directory, readable by the user running the module only and removed afterwards; the
    environment holds their paths only.
  - Read-only; runs the same in check mode.
  - Needs git 2.31 or later on the host for I(credentials).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  repo:
    description:
      - URL (https, ssh, C(git@host:path)) or path of the repository, without credentials. An http(s) URL that
        carries a user or password is refused - give that part as I(credentials)
        (the botstack.deploy.git_remote filter splits them).
    type: str
    required: true
  version:
    description: Full commit id, full ref name, or tag or branch name.
    type: str
    required: true
  credentials:
    description:
      - The user information of an http(s) I(repo), C(user:token) as it would stand in the URL
        (percent-encoded), or a token alone (used as the user name with an empty password).
    type: str
  ssh_key:
    description:
      - Private key (its content) git's ssh authenticates with, for an SSH I(repo). Requires I(known_hosts).
    type: str
  known_hosts:
    description:
      - The host key lines (known_hosts format) of the SSH I(repo)'s host. Given, ssh accepts only these keys
        (C(StrictHostKeyChecking=yes), the host's own known_hosts files ignored); there is no way to accept
        an unknown host key.
    type: str
author:
  - botstack.deploy maintainers (@botstack)
"""

EXAMPLES = r"""
- name: Resolve v2 exactly (a branch backport/v2 or a branch v2 pointing elsewhere is never taken for it)
  botstack.deploy.git_ref:
    repo: https://git.example.com/bots/botapp.git
    version: v2
  register: found

- name: Read a private repository over SSH with a deploy key and a pinned host key
  botstack.deploy.git_ref:
    repo: git@git.example.com:bots/botapp.git
    version: refs/heads/main
    ssh_key: "{{ vault_botapp_deploy_key }}"
    known_hosts: "git.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI..."

- name: Read a private https repository; the URL and its credentials apart
  botstack.deploy.git_ref:
    repo: "{{ (repo_url | botstack.deploy.git_remote).url }}"
    credentials: "{{ (repo_url | botstack.deploy.git_remote).credentials }}"
    version: v2
  no_log: true
"""

RETURN = r"""
commit:
  description: The commit the version names (an annotated tag's target, not the tag object).
  returned: success
  type: str
  sample: 60fddc2ebe09f1d6c1e2a3b4c5d6e7f8091a2b3c
ref:
  description: The full ref name the version resolved to; null for a commit id.
  returned: success
  type: str
  sample: refs/tags/v2
kind:
  description: C(tag), C(branch), C(ref) (another full ref name, or C(HEAD)) or C(commit).
  returned: success
  type: str
  sample: tag
annotated:
  description: Whether the ref is an annotated tag (resolved through its C(^{}) line).
  returned: success
  type: bool
repo:
  description: The repository read (as given; it holds no credentials).
  returned: always
  type: str
command:
  description: The git command run (no credentials ever stand in it).
  returned: when git ran
  type: list
  elements: str
  sample: [git, ls-remote, --, "https://git.example.com/bots/botapp.git", refs/tags/v2, "refs/tags/v2^{}", refs/heads/v2]
reason:
  description: >-
    On failure, why - C(options) (I(repo), I(credentials), I(ssh_key) or I(known_hosts) do not fit together),
    C(git_missing) (no git on the host), C(unreadable) (ls-remote failed - the URL, the access or the host key),
    or, for I(version), C(invalid) (not a ref name), C(abbreviated) (an abbreviated commit id), C(ambiguous)
    (a tag and a branch of that name on different commits) or C(missing). A failure about I(version) has a
    message starting with the version in quotes.
  returned: failure
  type: str
stderr:
  description: >-
    git's message when the repository could not be read (any URL credentials removed; a host key verification
    failure comes down to one line naming the key the host sent).
  returned: when I(reason=unreadable)
  type: str
"""

import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botstack.deploy.plugins.module_utils.lock import heartbeat

from ansible_collections.botstack.deploy.plugins.module_utils.git import (
    GitRefError,
    credential_line,
    git_env,
    known_hosts_error,
    ls_remote_patterns,
    parse_ls_remote,
    resolve,
    split_url,
    ssh_key_error,
    summarize_error,
    version_error,
)


def _validate(params, parts):
    if parts["credentials"]:
        return ("repo carries credentials in its URL: give the URL without them and the user information as "
                "credentials (the botstack.deploy.git_remote filter splits them)")
    if params["credentials"] and parts["transport"] not in ("https", "http"):
        return "credentials apply to an https repo, and %s is not one" % parts["url"]
    if (params["ssh_key"] or params["known_hosts"]) and parts["transport"] != "ssh":
        return ("ssh_key and known_hosts apply to an SSH repo (ssh://host/path or user@host:path), and %s is not one"
                % parts["url"])
    if params["ssh_key"] and not params["known_hosts"]:
        return "ssh_key needs known_hosts: the host key of %s must be pinned, an unknown one is never accepted" % (
            parts["host"])
    if params["ssh_key"] and ssh_key_error(params["ssh_key"]):
        return "ssh_key " + ssh_key_error(params["ssh_key"])
    if params["known_hosts"] and known_hosts_error(params["known_hosts"]):
        return "known_hosts " + known_hosts_error(params["known_hosts"])
    return None


def _write(path, content):
    """A file only its owner reads, created so (never readable by others for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content.replace("\r", "").rstrip("\n") + "\n")
    return path


def auth_environment(workdir, params, parts):
    """git's environment for this repository, its secrets written under workdir (0700)."""
    files = {}
    if params["credentials"]:
        files["credentials_file"] = _write(os.path.join(workdir, "credentials"),
                                           credential_line(dict(parts, credentials=params["credentials"])))
    if params["ssh_key"]:
        files["ssh_key_file"] = _write(os.path.join(workdir, "key"), params["ssh_key"])
    if params["known_hosts"]:
        files["known_hosts_file"] = _write(os.path.join(workdir, "known_hosts"), params["known_hosts"])
    return git_env(**files)


def ls_remote(module, git, params, parts):
    """rc, stdout, stderr and the argv of git ls-remote limited to the version's candidates."""
    argv = [git, "ls-remote", "--", parts["url"]] + ls_remote_patterns(params["version"])
    workdir = tempfile.mkdtemp(prefix="git_ref-", dir=module.tmpdir)
    try:
        os.chmod(workdir, 0o700)
        env = auth_environment(workdir, params, parts)
        rc, out, err = module.run_command(argv, environ_update=env)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return rc, out, err, argv


def main():
    heartbeat()
    module = AnsibleModule(
        argument_spec=dict(
            repo=dict(type="str", required=True),
            version=dict(type="str", required=True),
            credentials=dict(type="str", no_log=True),
            ssh_key=dict(type="str", no_log=True),
            known_hosts=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    parts = split_url(params["repo"])
    result = dict(changed=False, repo=parts["url"])
    problem = _validate(params, parts)
    if problem:
        module.fail_json(msg=problem, reason="options", **result)
    if version_error(params["version"]):
        module.fail_json(msg='"%s" %s' % (params["version"], version_error(params["version"])), reason="invalid",
                         **result)
    git = module.get_bin_path("git")
    if git is None:
        module.fail_json(msg="git is not installed on the host (the git package)", reason="git_missing", **result)
    rc, out, err, argv = ls_remote(module, git, params, parts)
    result["command"] = ["git"] + argv[1:]
    if rc != 0:
        err = summarize_error(err)
        module.fail_json(msg="cannot read %s: %s" % (parts["url"], err or "git ls-remote exited %d" % rc),
                         reason="unreadable", stderr=err, **result)
    refs, peeled = parse_ls_remote(out)
    try:
        result.update(resolve(params["version"], refs, peeled, parts["url"]))
    except GitRefError as error:
        module.fail_json(msg=error.msg, reason=error.reason, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
