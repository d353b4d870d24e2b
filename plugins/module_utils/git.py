# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Git remotes without leaking their credentials (shared by the git_ref module and the git_remote and
git_env filters): a URL split from its credentials, the environment that gives git the credentials and
the deploy key through root-only files (paths only), and a version resolved exactly from ls-remote."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible.module_utils.six.moves.urllib.parse import quote as quote_url, unquote

try:
    from shlex import quote
except ImportError:  # Python 2 (never on the supported hosts)
    from pipes import quote

# A full commit id: SHA-1, or SHA-256 in a repository using it.
FULL_ID = re.compile(r"^(?:[0-9a-fA-F]{40}|[0-9a-fA-F]{64})$")
# Hex too short to be a full id: a commit id git would expand, which ls-remote cannot.
ABBREVIATED_ID = re.compile(r"^[0-9a-fA-F]{4,39}$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SSH_SCHEMES = ("ssh", "git+ssh", "ssh+git")
# What git check-ref-format refuses in a ref name (and an option's leading dash).
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|^[-/.]|/\.|[/.]$|\.lock(?:/|$)")
# A private key file of any kind ssh reads (OpenSSH, PEM RSA/EC/DSA, PKCS#8).
_PRIVATE_KEY = re.compile(r"^-----BEGIN (?:OPENSSH |RSA |EC |DSA |ENCRYPTED )?PRIVATE KEY-----$", re.M)
# One known_hosts line: [@marker] hosts keytype key [comment].
_KNOWN_HOST = re.compile(r"^(?:@(?:cert-authority|revoked)\s+)?\S+\s+(?:ssh-|ecdsa-|sk-)\S+\s+[A-Za-z0-9+/]+=*(?:\s.*)?$")
_USERINFO_IN_TEXT = re.compile(r"(://)[^/@\s]+@")


class GitRefError(Exception):
    """A version that cannot be resolved; reason is invalid, abbreviated, ambiguous or missing."""

    def __init__(self, reason, msg):
        super(GitRefError, self).__init__(msg)
        self.reason = reason
        self.msg = msg


def split_url(url):
    """The URL without its credentials, and what git needs to know about it.

    Returns url (no password, and no user for http(s)), transport (https, http, ssh, git, local
    or other), scheme, host, port, authority (host[:port]) and credentials (the userinfo of an
    http(s) URL, or of an SSH URL that carries a password, as written: percent-encoded)."""
    url = (url or "").strip()
    parts = dict(url=url, transport="local", scheme="", host="", port=None, authority="", credentials="")
    if not url:
        return parts
    match = _SCHEME.match(url)
    if match:
        scheme = match.group(1).lower()
        rest = url[match.end():]
        slash = rest.find("/")
        authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
        at = authority.rfind("@")
        userinfo, hostport = (authority[:at], authority[at + 1:]) if at >= 0 else ("", authority)
        host, port = _host_port(hostport)
        transport = ("ssh" if scheme in _SSH_SCHEMES else scheme if scheme in ("https", "http", "git")
                     else "local" if scheme == "file" else "other")
        if transport in ("https", "http"):
            kept, credentials = "", userinfo
        elif ":" in userinfo:  # an SSH (or other) login with a password: keep the login only
            kept, credentials = userinfo.split(":", 1)[0], userinfo
        else:
            kept, credentials = userinfo, ""
        parts.update(url="%s://%s%s%s" % (match.group(1), kept + "@" if kept else "", hostport, path),
                     transport=transport, scheme=scheme, host=host, port=port, authority=hostport,
                     credentials=credentials)
        return parts
    # git's rule: a colon before any slash makes [user@]host:path an SSH remote, anything else is a path.
    colon, slash = url.find(":"), url.find("/")
    if colon > 0 and (slash < 0 or colon < slash or url.startswith("[")):
        scp = re.match(r"^(?:(?P<user>[^@/]*)@)?(?P<host>\[[^\]]*\]|[^:/]+):(?P<path>.*)$", url)
        if scp:
            user = scp.group("user") or ""
            kept, credentials = (user.split(":", 1)[0], user) if ":" in user else (user, "")
            parts.update(url="%s%s:%s" % (kept + "@" if kept else "", scp.group("host"), scp.group("path")),
                         transport="ssh", scheme="ssh", host=scp.group("host").strip("[]"),
                         authority=scp.group("host"), credentials=credentials)
    return parts


def _host_port(hostport):
    match = re.match(r"^(\[[^\]]*\]|[^:]*)(?::(\d*))?$", hostport)
    if not match:
        return hostport, None
    return match.group(1).strip("[]"), int(match.group(2)) if match.group(2) else None


def redact_userinfo(text):
    """Text (git's messages) with the userinfo of any URL in it removed."""
    return _USERINFO_IN_TEXT.sub(r"\1", text or "")


def _store_encode(text):
    # As git credential-store writes its file (only RFC 3986 unreserved characters kept, lower-case hex), so
    # that git storing a credential it used rewrites the same line and the file written by a task stays as it is.
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote_url(unquote(text), safe="-._~"))


def summarize_error(text):
    """git's message, shorter where ssh shouts: a host key not among the pinned ones comes down to one line
    with the key the host sent."""
    text = redact_userinfo(text).replace("\r", "").strip()
    if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        sent = re.search(r"fingerprint for the (\S+) key sent by the remote host is\s+(\S+?)\.?$", text, re.M)
        unknown = re.search(r"No (\S+) host key is known for (\S+)", text)
        return "Host key verification failed: the host's key is not among the pinned ones%s" % (
            " (it sent the %s key %s)" % sent.groups() if sent
            else " (none for %s, which sent an %s key)" % (unknown.group(2), unknown.group(1)) if unknown else "")
    return text


def credential_line(parts):
    """The git credential store line of a split URL with credentials, scheme://user:password@host[:port]
    (a token alone is the user, with an empty password)."""
    user, password = (parts["credentials"] + ":").split(":", 1)
    password = password[:-1]
    return "%s://%s:%s@%s\n" % (parts["scheme"], _store_encode(user), _store_encode(password),
                                _store_encode(parts["authority"]))


def ssh_command(ssh_key_file=None, known_hosts_file=None):
    """GIT_SSH_COMMAND for a deploy key and pinned host keys: paths only, never the key."""
    words = ["ssh"]
    if ssh_key_file:
        words += ["-i", quote(ssh_key_file), "-o", "IdentitiesOnly=yes"]
    if known_hosts_file:
        words += ["-o", "UserKnownHostsFile=" + quote(known_hosts_file), "-o", "GlobalKnownHostsFile=/dev/null",
                  "-o", "StrictHostKeyChecking=yes"]
    return " ".join(words + ["-o", "BatchMode=yes"])


def git_env(credentials_file=None, ssh_key_file=None, known_hosts_file=None):
    """The environment git runs with: no prompt; the credentials through a store file
    (GIT_CONFIG_COUNT, git >= 2.31: the values are paths, never secrets, and nothing is written to a
    repository's .git/config); the deploy key and pinned host keys through GIT_SSH_COMMAND."""
    env = {"GIT_TERMINAL_PROMPT": "0"}
    if credentials_file:
        # The empty helper first drops the helpers of the host's git configuration.
        env.update(GIT_CONFIG_COUNT="2", GIT_CONFIG_KEY_0="credential.helper", GIT_CONFIG_VALUE_0="",
                   GIT_CONFIG_KEY_1="credential.helper",
                   GIT_CONFIG_VALUE_1="store --file=" + quote(credentials_file))
    if ssh_key_file or known_hosts_file:
        env["GIT_SSH_COMMAND"] = ssh_command(ssh_key_file, known_hosts_file)
    return env


def ssh_key_error(key):
    if not _PRIVATE_KEY.search((key or "").replace("\r", "")):
        return ("has no private key header (-----BEGIN OPENSSH PRIVATE KEY----- or -----BEGIN RSA PRIVATE "
                "KEY-----): give the deploy key's private key (e.g. from the vault), not its .pub line")
    return None


def known_hosts_error(text):
    lines = [line.strip() for line in (text or "").replace("\r", "").splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    bad = [line.split()[0] for line in lines if not _KNOWN_HOST.match(line)]
    if not lines:
        return "holds no host key line"
    if bad:
        return ("must hold known_hosts lines (host keytype key), e.g. the output of ssh-keyscan checked against "
                "the fingerprints the git host publishes; lines starting %s are not" % ", ".join(bad[:3]))
    return None


def version_error(version):
    if not version:
        return "is empty"
    if FULL_ID.match(version) or version == "HEAD":
        return None
    if _BAD_REF.search(version):
        return "is not a valid tag, branch or ref name (see git check-ref-format)"
    return None


def kind_of(ref):
    if ref.startswith("refs/tags/"):
        return "tag"
    if ref.startswith("refs/heads/"):
        return "branch"
    return "ref"


def ls_remote_patterns(version):
    """The patterns that make ls-remote list only the candidates (it matches by suffix: the
    answer is filtered exactly afterwards)."""
    if FULL_ID.match(version) or version == "HEAD":
        return ["HEAD"]
    if version.startswith("refs/"):
        return [version, version + "^{}"]
    return ["refs/tags/" + version, "refs/tags/" + version + "^{}", "refs/heads/" + version]


def parse_ls_remote(text):
    """{ref: object} and {ref: commit} of the annotated tags (their ^{} lines)."""
    refs, peeled = {}, {}
    for line in (text or "").splitlines():
        fields = line.split("\t")
        if len(fields) != 2:
            continue
        sha, name = fields[0].strip(), fields[1].strip()
        if name.endswith("^{}"):
            peeled[name[:-3]] = sha
        else:
            refs[name] = sha
    return refs, peeled


def resolve(version, refs, peeled, repo):
    """The commit, full ref name and kind (tag, branch, ref, commit) deploy_version names, exactly:
    a full commit id as is; a full ref name (refs/..., HEAD) itself; a short name as refs/tags/<name>
    (annotated tags peeled to their commit) or refs/heads/<name>, an error when both exist and differ."""
    problem = version_error(version)
    if problem:
        raise GitRefError("invalid", '"%s" %s' % (version, problem))
    if FULL_ID.match(version):
        return dict(commit=version.lower(), ref=None, kind="commit", annotated=False)

    def found(ref):
        return dict(commit=peeled.get(ref, refs[ref]), ref=ref, kind=kind_of(ref), annotated=ref in peeled)

    if version.startswith("refs/") or version == "HEAD":
        if version in refs:
            return found(version)
        raise GitRefError("missing", '"%s" is not a ref of %s; list them with: git ls-remote %s'
                          % (version, repo, repo))
    tag, branch = "refs/tags/" + version, "refs/heads/" + version
    candidates = [found(ref) for ref in (tag, branch) if ref in refs]
    if len(candidates) == 2 and candidates[0]["commit"] != candidates[1]["commit"]:
        raise GitRefError("ambiguous", '"%s" is ambiguous in %s: tag %s is commit %s and branch %s is commit %s; name '
                          "%s or %s" % (version, repo, tag, candidates[0]["commit"][:12], branch,
                                        candidates[1]["commit"][:12], tag, branch))
    if candidates:
        return candidates[0]
    if ABBREVIATED_ID.match(version):
        raise GitRefError("abbreviated", '"%s" looks like an abbreviated commit id, and a remote repository lists refs, '
                          "not commits: give the full 40-hex id (git rev-parse %s in a clone), a tag or a branch"
                          % (version, version))
    raise GitRefError("missing", '"%s" is not a tag or branch of %s (nor a refs/... name or a full commit id); '
                      "list them with: git ls-remote --tags --heads %s" % (version, repo, repo))
