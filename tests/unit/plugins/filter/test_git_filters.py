"""git_remote and git_env: the role's view of a repository URL and of git's environment."""
from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.botstack.deploy.plugins.filter.git_env import git_env
from ansible_collections.botstack.deploy.plugins.filter.git_remote import git_remote


def test_git_remote_gives_the_url_without_the_token_and_the_store_line_apart():
    parts = git_remote("https://ci:glpat-XYZ@gitlab.example.com/bots/app.git")
    assert parts["url"] == "https://gitlab.example.com/bots/app.git"
    assert parts["credential_line"] == "https://ci:glpat-XYZ@gitlab.example.com\n"
    assert "XYZ" not in parts["url"]


def test_git_remote_without_credentials_or_value():
    assert git_remote("git@github.com:o/r.git")["credential_line"] == ""
    assert git_remote(None)["url"] == "" and git_remote("")["transport"] == "local"


def test_git_env_takes_paths_and_ignores_empty_ones():
    env = git_env({"credentials_file": "", "ssh_key_file": "/c/auth/deploy_key", "known_hosts_file": "/c/auth/kh"})
    assert "GIT_CONFIG_COUNT" not in env
    assert env["GIT_SSH_COMMAND"].startswith("ssh -i /c/auth/deploy_key -o IdentitiesOnly=yes")
    assert git_env({}) == {"GIT_TERMINAL_PROMPT": "0"}


@pytest.mark.parametrize("bad", [{"ssh_key": "x"}, "path", None])
def test_git_env_refuses_anything_but_its_files(bad):
    with pytest.raises(AnsibleFilterError):
        git_env(bad)
