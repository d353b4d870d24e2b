"""botstack.deploy.python_venv building real venvs with uv and pip, offline.

The packages installed are wheels written here (a console script included), and the
project installed with `project` brings its own PEP 517 backend (backend-path, no build
requirements), so the tests need no index; the installers, uv export, uv build and pip
wheel are the real ones.
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


def make_wheel(directory: pathlib.Path, version: str = "1.0", package: str = "botstack_sample") -> pathlib.Path:
    """A minimal pure-Python wheel with a console script named like the distribution (`botstack-sample`)."""
    name = f"{package}-{version}"
    dist = package.replace("_", "-")
    files = {
        f"{package}/__init__.py": f"def main():\n    print('{dist} {version}')\n",
        f"{name}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
        f"{name}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{name}.dist-info/entry_points.txt": f"[console_scripts]\n{dist} = {package}:main\n",
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


def run_script(venv: str, script: str = "botstack-sample") -> str:
    return subprocess.run([os.path.join(venv, "bin", script)], capture_output=True, text=True, cwd="/",
                          check=True).stdout.strip()


def entries(sample) -> list[str]:
    return sorted(p.name for p in sample["venvs"].iterdir() if p.name not in (".venvs.lock", ".apps.json", ".cache"))


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


# --- uv.lock, the project itself, editable installs -------------------------------------------------------

BACKEND = '''"""A PEP 517 backend shipped in the project (backend-path): its wheel is built with no index."""
import base64
import hashlib
import os
import pathlib
import zipfile

DIST = "botstack_app-0.1.0"
META = {
    DIST + ".dist-info/METADATA": "Metadata-Version: 2.1\\nName: botstack-app\\nVersion: 0.1.0\\n"
                                  "Requires-Dist: botstack-sample\\n",
    DIST + ".dist-info/WHEEL": "Wheel-Version: 1.0\\nGenerator: tests\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    DIST + ".dist-info/entry_points.txt": "[console_scripts]\\nbotstack-app = botstack_app:main\\n",
}


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = {str(p.relative_to("src")): p.read_bytes() for p in sorted(pathlib.Path("src").rglob("*.py"))}
    files.update((k, v.encode()) for k, v in META.items())
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append("%s,sha256=%s,%d" % (path, digest, len(data)))
    record.append(DIST + ".dist-info/RECORD,,")
    files[DIST + ".dist-info/RECORD"] = ("\\n".join(record) + "\\n").encode()
    name = DIST + "-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return name
'''

PYPROJECT = """[project]
name = "botstack-app"
version = "0.1.0"
requires-python = ">=3.8"
dependencies = ["botstack-sample"{extra}]

[project.scripts]
botstack-app = "botstack_app:main"

[dependency-groups]
dev = ["botstack-devtool"]

[build-system]
requires = []
build-backend = "backend"
backend-path = ["_build"]

[tool.uv.sources]
botstack-sample = {{ path = "wheels/botstack_sample-1.0-py3-none-any.whl" }}
botstack-devtool = {{ path = "wheels/botstack_devtool-1.0-py3-none-any.whl" }}
{sources}"""

APP = "import botstack_sample\n\nMESSAGE = {message!r}\n\n\ndef main():\n    print('botstack-app %s' % MESSAGE)\n"


@pytest.fixture
def project(sample):
    """App A's release r1: a uv project (src layout, console script) with its uv.lock and requirements.lock."""
    release = sample["root"] / "apps" / "a" / "releases" / "r1"
    (release / "wheels").mkdir(parents=True)
    make_wheel(release / "wheels", "1.0")
    make_wheel(release / "wheels", "1.0", package="botstack_devtool")
    (release / "_build").mkdir()
    (release / "_build" / "backend.py").write_text(BACKEND)
    (release / "src" / "botstack_app").mkdir(parents=True)
    (release / "src" / "botstack_app" / "__init__.py").write_text(APP.format(message="hello"))
    (release / "pyproject.toml").write_text(PYPROJECT.format(extra="", sources=""))
    # What uv export writes, relative path included: taken from the file's directory.
    (release / "requirements.lock").write_text("# exported\n./wheels/botstack_sample-1.0-py3-none-any.whl\n")
    sample["release"] = release
    return sample


def uv_lock(directory: pathlib.Path) -> None:
    subprocess.run([UV, "lock", "--offline", "--quiet", "--python", sys.executable], cwd=directory, check=True,
                   env=dict(os.environ, UV_CACHE_DIR=str(directory.parent / ".uv-cache")))


def release_copy(project, name: str, message: str | None = None) -> pathlib.Path:
    """Another release of app A: the same files, or the same with the app's message changed."""
    copy = project["release"].parent / name
    shutil.copytree(project["release"], copy, symlinks=True)
    if message:
        (copy / "src" / "botstack_app" / "__init__.py").write_text(APP.format(message=message))
    return copy


def lock_args(sample, requirements, **extra):
    args = {"venvs_dir": str(sample["venvs"]), "interpreter": sys.executable, "requirements": str(requirements),
            "uv_path": UV, "cache_dir": str(sample["root"] / "cache")}
    args.update(extra)
    return args


def tree(directory: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@needs_uv
def test_uv_lock_installs_its_locked_non_dev_dependencies(module, project):
    release = project["release"]
    uv_lock(release)
    first = module("python_venv", lock_args(project, release / "uv.lock"), timeout=180)
    assert first["_rc"] == 0, first
    assert first["lock_format"] == "uv" and first["installer"] == "uv" and first["reused"] is False
    assert run_script(first["path"]) == "botstack-sample 1.0"
    assert not any(p.startswith(("botstack-devtool", "botstack-app")) for p in first["packages"]), first["packages"]
    # The same lock in the next release: the same venv, nothing installed.
    again = module("python_venv", lock_args(project, release_copy(project, "r2") / "uv.lock"))
    assert again["reused"] is True and again["changed"] is False and again["path"] == first["path"]
    # The key covers what the lock pins, not how it is written: its export gives the same venv.
    exported = subprocess.run([UV, "export", "--frozen", "--no-dev", "--no-emit-project", "--quiet"], cwd=release,
                              check=True, capture_output=True, text=True).stdout
    (release / "requirements.lock").write_text(exported)
    as_file = module("python_venv", lock_args(project, release / "requirements.lock"))
    assert as_file["lock_format"] == "requirements" and as_file["path"] == first["path"], as_file


@needs_uv
def test_uv_lock_out_of_date_with_its_project_fails_before_building(module, project):
    release = project["release"]
    uv_lock(release)
    (release / "pyproject.toml").write_text(PYPROJECT.format(extra=', "botstack-devtool"', sources=""))
    for check in (True, False):
        result = module("python_venv", lock_args(project, release / "uv.lock"), check=check, timeout=120)
        assert result["failed"] is True, result
        assert "requirements %s does not match the pyproject.toml" % (release / "uv.lock") in result["msg"]
        assert "uv lock" in result["msg"]
    assert not project["venvs"].exists(), "nothing was built"


@needs_uv
def test_uv_lock_needs_uv_and_its_pyproject(module, project):
    release = project["release"]
    uv_lock(release)
    no_uv = module("python_venv", lock_args(project, release / "uv.lock", installer="pip", uv_path="/nonexistent/uv"))
    assert no_uv["failed"] is True
    assert "is a uv.lock" in no_uv["msg"] and "/nonexistent/uv" in no_uv["msg"] and "uv_path" in no_uv["msg"]
    wrong_name = module("python_venv", lock_args(project, release / "requirements.lock", lock_format="uv"))
    assert wrong_name["failed"] is True and "lock_format=uv" in wrong_name["msg"]
    (release / "pyproject.toml").unlink()
    alone = module("python_venv", lock_args(project, release / "uv.lock"))
    assert alone["failed"] is True and "no pyproject.toml beside it" in alone["msg"]


@pytest.mark.parametrize("installer,lock", [pytest.param("uv", "uv.lock", marks=needs_uv),
                                            ("pip", "requirements.lock")])
def test_project_is_installed_non_editably_and_keyed_by_its_content(module, project, installer, lock):
    release = project["release"]
    if lock == "uv.lock":
        uv_lock(release)
    before = tree(release)
    built = module("python_venv", lock_args(project, release / lock, installer=installer, project=str(release),
                                            seed_packages=[]), timeout=300)
    assert built["_rc"] == 0, built
    assert built["installer"] == installer and built["reused"] is False
    # The console script and the src-layout package come from the venv, whatever the working directory.
    assert run_script(built["path"], "botstack-app") == "botstack-app hello"
    where = subprocess.run([os.path.join(built["path"], "bin", "python"), "-c",
                            "import botstack_app; print(botstack_app.__file__)"],
                           cwd="/", capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(built["path"] + "/lib/"), where
    assert "botstack-app==0.1.0" in built["packages"], built["packages"]
    assert built["project"]["wheel"] == "botstack_app-0.1.0-py3-none-any.whl"
    assert len(built["project"]["wheel_sha256"]) == 64 and built["project"]["path"] == str(release)
    assert tree(release) == before, "the build never writes into the release"
    assert not (pathlib.Path(built["path"]) / ".botstack-build").exists()

    same_code = module("python_venv", lock_args(project, release_copy(project, "r2") / lock, installer=installer,
                                                project=str(release.parent / "r2"), seed_packages=[]))
    assert same_code["reused"] is True and same_code["path"] == built["path"], same_code
    changed = release_copy(project, "r3", message="changed")
    new_code = module("python_venv", lock_args(project, changed / lock, installer=installer, project=str(changed),
                                               seed_packages=[]), timeout=300)
    assert new_code["_rc"] == 0 and new_code["path"] != built["path"], new_code
    assert run_script(new_code["path"], "botstack-app") == "botstack-app changed"
    assert run_script(built["path"], "botstack-app") == "botstack-app hello", "the old release keeps its venv"
    deps_only = module("python_venv", lock_args(project, release / lock, installer=installer, seed_packages=[]),
                       check=True)
    assert deps_only["key"] not in (built["key"], new_code["key"])


def test_project_check_mode_builds_nothing(module, project):
    release = project["release"]
    args = lock_args(project, release / "requirements.lock", installer="pip", project=str(release))
    planned = module("python_venv", args, check=True, diff=True)
    assert planned["changed"] is True and planned["reused"] is False, planned
    assert planned["project"]["fingerprint"] and planned["diff"]["after"].strip() == planned["path"]
    assert not project["venvs"].exists()
    built = module("python_venv", args, timeout=300)
    assert built["_rc"] == 0 and built["path"] == planned["path"], built
    assert module("python_venv", args, check=True)["changed"] is False


def test_project_dependencies_must_be_in_the_lock(module, project):
    release = project["release"]
    (release / "requirements.lock").write_text("# nothing locked\n")
    result = module("python_venv", lock_args(project, release / "requirements.lock", project=str(release)),
                    timeout=300)
    assert result["failed"] is True and "pip check" in result["msg"] and "botstack-sample" in result["msg"], result
    assert entries(project) == [], "a failed build leaves nothing a release could use"


@pytest.mark.parametrize("line", ["-e .", "--editable=git+https://git.example.invalid/app.git#egg=app",
                                  "  -e ./wheels"])
def test_editable_requirements_are_refused_before_building(module, project, line):
    lock = project["release"] / "requirements.lock"
    lock.write_text("botstack-sample==1.0\n%s\n" % line)
    for check in (True, False):
        result = module("python_venv", lock_args(project, lock), check=check)
        assert result["failed"] is True, result
        assert "requirements %s line 2: \"%s\" is an editable install" % (lock, line.strip()) in result["msg"]
        assert "python_venv_project" in result["msg"] and "drop the line" in result["msg"]
    assert not project["venvs"].exists()


@needs_uv
def test_editable_workspace_member_in_a_uv_lock_is_refused(module, project):
    release = project["release"]
    member = release / "packages" / "tool"
    member.mkdir(parents=True)
    (member / "pyproject.toml").write_text('[project]\nname = "botstack-tool"\nversion = "1.0"\n\n[build-system]\n'
                                           'requires = []\nbuild-backend = "backend"\nbackend-path = ["_build"]\n')
    (release / "pyproject.toml").write_text(PYPROJECT.format(
        extra=', "botstack-tool"', sources='botstack-tool = { workspace = true }\n\n'
                                          '[tool.uv.workspace]\nmembers = ["packages/*"]\n'))
    uv_lock(release)
    result = module("python_venv", lock_args(project, release / "uv.lock"))
    assert result["failed"] is True, result
    assert "%s (as uv export gives it)" % (release / "uv.lock") in result["msg"]
    assert '"-e ./packages/tool" is an editable install' in result["msg"]


def test_local_directories_are_refused(module, project):
    lock = project["release"] / "requirements.lock"
    (project["release"] / "vendor" / "lib").mkdir(parents=True)
    for line in ("./vendor/lib", "lib @ file://%s/vendor/lib" % project["release"]):
        lock.write_text("%s\n" % line)
        result = module("python_venv", lock_args(project, lock))
        assert result["failed"] is True and "names local directories (%s)" % line in result["msg"], result
    assert not project["venvs"].exists()


# --- several apps sharing one store ------------------------------------------------------------------------

def app_release(sample, app: str, lock: str) -> pathlib.Path:
    """<root>/apps/<app>/releases/r1 with the sample's lock file shipped in it."""
    release = sample["root"] / "apps" / app / "releases" / "r1"
    release.mkdir(parents=True)
    shutil.copy(sample[lock], release / "requirements.lock")
    return release


def test_prune_never_removes_the_venvs_another_app_links(module, sample):
    installer = "uv" if os.access(UV, os.X_OK) else "pip"
    a, b = app_release(sample, "a", "lock1"), app_release(sample, "b", "lock2")
    # B's venv was built from a lock outside any release: only the registry knows B links it.
    first = module("python_venv", lock_args(sample, sample["lock2"], installer=installer), timeout=300)
    assert first["_rc"] == 0, first
    linked = {}
    for release in (a, b):
        args = lock_args(sample, release / "requirements.lock", installer=installer, link=str(release / ".venv"))
        registry = sample["venvs"] / ".apps.json"
        before = registry.read_text() if registry.exists() else None
        planned = module("python_venv", args, check=True)
        assert planned["changed"] is True, planned
        assert (registry.read_text() if registry.exists() else None) == before, "a check run registers nothing"
        result = module("python_venv", args, timeout=300)
        assert result["_rc"] == 0 and result["link"] == str(release / ".venv"), result
        linked[release] = result["path"]
    unused = module("python_venv", lock_args(sample, a / "requirements.lock", installer=installer,
                                             compile_bytecode=False), timeout=300)["path"]
    registry = json.loads((sample["venvs"] / ".apps.json").read_text())
    assert registry["app_roots"] == sorted(str(r.parent.parent) for r in (a, b)), registry
    assert sorted(entries(sample)) == sorted(os.path.basename(p) for p in [*linked.values(), unused])

    # App A's deploy prunes with its own root only: B's venv stays, the one nobody links goes.
    args = {"venvs_dir": str(sample["venvs"]), "state": "pruned", "app_roots": [str(a.parent.parent)]}
    done = module("python_venv", args)
    assert done["removed"] == [unused], done
    assert sorted(done["kept"]) == sorted(linked.values())
    assert str(b.parent.parent) in done["app_roots"]
    assert run_script(str(b / ".venv")) == "botstack-sample 2.0"
    assert module("python_venv", args)["changed"] is False

    # App B removed from the host: forgotten, and its venv goes with the next prune.
    shutil.rmtree(b.parent.parent)
    gone = module("python_venv", args)
    assert gone["forgotten"] == [str(b.parent.parent)] and gone["removed"] == [linked[b]], gone
    assert json.loads((sample["venvs"] / ".apps.json").read_text())["app_roots"] == [str(a.parent.parent)]
    assert module("python_venv", args)["changed"] is False


def test_prune_keeps_venvs_linked_before_the_registry_existed(module, sample):
    """An app that has not deployed since the upgrade: its venv's manifest names its release."""
    b = app_release(sample, "b", "lock2")
    built = module("python_venv", lock_args(sample, b / "requirements.lock", installer="pip"), timeout=300)
    assert built["_rc"] == 0, built
    (b / ".venv").symlink_to(built["path"])
    args = {"venvs_dir": str(sample["venvs"]), "state": "pruned", "app_roots": [str(sample["root"] / "apps" / "a")]}
    kept = module("python_venv", args)
    assert kept["changed"] is False and kept["kept"] == [built["path"]], kept
    (b / ".venv").unlink()
    assert module("python_venv", args)["removed"] == [built["path"]]


def test_present_only_options_are_refused_with_state_pruned(module, sample):
    for option in ("project", "link"):
        result = module("python_venv", {"venvs_dir": str(sample["venvs"]), "state": "pruned",
                                        option: str(sample["root"])})
        assert result["failed"] is True and "%s is only used with state=present" % option in result["msg"]
