"""The deploy role's source tasks (validate_source, source, fetch_git, unpack_archive) run on localhost
against real local repositories and archives, in one playbook run at -vvv: exact refs, a refused ambiguous
name, credentials stripped from everything git and Ansible show or keep, a deploy key given to ssh as a
root-only file, a monorepo's subdirectory as the release and archives with a top-level directory."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
CASE = pathlib.Path(__file__).resolve().parent / "deploy_source" / "case.yml"
TOKEN = "glpat-Sup3rS3cret"
KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\r\nb3BlbnNzaC1rZXktdjEAAAAAKEYMATERIALxyz\r\n"
       "-----END OPENSSH PRIVATE KEY-----")
KNOWN = "# pinned\ngit.example.test ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the role writes root-owned files"),
    pytest.mark.skipif(shutil.which("git") is None, reason="needs git"),
]

FAKE_SSH = r'''#!/bin/sh
# Records how git ran ssh, then serves the repository locally.
{ echo "ARGV $*"; prev=; for a in "$@"; do
    [ "$prev" = -i ] && echo "KEYMODE $(stat -c %a "$a")" && { tr -d '\r' < "$a" | cmp -s - "$EXPECTED_KEY" && echo KEYSAME; }
    prev=$a; done; } >> "$SSH_LOG"
for a; do last=$a; done
exec sh -c "$last"
'''


def git(*args, cwd=None):
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t", GIT_CONFIG_GLOBAL="/dev/null")
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("deploy-source")
    src = work / "src"
    (src / "backend" / "app").mkdir(parents=True)
    (src / "frontend").mkdir()
    git("init", "-q", "-b", "main", str(src))
    (src / "backend" / "requirements.lock").write_text("fastapi\n")
    (src / "backend" / "app" / "main.py").write_text("v2\n")
    (src / "frontend" / "index.html").write_text("ui\n")
    (src / "README.md").write_text("top\n")
    git("add", ".", cwd=src)
    git("commit", "-qm", "c1", cwd=src)
    git("tag", "v2", cwd=src)
    git("tag", "v3", cwd=src)
    git("checkout", "-qb", "backport/v2", cwd=src)
    (src / "backend" / "app" / "main.py").write_text("backport\n")
    git("commit", "-qam", "c2", cwd=src)
    git("branch", "v3", cwd=src)
    git("checkout", "-q", "main", cwd=src)
    (src / "backend" / "app" / "main.py").write_text("v4\n")
    git("rm", "-rq", "frontend", cwd=src)
    git("commit", "-qam", "c4", cwd=src)
    git("tag", "-a", "-m", "v4", "v4", cwd=src)
    bare = work / "app.git"
    git("clone", "-q", "--bare", str(src), str(bare))
    git("archive", "--format=tar.gz", "--prefix=app-1.0/", "-o", str(work / "app-1.0.tar.gz"), "v2", cwd=src)
    git("archive", "--format=zip", "--prefix=app-1.0/", "-o", str(work / "app-1.0.zip"), "v2", cwd=src)
    git("archive", "--format=tar.gz", "-o", str(work / "flat.tar.gz"), "v2", cwd=src)
    # https://git.example.test/ is this repository to git (the URL still goes everywhere the role puts it).
    (work / "gitconfig").write_text('[url "%s"]\n\tinsteadOf = https://git.example.test/bots/app.git\n' % bare)
    bindir = work / "bin"
    bindir.mkdir()
    (bindir / "ssh").write_text(FAKE_SSH)
    (bindir / "ssh").chmod(0o755)
    (work / "expected_key").write_text(KEY.replace("\r", "") + "\n")

    tags = {name: git("rev-parse", name + "^{commit}", cwd=bare) for name in ("v2", "backport/v2", "v4")}
    cases = [
        {"name": "tag", "version": "v2"},
        {"name": "newer", "version": "v4"},
        {"name": "ambiguous", "version": "v3"},
        {"name": "subdir", "version": "v4", "subdir": "backend/"},
        {"name": "no-subdir", "version": "v4", "subdir": "frontend"},
        {"name": "bad-subdir", "version": "v4", "subdir": "../etc"},
        {"name": "ssh", "version": "v4", "repo": "ssh://git@git.example.test%s" % bare, "ssh_key": KEY,
         "known_hosts": KNOWN},
        {"name": "ssh-no-pin", "version": "v4", "repo": "git@git.example.test:%s" % bare, "ssh_key": KEY},
        {"name": "key-not-ssh", "version": "v4", "ssh_key": "ssh-ed25519 AAAA me", "known_hosts": "SHA256:x h"},
        # Last of the git cases: the clone of the SSH URL is replaced, the key files removed.
        {"name": "https", "version": "v2", "repo": "https://ci:%s@git.example.test/bots/app.git" % TOKEN},
        {"name": "tgz", "source": "archive", "archive": str(work / "app-1.0.tar.gz")},
        {"name": "zip", "source": "archive", "archive": str(work / "app-1.0.zip")},
        {"name": "keep-top", "source": "archive", "archive": str(work / "app-1.0.tar.gz"), "strip": False},
        {"name": "strip-flat", "source": "archive", "archive": str(work / "flat.tar.gz"), "strip": True},
    ]
    playbook = work / "play.yml"
    playbook.write_text(json.dumps([{
        "name": "Run the deploy role's source tasks", "hosts": "localhost", "gather_facts": False,
        "vars": {"app_layout": {"config_hash": "x", "name": "app", "root": str(work / "root")},
                 "deploy_cache_dir": str(work / "cache"), "repo_url": str(bare), "work": str(work),
                 "cases": cases},
        "tasks": [
            {"name": "Run each case", "ansible.builtin.include_tasks": str(CASE),
             "loop": "{{ cases }}", "loop_control": {"loop_var": "case", "label": "{{ case.name }}"}},
            {"name": "Write the results", "ansible.builtin.copy": {
                "content": "{{ results | to_json }}", "dest": str(work / "results.json"), "mode": "0600"}},
        ],
    }]))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH="%s/.collections:%s" % (ROOT, ROOT), ANSIBLE_NOCOLOR="1",
               ANSIBLE_STDOUT_CALLBACK="default", GIT_CONFIG_GLOBAL=str(work / "gitconfig"),
               PATH="%s:%s" % (bindir, os.environ["PATH"]), SSH_LOG=str(work / "ssh.log"),
               EXPECTED_KEY=str(work / "expected_key"))
    proc = subprocess.run([str(pathlib.Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c",
                           "local", "-vvv", "-e", "ansible_python_interpreter=%s" % sys.executable, str(playbook)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    results = json.loads((work / "results.json").read_text())
    return dict(work=work, results=results, output=proc.stdout + proc.stderr, tags=tags, bare=bare)


def files(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_a_tag_is_the_tag_not_a_branch_ending_in_its_name(run):
    tag = run["results"]["tag"]
    assert tag["ok"] and (tag["commit"], tag["ref"], tag["kind"]) == (run["tags"]["v2"], "refs/tags/v2", "tag")
    assert tag["release_id"] == "v2-" + run["tags"]["v2"][:12]
    release = run["work"] / "releases" / "tag"
    assert (release / "backend" / "app" / "main.py").read_text() == "v2\n" and not (release / ".git").exists()


def test_an_annotated_tag_is_its_commit_and_the_clone_is_reused(run):
    newer = run["results"]["newer"]
    assert newer["commit"] == run["tags"]["v4"] and newer["release_id"] == "v4-" + run["tags"]["v4"][:12]
    assert files(run["work"] / "releases" / "newer") == ["README.md", "backend", "backend/app", "backend/app/main.py",
                                                          "backend/requirements.lock"]


def test_an_ambiguous_name_is_refused_naming_the_fix(run):
    ambiguous = run["results"]["ambiguous"]
    assert not ambiguous["ok"] and ambiguous["msg"].startswith('deploy_version "v3" is ambiguous')
    assert "name refs/tags/v3 or refs/heads/v3" in ambiguous["msg"] and "Nothing was changed" in ambiguous["msg"]


def test_a_subdirectory_is_the_release(run):
    assert files(run["work"] / "releases" / "subdir") == ["app", "app/main.py", "requirements.lock"]
    assert run["results"]["subdir"]["release_id"] == "v4-" + run["tags"]["v4"][:12]
    missing = run["results"]["no-subdir"]
    assert not missing["ok"] and missing["msg"].startswith('deploy_git_subdir "frontend" is not a directory')
    assert "relative path" in run["results"]["bad-subdir"]["msg"]


def test_https_credentials_are_nowhere_but_the_root_only_file(run):
    assert run["results"]["https"]["ok"]
    assert TOKEN not in run["output"]
    # -vvv shows the environment of git's tasks: the credentials file's path only.
    assert "store --file=%s/cache/auth/git-credentials" % run["work"] in run["output"]
    credentials = run["work"] / "cache" / "auth" / "git-credentials"
    assert credentials.read_text() == "https://ci:%s@git.example.test\n" % TOKEN
    assert oct(credentials.stat().st_mode & 0o777) == "0o600"


def test_the_deploy_key_reaches_ssh_as_a_root_only_file_with_pinned_host_keys(run):
    assert run["results"]["ssh"]["ok"], run["results"]["ssh"]
    seen = (run["work"] / "ssh.log").read_text()
    fetch = [line for line in seen.splitlines() if line.startswith("ARGV") and "/cache/auth/deploy_key" in line]
    assert fetch and "-o StrictHostKeyChecking=yes" in fetch[0] and "-o IdentitiesOnly=yes" in fetch[0]
    assert "UserKnownHostsFile=%s/cache/auth/known_hosts" % run["work"] in fetch[0]
    assert "KEYMODE 600" in seen and "KEYSAME" in seen and "KEYMATERIAL" not in seen.replace("KEYSAME", "")
    assert "KEYMATERIAL" not in run["output"]
    # A later deploy without a key removed the key files.
    assert not (run["work"] / "cache" / "auth" / "deploy_key").exists()
    assert run["results"]["ssh-no-pin"]["msg"].startswith("deploy_git_known_hosts is empty")
    assert "private key header" in run["results"]["key-not-ssh"]["msg"]
    assert "not one: use the repository's SSH URL" in run["results"]["key-not-ssh"]["msg"]
    assert "deploy_git_known_hosts must hold known_hosts lines" in run["results"]["key-not-ssh"]["msg"]


def test_the_cached_clone_never_keeps_credentials_and_follows_the_repository_url(run):
    config = (run["work"] / "cache" / "repo" / ".git" / "config").read_text()
    assert TOKEN not in config and "url = https://git.example.test/bots/app.git" in config
    # The private index left the cached clone's own alone.
    assert git("status", "--porcelain", cwd=run["work"] / "cache" / "repo") == ""


def test_archives_lose_their_one_top_level_directory(run):
    project = ["README.md", "backend", "backend/app", "backend/app/main.py", "backend/requirements.lock",
               "frontend", "frontend/index.html"]
    for name in ("tgz", "zip"):
        assert run["results"][name]["ok"], run["results"][name]
        assert files(run["work"] / "releases" / name) == project, name
        assert oct((run["work"] / "releases" / name).stat().st_mode & 0o777) == "0o755"
    assert files(run["work"] / "releases" / "keep-top") == ["app-1.0"] + ["app-1.0/" + p for p in project]
    strip = run["results"]["strip-flat"]
    assert not strip["ok"] and strip["msg"].startswith("deploy_archive_strip_top is true, but flat.tar.gz has 3 entries")
    assert not (run["work"] / "cache" / "unpack").exists()
