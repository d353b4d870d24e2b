"""CPython built by pyenv from offline sources, uv, and the release venv."""
from __future__ import annotations

import json

import pytest
from conftest import assert_role_rejects, molecule_path, run_module

HOST = "python-host"
PYTHON = "/opt/pyenv/versions/3.11.2/bin/python3"
VENVS = "/opt/botstack/venvs"
RELEASE = "/srv/botstack/releases/r1"


def release_venv(host) -> str:
    return host.file(f"{RELEASE}/.venv").linked_to


def test_pyenv_is_checked_out_at_the_pinned_tag_for_its_owner(host):
    root = host.file("/opt/pyenv")
    assert root.user == "botstack"
    tag = host.check_output("sudo -u botstack git -C /opt/pyenv describe --tags --exact-match")
    assert tag == "v2.6.30"
    assert host.check_output("PYENV_ROOT=/opt/pyenv /opt/pyenv/bin/pyenv versions --bare") == "3.11.2"


def test_interpreter_is_the_requested_version(host):
    assert host.check_output(f"{PYTHON} -c 'import platform; print(platform.python_version())'") == "3.11.2"
    assert host.file(PYTHON).user == "botstack"


def test_build_options_reach_python_build(host):
    # python_build_configure_opts and python_build_env (the scenario's CFLAGS) are what configure saw.
    config = host.check_output(f"{PYTHON} -c 'import sysconfig; print(sysconfig.get_config_var(\"CONFIG_ARGS\"))'")
    assert "--disable-test-modules" in config
    assert "CFLAGS=-O1 -g0" in config
    assert host.run(f"{PYTHON} -c 'import test.support'").rc != 0


@pytest.mark.parametrize("module", ["ssl", "sqlite3", "lzma", "ctypes", "bz2", "zlib", "readline", "uuid"])
def test_standard_extension_modules_import(host, module):
    host.run_expect([0], f"{PYTHON} -c 'import {module}'")


def test_ssl_links_the_system_openssl_and_verifies(host):
    version = host.check_output(f"{PYTHON} -c 'import ssl; print(ssl.OPENSSL_VERSION)'")
    assert version.startswith("OpenSSL 3."), version
    host.run_expect([0], f"{PYTHON} -c 'import ssl; assert ssl.create_default_context().verify_mode == ssl.CERT_REQUIRED'")


def test_pip_and_setuptools_are_pinned_in_the_interpreter(host):
    out = host.check_output(f"{PYTHON} -m pip list --format json --disable-pip-version-check")
    versions = {p["name"]: p["version"] for p in json.loads(out)}
    assert versions["pip"] == "26.3" and versions["setuptools"] == "84.2.1"


def test_uv_is_pinned_in_its_own_venv(host):
    assert host.check_output("/opt/botstack/python-tools/bin/uv --version").split()[1] == "0.13.9"


def test_release_venv_is_keyed_and_runs_console_scripts(host):
    venv = release_venv(host)
    assert venv.startswith(f"{VENVS}/cpython-3.11.2-"), venv
    manifest = json.loads(host.file(f"{venv}/.botstack-venv.json").content_string)
    assert manifest["installer"] == "uv"
    assert manifest["python"]["version"] == "3.11.2"
    assert host.check_output(f"{venv}/bin/python -c 'import sys; print(sys.base_prefix)'") == "/opt/pyenv/versions/3.11.2"
    assert "uvicorn" in host.check_output(f"{RELEASE}/.venv/bin/uvicorn --version")
    host.run_expect([0], f"{RELEASE}/.venv/bin/python -c 'import fastapi, asyncpg, taskiq, taskiq_redis, aiogram, uvloop'")
    assert host.check_output(f"{venv}/bin/python -m pip --version").split()[1] == "26.3"
    assert host.file(venv).user == "root" and host.file(venv).mode == 0o755


def test_same_lock_reuses_the_venv_without_installing(host):
    result = run_module(HOST, "botstack.deploy.python_venv", {
        "venvs_dir": VENVS, "interpreter": PYTHON, "requirements": f"{RELEASE}/requirements.lock",
        "seed_packages": ["pip==26.3", "setuptools==84.2.1"], "uv_path": "/opt/botstack/python-tools/bin/uv"})
    assert result["failed"] is False and result["changed"] is False and result["reused"] is True, result
    assert result["path"] == release_venv(host)


def test_new_lock_builds_a_new_venv_and_prune_keeps_the_used_one(host):
    project = molecule_path("MOLECULE_PROJECT_DIRECTORY")
    host.run_expect([0], "mkdir -p /srv/botstack/next")
    copied = run_module(HOST, "ansible.builtin.copy", {"src": str(project / "molecule/python/files/requirements-v2.lock"),
                                                       "dest": "/srv/botstack/next/requirements.lock"})
    assert copied["failed"] is False, copied
    old = release_venv(host)
    new = run_module(HOST, "botstack.deploy.python_venv", {
        "venvs_dir": VENVS, "interpreter": PYTHON, "requirements": "/srv/botstack/next/requirements.lock",
        "seed_packages": ["pip==26.3", "setuptools==84.2.1"], "uv_path": "/opt/botstack/python-tools/bin/uv",
        "cache_dir": "/var/cache/botstack/python", "ca_bundle": "/etc/ssl/certs/ca-certificates.crt"})
    assert new["failed"] is False and new["changed"] is True, new.get("msg", new)
    assert new["path"] != old
    host.run_expect([0], f"{new['path']}/bin/python -c 'import orjson'")
    host.run_expect([1], f"{old}/bin/python -c 'import orjson'")
    assert "uvicorn" in host.check_output(f"{old}/bin/uvicorn --version")

    pruned = run_module(HOST, "botstack.deploy.python_venv",
                        {"venvs_dir": VENVS, "state": "pruned", "app_roots": ["/srv/botstack"]})
    assert pruned["failed"] is False and pruned["removed"] == [new["path"]], pruned
    assert not host.file(new["path"]).exists
    assert "uvicorn" in host.check_output(f"{RELEASE}/.venv/bin/uvicorn --version")


@pytest.mark.parametrize(("role_vars", "fragment"), [
    ({"python_version": "3.11.99"}, "pyenv install --list"),
    ({"python_version": "3.12"}, "python_version must be a full CPython release"),
    ({"python_pyenv_version": "v0.0.0-none"}, 'python_pyenv_version "v0.0.0-none" is neither a tag'),
    ({"python_pyenv_git_url": "https://127.0.0.1:9/pyenv.git", "python_pyenv_root": "/opt/pyenv-other"},
     'python_pyenv_git_url "https://127.0.0.1:9/pyenv.git" cannot be read'),
    ({"python_pyenv_owner": "nobody-here"}, 'python_pyenv_owner "nobody-here" is not a user'),
])
def test_bad_input_is_refused_before_anything_changes(host, ephemeral_dir, role_vars, fragment):
    base = {"python_version": "3.11.2", "python_pyenv_git_url": "file:///srv/mirror/pyenv.git",
            "python_pyenv_owner": "botstack"}
    assert_role_rejects("python", {**base, **role_vars}, fragment, ephemeral_dir)
    assert not host.file("/opt/pyenv-other").exists
