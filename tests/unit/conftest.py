"""Run the collection's modules the way Ansible does: a separate Python process
reading its arguments from a JSON file, printing a JSON result."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import uuid

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
MODULES = REPO / "plugins" / "modules"


def module_env(extra_path: str | None = None) -> dict:
    env = dict(os.environ)
    # The checkout is importable as ansible_collections.botstack.deploy through the symlink.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if extra_path:
        env["PATH"] = extra_path + os.pathsep + env["PATH"]
    return env


def run_module(name: str, args: dict, tmp_path: pathlib.Path, check: bool = False, diff: bool = False,
               extra_path: str | None = None, timeout: float = 60) -> dict:
    payload = dict(args)
    payload.update({"_ansible_check_mode": check, "_ansible_diff": diff, "_ansible_remote_tmp": str(tmp_path),
                    "_ansible_keep_remote_files": False})
    # A unique name: tests may run modules from several threads at once.
    args_file = tmp_path / f"args-{name}-{os.getpid()}-{uuid.uuid4().hex[:12]}.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": payload}))
    proc = subprocess.run([sys.executable, str(MODULES / f"{name}.py"), str(args_file)],
                          capture_output=True, text=True, env=module_env(extra_path), timeout=timeout, check=False)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"{name} printed no JSON (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result["_rc"] = proc.returncode
    return result


@pytest.fixture
def module(tmp_path):
    work = tmp_path / "module-args"
    work.mkdir()

    def _run(name, args, **kwargs):
        return run_module(name, args, work, **kwargs)

    return _run
