"""botstack.deploy.python_venv building real venvs with uv and pip, offline.

The package installed is a wheel written here (a console script included), so
the tests need no index; the installers are the real ones.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

UV = shutil.which("uv") or str(pathlib.Path(sys.executable).parent / "uv")
needs_uv = pytest.mark.skipif(not os.access(UV, os.X_OK), reason="uv is installed by scripts/setup.sh")


def make_wheel(directory: pathlib.Path, version: str = "1.0") -> pathlib.Path:
    """A minimal pure-Python wheel with a console script `botstack-sample`."""
    name = f"botstack_sample-{version}"
    files = {
        "botstack_sample/__init__.py": f"def main():\n    print('botstack-sample {version}')\n",
        f"{name}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: botstack-sample\nVersion: {version}\n",
        f"{name}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{name}.dist-info/entry_points.txt": "[console_scripts]\nbotstack-sample = botstack_sample:main\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{name}.dist-info/RECORD,,")
    files[f"{name}.dist-info/RECORD"] = "\n".join(record) + "\n"
    wheel = directory / f"{name}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


@pytest.fixture
def sample(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    v1, v2 = make_wheel(wheels, "1.0"), make_wheel(wheels, "2.0")
    lock1 = tmp_path / "requirements-1.lock"
    lock1.write_text(f"# locked\nbotstack-sample @ {v1.as_uri()}\n")
    lock2 = tmp_path / "requirements-2.lock"
    lock2.write_text(f"botstack-sample @ {v2.as_uri()}\n")
    return {"lock1": lock1, "lock2": lock2, "venvs": tmp_path / "venvs", "root": tmp_path}


def venv_args(sample, lock="lock1", **extra):
    args = {"venvs_dir": str(sample["venvs"]), "interpreter": sys.executable,
            "requirements": str(sample[lock]), "uv_path": UV, "cache_dir": str(sample["root"] / "cache")}
    args.update(extra)
    return args


def run_script(venv: str) -> str:
    return subprocess.run([os.path.join(venv, "bin", "botstack-sample")], capture_output=True, text=True,
                          check=True).stdout.strip()


def entries(sample) -> list[str]:
    return sorted(p.name for p in sample["venvs"].iterdir() if p.name not in (".venvs.lock", ".cache"))


@needs_uv
def test_uv_builds_once_then_reuses(module, sample):
    first = module("python_venv", venv_args(sample, installer="uv"), timeout=180)
    assert first["_rc"] == 0, first
    assert first["changed"] is True and first["reused"] is False and first["installer"] == "uv"
    assert run_script(first["path"]) == "botstack-sample 1.0"
    # A direct-URL requirement freezes as "name @ url": one entry per distribution.
    assert any(p.startswith("botstack-sample @ file://") for p in first["packages"]), first["packages"]
    assert "@" not in first["packages"]
    manifest = json.loads((pathlib.Path(first["path"]) / ".botstack-venv.json").read_text())
    assert manifest["key"] == first["key"] and manifest["installer"] == "uv"
    assert pathlib.Path(first["path"]).name.startswith("cpython-%d.%d." % sys.version_info[:2])
    second = module("python_venv", venv_args(sample, installer="uv"))
    assert second["changed"] is False and second["reused"] is True and second["path"] == first["path"]
    assert entries(sample) == [pathlib.Path(first["path"]).name], "no temporary directory is left"


def test_pip_fallback_scripts_run_from_the_final_path(module, sample):
    result = module("python_venv", venv_args(sample, installer="pip", seed_packages=[]), timeout=300)
    assert result["_rc"] == 0, result
    assert result["installer"] == "pip"
    assert run_script(result["path"]) == "botstack-sample 1.0"
    script = pathlib.Path(result["path"], "bin", "botstack-sample").read_text()
    assert script.startswith(f"#!{result['path']}/bin/python"), script.splitlines()[0]
    assert ".tmp-" not in pathlib.Path(result["path"], "bin", "activate").read_text()


def test_comments_do_not_change_the_key_and_new_pins_do(module, sample):
    base = module("python_venv", venv_args(sample, installer="pip"), check=True)
    sample["lock1"].write_text("\n\n" + sample["lock1"].read_text() + "   # trailing note\n")
    same = module("python_venv", venv_args(sample, installer="pip"), check=True)
    other = module("python_venv", venv_args(sample, "lock2", installer="pip"), check=True)
    seeded = module("python_venv", venv_args(sample, installer="pip", seed_packages=["pip==25.3"]), check=True)
    source_only = module("python_venv", venv_args(sample, installer="pip", compile_bytecode=False), check=True)
    assert base["key"] == same["key"]
    assert len({base["key"], other["key"], seeded["key"], source_only["key"]}) == 4


def test_check_mode_builds_nothing(module, sample):
    result = module("python_venv", venv_args(sample), check=True, diff=True)
    assert result["changed"] is True and result["reused"] is False
    assert result["diff"]["after"].strip() == result["path"]
    assert not sample["venvs"].exists()


@needs_uv
def test_new_requirements_give_a_new_venv_and_keep_the_old(module, sample):
    old = module("python_venv", venv_args(sample), timeout=180)
    new = module("python_venv", venv_args(sample, "lock2"), timeout=180)
    assert old["_rc"] == 0 and new["_rc"] == 0, (old, new)
    assert new["changed"] is True and new["path"] != old["path"]
    assert run_script(old["path"]) == "botstack-sample 1.0"
    assert run_script(new["path"]) == "botstack-sample 2.0"


@pytest.mark.parametrize("installer", [pytest.param("uv", marks=needs_uv), "pip"])
def test_unresolvable_requirements_fail_and_leave_no_venv(module, sample, installer):
    sample["lock1"].write_text("botstack-sample @ file:///nonexistent/botstack_sample-9.9-py3-none-any.whl\n")
    result = module("python_venv", venv_args(sample, installer=installer), timeout=300)
    assert result["_rc"] != 0 and result["failed"] is True
    assert "requirements %s" % sample["lock1"] in result["msg"]
    assert entries(sample) == [], "a failed build leaves nothing a release could use"


def test_includes_are_refused_with_the_fix(module, sample):
    sample["lock1"].write_text("-r base.txt\nfastapi==0.115.0\n")
    result = module("python_venv", venv_args(sample))
    assert result["failed"] is True
    assert "includes another file" in result["msg"] and "uv pip compile" in result["msg"]


def test_missing_interpreter_and_uv_are_named(module, sample):
    result = module("python_venv", venv_args(sample, interpreter="/nonexistent/python3"))
    assert result["failed"] is True and "interpreter /nonexistent/python3" in result["msg"]
    result = module("python_venv", venv_args(sample, installer="uv", uv_path="/nonexistent/uv"))
    assert result["failed"] is True and "uv_path" in result["msg"]
    result = module("python_venv", {"venvs_dir": str(sample["venvs"]), "interpreter": sys.executable})
    assert result["failed"] is True and "requirements" in result["msg"]


def test_prune_keeps_what_releases_use(module, sample):
    store = sample["venvs"]
    made = []
    for lock in ("lock1", "lock2"):
        result = module("python_venv", venv_args(sample, lock, installer="pip"), timeout=300)
        assert result["_rc"] == 0, result
        made.append(result["path"])
    release = sample["root"] / "app" / "releases" / "r2"
    release.mkdir(parents=True)
    (release / ".venv").symlink_to(made[1])
    leftover = store / ".tmp-cpython-3.11.2-0123456789abcdef-deadbeef"
    leftover.mkdir()
    args = {"venvs_dir": str(store), "state": "pruned", "app_roots": [str(sample["root"] / "app")]}

    planned = module("python_venv", args, check=True, diff=True)
    assert planned["changed"] is True
    assert sorted(planned["removed"]) == sorted([made[0], str(leftover)])
    assert os.path.isdir(made[0])

    done = module("python_venv", args)
    assert done["changed"] is True and done["kept"] == [made[1]]
    assert not os.path.exists(made[0]) and os.path.isdir(made[1])
    assert run_script(made[1]) == "botstack-sample 2.0"
    assert module("python_venv", args)["changed"] is False


def test_prune_keeps_listed_and_newest_unused(module, sample):
    made = []
    for lock in ("lock1", "lock2"):
        made.append(module("python_venv", venv_args(sample, lock, installer="pip"), timeout=300)["path"])
    kept_by_name = module("python_venv", {"venvs_dir": str(sample["venvs"]), "state": "pruned",
                                          "in_use": [os.path.basename(made[0])]}, check=True)
    assert kept_by_name["removed"] == [made[1]]
    kept_newest = module("python_venv", {"venvs_dir": str(sample["venvs"]), "state": "pruned",
                                         "keep_unused": 1}, check=True)
    assert kept_newest["removed"] == [made[0]]


def test_only_what_the_module_created_is_ever_removed(module, sample):
    """A mistyped venvs_dir (say /opt) must not wipe what else lives there."""
    store = sample["venvs"]
    store.mkdir()
    foreign = [store / "otherapp", store / ".tmp-notes", store / "cpython-3.11.2-0123456789abcdef"]
    for directory in foreign:
        directory.mkdir()
        (directory / "data.txt").write_text("keep me")
    built = module("python_venv", venv_args(sample, installer="pip"), timeout=300)
    assert built["_rc"] == 0, built
    assert sorted(built["foreign"]) == sorted(str(d) for d in foreign)
    assert "left alone" in json.dumps(built.get("warnings")), built.get("warnings")
    pruned = module("python_venv", {"venvs_dir": str(store), "state": "pruned"})
    assert pruned["removed"] == [built["path"]]
    assert sorted(pruned["foreign"]) == sorted(str(d) for d in foreign)
    for directory in foreign:
        assert (directory / "data.txt").read_text() == "keep me"
