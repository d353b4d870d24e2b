"""The distribution's python3 with uv and pip-built venvs; PEP 668 left alone."""
from __future__ import annotations

import json

from conftest import assert_role_rejects, play_recap, run_playbook

RELEASE = "/srv/botstack/releases/r1"


def test_system_python_stays_externally_managed(host):
    minor = host.check_output("python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'")
    marker = host.file(f"/usr/lib/python{minor}/EXTERNALLY-MANAGED")
    assert marker.exists
    owner = host.check_output(f"dpkg -S {marker.path}").split(":")[0]
    assert host.run(f"dpkg --verify {owner}").stdout.count("EXTERNALLY-MANAGED") == 0
    # Debian's python3 has no pip (and ensurepip is disabled); uv honours PEP 668 the same way pip does.
    refused = host.run("/opt/botstack/python-tools/bin/uv pip install --system --python /usr/bin/python3 --offline six")
    assert refused.rc != 0 and "externally managed" in refused.stderr.lower(), refused.stderr
    assert host.run("python3 -c 'import six'").rc != 0, "nothing may have been installed into the system Python"


def test_uv_venv_runs_on_the_distribution_python(host):
    venv = host.file(f"{RELEASE}/.venv").linked_to
    system_version = host.check_output("python3 -c 'import platform; print(platform.python_version())'")
    assert venv.startswith(f"/opt/botstack/venvs/cpython-{system_version}-"), venv
    assert host.check_output(f"{venv}/bin/python -c 'import sys; print(sys.base_prefix)'") == "/usr"
    assert "uvicorn" in host.check_output(f"{RELEASE}/.venv/bin/uvicorn --version")
    host.run_expect([0], f"{venv}/bin/python -c 'import fastapi, asyncpg, taskiq, aiogram'")


def test_pip_fallback_builds_the_same_key_with_working_scripts(host):
    uv_venv = host.file(f"{RELEASE}/.venv").linked_to
    name = uv_venv.rsplit("/", 1)[1]
    pip_venv = f"/opt/botstack/venvs-pip/{name}"
    manifest = json.loads(host.file(f"{pip_venv}/.botstack-venv.json").content_string)
    assert manifest["installer"] == "pip"
    assert host.file(f"{pip_venv}/bin/uvicorn").content_string.startswith(f"#!{pip_venv}/bin/python")
    assert "uvicorn" in host.check_output(f"{pip_venv}/bin/uvicorn --version")
    assert host.check_output(f"{pip_venv}/bin/python -m pip --version").split()[1] == "26.3"


def test_unresolvable_requirements_name_the_variable_and_leave_nothing(host, ephemeral_dir):
    host.run_expect([0], "mkdir -p /srv/botstack/broken && "
                         "echo 'botstack-no-such-package==0.0.1' > /srv/botstack/broken/requirements.lock")
    before = host.check_output("ls -A /opt/botstack/venvs")
    playbook = ephemeral_dir / "venv-unresolvable.yml"
    playbook.write_text(json.dumps([{
        "name": "Venv for a lock that cannot resolve", "hosts": "all", "become": True,
        "tasks": [{"ansible.builtin.include_role": {"name": "botstack.deploy.python", "tasks_from": "venv"},
                   "vars": {"python_provider": "system",
                            "python_venv_requirements": "/srv/botstack/broken/requirements.lock"}}],
    }]))
    result = run_playbook(playbook)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert 'python_venv_requirements "/srv/botstack/broken/requirements.lock"' in output, output[-3000:]
    assert "botstack-no-such-package" in output
    assert all(c["changed"] == 0 for c in play_recap(result.stdout).values())
    assert host.check_output("ls -A /opt/botstack/venvs") == before


def test_too_old_system_python_is_refused(host, ephemeral_dir):
    assert_role_rejects("python", {"python_provider": "system", "python_system_min_version": "3.99"},
                        "older than python_system_min_version 3.99", ephemeral_dir)
