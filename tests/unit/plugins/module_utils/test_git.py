"""The git helpers: URLs split from their credentials, git's environment (paths only) and exact ref
resolution over ls-remote's answer."""
from __future__ import annotations

import pytest

from ansible_collections.botstack.deploy.plugins.module_utils.git import (
    GitRefError,
    credential_line,
    git_env,
    known_hosts_error,
    ls_remote_patterns,
    parse_ls_remote,
    redact_userinfo,
    resolve,
    split_url,
    ssh_command,
    summarize_error,
    ssh_key_error,
    version_error,
)

C1, C2, T1 = "1" * 40, "2" * 40, "7" * 40


@pytest.mark.parametrize("url, stripped, transport, credentials, host, port", [
    ("https://bot:s3cr%40t@git.example.com/bots/app.git", "https://git.example.com/bots/app.git", "https",
     "bot:s3cr%40t", "git.example.com", None),
    ("https://ghp_TOKEN@github.com/o/r.git", "https://github.com/o/r.git", "https", "ghp_TOKEN", "github.com", None),
    ("https://u:p@w@git.example.com:8443/r.git", "https://git.example.com:8443/r.git", "https", "u:p@w",
     "git.example.com", 8443),
    ("https://git.example.com/r.git", "https://git.example.com/r.git", "https", "", "git.example.com", None),
    ("HTTP://u:p@host/r", "HTTP://host/r", "http", "u:p", "host", None),
    ("ssh://git@git.example.com:2222/bots/app.git", "ssh://git@git.example.com:2222/bots/app.git", "ssh", "",
     "git.example.com", 2222),
    ("ssh://git:pw@host/r.git", "ssh://git@host/r.git", "ssh", "git:pw", "host", None),
    ("git+ssh://git@host/r.git", "git+ssh://git@host/r.git", "ssh", "", "host", None),
    ("git@github.com:o/r.git", "git@github.com:o/r.git", "ssh", "", "github.com", None),
    ("github.com:o/r.git", "github.com:o/r.git", "ssh", "", "github.com", None),
    ("git@[::1]:o/r.git", "git@[::1]:o/r.git", "ssh", "", "::1", None),
    ("/srv/git/botapp.git", "/srv/git/botapp.git", "local", "", "", None),
    ("./a:b/repo", "./a:b/repo", "local", "", "", None),
    ("file:///srv/git/app.git", "file:///srv/git/app.git", "local", "", "", None),
    ("git://host/r.git", "git://host/r.git", "git", "", "host", None),
    ("", "", "local", "", "", None),
])
def test_split_url_strips_credentials(url, stripped, transport, credentials, host, port):
    parts = split_url(url)
    assert (parts["url"], parts["transport"], parts["credentials"], parts["host"], parts["port"]) == (
        stripped, transport, credentials, host, port)


def test_credential_line_is_written_as_git_credential_store_writes_it():
    # git rewrites the line it used after a successful fetch: the same bytes keep the file unchanged.
    assert credential_line(split_url("https://bot:s3cr%40t@git.example.com:8443/r.git")) == \
        "https://bot:s3cr%40t@git.example.com%3a8443\n"
    assert credential_line(split_url("https://b%C3%B6t:p@ss%20w%2Frd@h/r.git")) == "https://b%c3%b6t:p%40ss%20w%2frd@h\n"
    assert credential_line(split_url("https://tok@github.com/o/r.git")) == "https://tok:@github.com\n"


def test_redact_userinfo_in_messages():
    assert redact_userinfo("fatal: unable to access 'https://u:tok@h/r.git/': 403") == \
        "fatal: unable to access 'https://h/r.git/': 403"
    assert redact_userinfo(None) == ""


def test_git_env_holds_paths_only_and_replaces_the_hosts_helpers():
    env = git_env(credentials_file="/var/cache/x y/auth/git-credentials", ssh_key_file="/k", known_hosts_file="/kh")
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_CONFIG_COUNT"] == "2"
    assert (env["GIT_CONFIG_KEY_0"], env["GIT_CONFIG_VALUE_0"]) == ("credential.helper", "")
    assert (env["GIT_CONFIG_KEY_1"], env["GIT_CONFIG_VALUE_1"]) == (
        "credential.helper", "store --file='/var/cache/x y/auth/git-credentials'")
    assert env["GIT_SSH_COMMAND"] == (
        "ssh -i /k -o IdentitiesOnly=yes -o UserKnownHostsFile=/kh -o GlobalKnownHostsFile=/dev/null "
        "-o StrictHostKeyChecking=yes -o BatchMode=yes")
    assert git_env() == {"GIT_TERMINAL_PROMPT": "0"}


def test_ssh_command_pins_host_keys_without_a_key_too():
    assert ssh_command(known_hosts_file="/kh") == (
        "ssh -o UserKnownHostsFile=/kh -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes")


def test_key_and_known_hosts_formats():
    assert ssh_key_error("-----BEGIN OPENSSH PRIVATE KEY-----\r\nb3Blb\r\n-----END OPENSSH PRIVATE KEY-----\r\n") is None
    assert ssh_key_error("-----BEGIN RSA PRIVATE KEY-----\nMII\n-----END RSA PRIVATE KEY-----") is None
    assert "private key header" in ssh_key_error("ssh-ed25519 AAAAC3Nza deploy@ci")
    assert "private key header" in ssh_key_error("/home/me/.ssh/id_ed25519")
    assert known_hosts_error("# pinned\ngithub.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMq\n"
                             "[127.0.0.1]:2222 ecdsa-sha2-nistp256 AAAAE2VjZHNh=\n") is None
    assert known_hosts_error("@cert-authority *.example.com ssh-rsa AAAAB3Nza") is None
    assert known_hosts_error("") == "holds no host key line"
    assert "AAAA" in known_hosts_error("AAAAC3NzaC1lZDI1NTE5AAAAIOMq")
    assert "SHA256:abc" in known_hosts_error("SHA256:abc github.com")


@pytest.mark.parametrize("version", ["v2", "release/2.1", "refs/tags/v2", "main", "HEAD", C1, "v2.0-rc1", "feat_x"])
def test_valid_versions(version):
    assert version_error(version) is None


@pytest.mark.parametrize("version", ["--upload-pack=touch /tmp/x", "-v", "v 2", "v2^{}", "a..b", "v2~1", "a:b",
                                     "/v2", "v2/", "x.lock", "a//b", "@{-1}", "v2.", "a/.b", "x?", "x*", "x[", ""])
def test_invalid_versions(version):
    assert version_error(version)


def test_patterns_limit_ls_remote_to_the_candidates():
    assert ls_remote_patterns("v2") == ["refs/tags/v2", "refs/tags/v2^{}", "refs/heads/v2"]
    assert ls_remote_patterns("refs/pull/7/head") == ["refs/pull/7/head", "refs/pull/7/head^{}"]
    assert ls_remote_patterns(C1) == ["HEAD"]


def _refs(text):
    return parse_ls_remote(text)


def test_a_branch_ending_in_the_name_is_never_taken_for_the_tag():
    refs, peeled = _refs("%s\trefs/heads/backport/v2\n%s\trefs/tags/v2\n" % (C2, C1))
    assert resolve("v2", refs, peeled, "R") == dict(commit=C1, ref="refs/tags/v2", kind="tag", annotated=False)


def test_annotated_tag_resolves_to_its_commit():
    refs, peeled = _refs("%s\trefs/tags/v2\n%s\trefs/tags/v2^{}\n" % (T1, C1))
    assert resolve("v2", refs, peeled, "R") == dict(commit=C1, ref="refs/tags/v2", kind="tag", annotated=True)
    assert resolve("refs/tags/v2", refs, peeled, "R")["commit"] == C1


def test_tag_and_branch_on_different_commits_are_ambiguous():
    refs, peeled = _refs("%s\trefs/heads/v2\n%s\trefs/tags/v2\n%s\trefs/tags/v2^{}\n" % (C2, T1, C1))
    with pytest.raises(GitRefError) as caught:
        resolve("v2", refs, peeled, "https://h/r.git")
    assert caught.value.reason == "ambiguous"
    assert "ambiguous" in caught.value.msg and "name refs/tags/v2 or refs/heads/v2" in caught.value.msg
    assert resolve("refs/heads/v2", refs, peeled, "R") == dict(commit=C2, ref="refs/heads/v2", kind="branch",
                                                               annotated=False)


def test_tag_and_branch_on_the_same_commit_resolve_to_the_tag():
    refs, peeled = _refs("%s\trefs/heads/v2\n%s\trefs/tags/v2\n%s\trefs/tags/v2^{}\n" % (C1, T1, C1))
    assert resolve("v2", refs, peeled, "R")["ref"] == "refs/tags/v2"


def test_full_ids_are_used_as_they_are_and_abbreviated_ones_refused():
    assert resolve(C1.upper(), {}, {}, "R") == dict(commit=C1, ref=None, kind="commit", annotated=False)
    assert resolve("a" * 64, {}, {}, "R")["commit"] == "a" * 64
    with pytest.raises(GitRefError) as caught:
        resolve("1234abcd", {}, {}, "R")
    assert caught.value.reason == "abbreviated" and "full 40-hex id" in caught.value.msg


def test_a_hex_looking_branch_is_still_a_branch():
    refs, peeled = _refs("%s\trefs/heads/cafe\n" % C1)
    assert resolve("cafe", refs, peeled, "R")["kind"] == "branch"


def test_missing_names_and_refs():
    with pytest.raises(GitRefError) as caught:
        resolve("v9", {}, {}, "https://h/r.git")
    assert caught.value.reason == "missing"
    assert caught.value.msg.endswith("list them with: git ls-remote --tags --heads https://h/r.git")
    with pytest.raises(GitRefError) as caught:
        resolve("refs/heads/nope", {}, {}, "R")
    assert caught.value.reason == "missing"
    with pytest.raises(GitRefError) as caught:
        resolve("v 2", {}, {}, "R")
    assert caught.value.reason == "invalid"


def test_parse_ignores_noise():
    refs, peeled = parse_ls_remote("warning: x\n%s\tHEAD\n\n%s\trefs/tags/a^{}\n" % (C1, C2))
    assert refs == {"HEAD": C1} and peeled == {"refs/tags/a": C2}


CHANGED = """@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r
The fingerprint for the ED25519 key sent by the remote host is
SHA256:DIpIb7tKsZUx1EGH9WPkrOwh/M5KoPEF2GOiV3rM8wQ.\r
Add correct host key in /tmp/ansible-moduletmp-1/git_ref-x/known_hosts to get rid of this message.\r
Host key verification failed.\r
fatal: Could not read from remote repository."""


def test_summarize_error_shortens_host_key_failures_and_strips_credentials():
    assert summarize_error(CHANGED) == ("Host key verification failed: the host's key is not among the pinned ones "
                                        "(it sent the ED25519 key SHA256:DIpIb7tKsZUx1EGH9WPkrOwh/M5KoPEF2GOiV3rM8wQ)")
    assert summarize_error("No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict "
                           "checking.\r\nHost key verification failed.\r\n") == (
        "Host key verification failed: the host's key is not among the pinned ones "
        "(none for [127.0.0.1]:2222, which sent an ED25519 key)")
    assert summarize_error("fatal: unable to access 'https://u:t@h/r/': 403\n") == \
        "fatal: unable to access 'https://h/r/': 403"
