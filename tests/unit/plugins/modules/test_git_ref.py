"""botstack.deploy.git_ref against real local bare repositories: exact tag/branch resolution, annotated and
lightweight tags, full ref names and commit ids, and credentials that reach git through files only."""
from __future__ import annotations

import os
import pathlib
import stat
import subprocess
import sys

import pytest

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
KNOWN = "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def git(*args, cwd=None):
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t", GIT_CONFIG_GLOBAL="/dev/null")
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def commit(work, name):
    (work / name).write_text(name)
    git("add", name, cwd=work)
    git("commit", "-qm", name, cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """main: c1 (tags v1 lightweight, v1.1 annotated) - c2 (branch backport/v2, tag v2 on c1 instead);
    tag/branch clash: tag v3 on c1, branch v3 on c2; tag and branch same: same on c1; refs/pull/7/head on c3."""
    base = tmp_path_factory.mktemp("git")
    work = base / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", str(work))
    c1 = commit(work, "one")
    git("tag", "v1", cwd=work)
    git("tag", "-a", "-m", "v1.1", "v1.1", cwd=work)
    git("tag", "v2", cwd=work)
    git("tag", "v3", cwd=work)
    git("tag", "same", cwd=work)
    git("branch", "same", cwd=work)
    git("checkout", "-qb", "backport/v2", cwd=work)
    c2 = commit(work, "two")
    git("branch", "v3", cwd=work)
    git("checkout", "-q", "main", cwd=work)
    c3 = git("commit-tree", "-p", c1, "-m", "pr", git("rev-parse", "HEAD^{tree}", cwd=work), cwd=work)
    bare = base / "app.git"
    git("clone", "-q", "--bare", str(work), str(bare))
    git("update-ref", "refs/pull/7/head", c3, cwd=bare)
    tag_object = git("rev-parse", "refs/tags/v1.1", cwd=bare)
    return dict(url=str(bare), c1=c1, c2=c2, c3=c3, tag_object=tag_object, base=base)


def test_a_lightweight_tag_is_never_confused_with_a_branch_ending_in_its_name(module, repo):
    result = module("git_ref", {"repo": repo["url"], "version": "v2"})
    assert (result["_rc"], result["commit"], result["ref"], result["kind"]) == (0, repo["c1"], "refs/tags/v2", "tag")
    assert result["changed"] is False and result["annotated"] is False
    assert result["command"] == ["git", "ls-remote", "--", repo["url"], "refs/tags/v2", "refs/tags/v2^{}",
                                 "refs/heads/v2"]


def test_an_annotated_tag_resolves_to_its_commit_not_the_tag_object(module, repo):
    result = module("git_ref", {"repo": repo["url"], "version": "v1.1"})
    assert result["commit"] == repo["c1"] != repo["tag_object"] and result["annotated"] is True


def test_a_tag_and_a_branch_of_one_name_on_different_commits_are_refused(module, repo):
    result = module("git_ref", {"repo": repo["url"], "version": "v3"})
    assert result["failed"] and result["reason"] == "ambiguous"
    assert "name refs/tags/v3 or refs/heads/v3" in result["msg"]
    assert module("git_ref", {"repo": repo["url"], "version": "refs/heads/v3"})["commit"] == repo["c2"]
    assert module("git_ref", {"repo": repo["url"], "version": "refs/tags/v3"})["commit"] == repo["c1"]


def test_a_tag_and_a_branch_on_the_same_commit_are_one_version(module, repo):
    result = module("git_ref", {"repo": repo["url"], "version": "same"})
    assert (result["commit"], result["kind"]) == (repo["c1"], "tag")


def test_branches_full_ref_names_and_head(module, repo):
    assert module("git_ref", {"repo": repo["url"], "version": "backport/v2"})["commit"] == repo["c2"]
    result = module("git_ref", {"repo": repo["url"], "version": "refs/pull/7/head"})
    assert (result["commit"], result["ref"], result["kind"]) == (repo["c3"], "refs/pull/7/head", "ref")
    assert module("git_ref", {"repo": repo["url"], "version": "HEAD"})["commit"] == repo["c1"]


def test_a_full_commit_id_is_used_as_it_is(module, repo):
    result = module("git_ref", {"repo": repo["url"], "version": repo["c2"].upper()})
    assert (result["commit"], result["ref"], result["kind"]) == (repo["c2"], None, "commit")


def test_missing_abbreviated_and_invalid_versions(module, repo):
    result = module("git_ref", {"repo": repo["url"], "version": "v9"})
    assert result["reason"] == "missing" and "git ls-remote --tags --heads " + repo["url"] in result["msg"]
    assert module("git_ref", {"repo": repo["url"], "version": "refs/tags/v9"})["reason"] == "missing"
    result = module("git_ref", {"repo": repo["url"], "version": repo["c1"][:10]})
    assert result["reason"] == "abbreviated" and result["msg"].startswith('"%s"' % repo["c1"][:10])


def test_an_option_for_version_never_reaches_git(module, repo, tmp_path):
    marker = tmp_path / "pwned"
    result = module("git_ref", {"repo": repo["url"], "version": "--upload-pack=touch %s" % marker})
    assert result["reason"] == "invalid" and "command" not in result and not marker.exists()
    result = module("git_ref", {"repo": "--upload-pack=touch %s" % marker, "version": "v2"})
    assert result["reason"] == "unreadable" and not marker.exists()


def test_an_unreadable_repository_says_why(module, tmp_path):
    result = module("git_ref", {"repo": str(tmp_path / "nope.git"), "version": "v2"})
    assert result["failed"] and result["reason"] == "unreadable" and "nope.git" in result["stderr"]


def test_check_mode_reads_the_same(module, repo):
    result = module("git_ref", {"repo": repo["url"], "version": "v2"}, check=True)
    assert result["commit"] == repo["c1"] and result["changed"] is False


def test_no_git_on_the_host_is_reported_as_such(module, repo, tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(sys.executable, bindir / "python3")
    monkeypatch.setenv("PATH", str(bindir))
    result = module("git_ref", {"repo": repo["url"], "version": "v2"})
    assert result["reason"] == "git_missing" and "git package" in result["msg"]


@pytest.mark.parametrize("args, needle", [
    ({"repo": "https://bot:tok@h/r.git"}, "repo carries credentials"),
    ({"repo": "/srv/r.git", "credentials": "bot:tok"}, "credentials apply to an https repo"),
    ({"repo": "https://h/r.git", "ssh_key": KEY, "known_hosts": KNOWN}, "apply to an SSH repo"),
    ({"repo": "git@h:r.git", "ssh_key": KEY}, "ssh_key needs known_hosts"),
    ({"repo": "git@h:r.git", "ssh_key": "ssh-ed25519 AAAA me", "known_hosts": KNOWN}, "private key header"),
    ({"repo": "git@h:r.git", "ssh_key": KEY, "known_hosts": "SHA256:xyz"}, "known_hosts must hold"),
])
def test_options_that_do_not_fit_are_refused_without_echoing_secrets(module, args, needle):
    result = module("git_ref", dict({"version": "v2"}, **args))
    assert result["reason"] == "options" and needle in result["msg"]
    assert "tok" not in str(result) and "b3BlbnNz" not in str(result)


FAKE_SSH = r'''#!/bin/sh
# Records how git ran ssh (and what the key file looked like), then serves the repository locally.
{ echo "ARGV $*"; for a in "$@"; do case "$prev" in -i) echo "KEY $(stat -c %a "$a") $(cat "$a" | head -c 20)";; esac
  case "$a" in UserKnownHostsFile=*) echo "KNOWN $(cat "${a#UserKnownHostsFile=}")";; esac; prev=$a; done; } >> "$LOG"
for a; do last=$a; done
exec sh -c "$last"
'''


def test_the_deploy_key_and_pinned_host_keys_reach_ssh_through_files_only(module, repo, tmp_path, monkeypatch):
    bindir = tmp_path / "sshbin"
    bindir.mkdir()
    ssh = bindir / "ssh"
    ssh.write_text(FAKE_SSH)
    ssh.chmod(0o755)
    log = tmp_path / "ssh.log"
    monkeypatch.setenv("LOG", str(log))
    result = module("git_ref", {"repo": "git@127.0.0.1:%s" % repo["url"], "version": "v2", "ssh_key": KEY,
                                "known_hosts": KNOWN}, extra_path=str(bindir))
    assert result["commit"] == repo["c1"], result
    seen = log.read_text()
    argv = seen.splitlines()[0]
    assert "-o IdentitiesOnly=yes" in argv and "-o StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv
    assert "GlobalKnownHostsFile=/dev/null" in argv and "b3BlbnNz" not in argv
    assert "KEY 600 -----BEGIN OPENSSH" in seen and "KNOWN " + KNOWN in seen
    assert "b3BlbnNz" not in str(result)
    # The key's temporary directory is gone.
    key_path = argv.split("-i ")[1].split()[0]
    assert not pathlib.Path(key_path).exists() and not pathlib.Path(key_path).parent.exists()


def test_https_credentials_go_to_a_store_file_git_reads(module, tmp_path, monkeypatch):
    """No https server here: a fake git-remote-https shows the credential git would send, via `git credential
    fill` from inside the transport, and what it was run with."""
    bindir = tmp_path / "gitbin"
    bindir.mkdir()
    log = tmp_path / "https.log"
    helper = bindir / "git-remote-https"
    helper.write_text("#!/bin/sh\n{ echo \"ARGV $*\"; printf 'protocol=https\\nhost=git.example.com\\n\\n' | "
                      "git credential fill; env | grep '^GIT_CONFIG'; "
                      "stat -c 'MODE %%a' \"${GIT_CONFIG_VALUE_1#store --file=}\"; } > %s 2>&1\nexit 1\n" % log)
    helper.chmod(0o755)
    exec_path = git("--exec-path")
    for name in os.listdir(exec_path):
        if name != "git-remote-https":
            os.symlink(os.path.join(exec_path, name), bindir / name)
    monkeypatch.setenv("GIT_EXEC_PATH", str(bindir))
    result = module("git_ref", {"repo": "https://git.example.com/bots/app.git", "version": "v2",
                                "credentials": "bot:s3cr%40t"})
    seen = log.read_text()
    assert result["reason"] == "unreadable" and "s3cr" not in str(result)
    # The transport got the URL without credentials; git asked the store file for them.
    assert seen.splitlines()[0] == "ARGV https://git.example.com/bots/app.git https://git.example.com/bots/app.git"
    assert "username=bot\npassword=s3cr@t" in seen and "MODE 600" in seen
    assert "GIT_CONFIG_VALUE_1=store --file=" in seen and "s3cr" not in seen.split("password=")[0]
    store_file = pathlib.Path(seen.split("GIT_CONFIG_VALUE_1=store --file=")[1].split()[0])
    assert not store_file.exists() and not store_file.parent.exists()
