"""botstack.deploy.app_config on a real filesystem: bundles written once, installed per slot, pruned."""
from __future__ import annotations

import grp
import json
import os

import pytest

GROUP = grp.getgrgid(os.getgid()).gr_name


def units(app="shop", marker=True, port=8001):
    head = f"# app: {app}\n" if marker else ""
    return {f"{app}-api@{slot}.service": f"{head}[Service]\nExecStart=/bin/true {port + i}\n"
            for i, slot in enumerate(("blue", "green"))}


@pytest.fixture
def systemctl(tmp_path):
    """A systemctl that records its calls."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls.log"
    (bindir / "systemctl").write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\n")
    (bindir / "systemctl").chmod(0o755)
    return str(bindir), calls


def present(module, root, config_id="c0ffee01", env="SECRET_KEY=\"s3cr3t-value\"\n", **extra):
    return module("app_config", {"app_root": str(root), "config_id": config_id, "env": env, "group": GROUP,
                                 "units": units(), **extra}, diff=True)


def test_a_bundle_is_written_once_its_environment_closed_to_others_and_never_shown(module, tmp_path):
    root = tmp_path / "shop"
    first = present(module, root)
    assert first["changed"] is True and "s3cr3t-value" not in json.dumps(first), first
    bundle = root / "config" / "c0ffee01"
    env = bundle / "env"
    assert env.read_text() == 'SECRET_KEY="s3cr3t-value"\n' and (env.stat().st_mode & 0o777) == 0o640
    assert (bundle / "units" / "shop-api@green.service").read_text().endswith("8002\n")
    assert (root / "config").stat().st_mode & 0o777 == 0o750
    again = present(module, root)
    assert again["changed"] is False and again["actions"] == []


def test_a_bundle_changed_on_disk_is_put_back_and_check_mode_only_reports(module, tmp_path):
    root = tmp_path / "shop"
    present(module, root)
    env = root / "config" / "c0ffee01" / "env"
    env.write_text("SECRET_KEY=tampered\n")
    checked = module("app_config", {"app_root": str(root), "config_id": "c0ffee01", "env": 'SECRET_KEY="s3cr3t-value"\n',
                                    "group": GROUP, "units": units()}, check=True)
    assert checked["changed"] is True and env.read_text() == "SECRET_KEY=tampered\n"
    assert present(module, root)["actions"] == ["repair c0ffee01/env"]
    assert env.read_text() == 'SECRET_KEY="s3cr3t-value"\n'


def test_check_mode_writes_no_new_bundle(module, tmp_path):
    root = tmp_path / "shop"
    result = module("app_config", {"app_root": str(root), "config_id": "c0ffee01", "env": "A=1\n", "group": GROUP,
                                   "units": units()}, check=True)
    assert result["changed"] is True and not root.exists()


def test_a_slot_gets_its_bundles_units_and_loses_the_ones_no_longer_listed_but_not_anothers(module, tmp_path,
                                                                                                systemctl):
    bindir, calls = systemctl
    root, units_dir = tmp_path / "shop", tmp_path / "units"
    units_dir.mkdir()
    present(module, root)
    (units_dir / "shop-worker@green.service").write_text("# app: shop\n[Service]\n")      # a process removed since
    (units_dir / "shop-admin-api@green.service").write_text("# app: shop-admin\n[Service]\n")  # another app
    (units_dir / "shop-api@blue.service").write_text("# app: shop\nthe blue slot's own\n")  # the other slot
    (units_dir / "shop-hand@green.service").write_text("[Service]\n")                     # not written by us
    args = {"app_root": str(root), "state": "installed", "config_id": "c0ffee01", "app_name": "shop", "slot": "green",
            "units_dir": str(units_dir)}
    result = module("app_config", args, extra_path=bindir, diff=True)
    assert result["installed"] == ["shop-api@green.service"] and result["removed"] == ["shop-worker@green.service"]
    assert (units_dir / "shop-api@green.service").read_text() == units()["shop-api@green.service"]
    assert sorted(os.listdir(units_dir)) == ["shop-admin-api@green.service", "shop-api@blue.service",
                                             "shop-api@green.service", "shop-hand@green.service"]
    assert (units_dir / "shop-api@blue.service").read_text() == "# app: shop\nthe blue slot's own\n"
    assert calls.read_text().splitlines() == ["daemon-reload"]
    again = module("app_config", args, extra_path=bindir)
    assert again["changed"] is False and calls.read_text().splitlines() == ["daemon-reload"]


def test_installing_a_bundle_that_does_not_exist_names_the_fix(module, tmp_path):
    result = module("app_config", {"app_root": str(tmp_path / "shop"), "state": "installed", "config_id": "feed",
                                   "app_name": "shop", "slot": "blue", "units_dir": str(tmp_path)})
    assert result["failed"] is True and "apply the app role" in result["msg"]


def test_pruning_keeps_what_a_slot_runs_what_a_kept_release_ran_and_what_is_in_use(module, tmp_path):
    root = tmp_path / "shop"
    for n in range(6):
        present(module, root, config_id=f"c{n}")
    (root / "slots").mkdir()
    (root / "slots" / "blue.json").write_text(json.dumps({"release": "r1", "data": {"config": "c0"}}))
    release = root / "releases" / "r1"
    release.mkdir(parents=True)
    (release / ".release.json").write_text(json.dumps({"id": "r1", "activations": [{"config": "c1", "from_config": None}]}))
    result = module("app_config", {"app_root": str(root), "state": "pruned", "keep": 2, "in_use": ["c2"]})
    assert sorted(result["removed"]) == ["c3"], result
    assert sorted(os.listdir(root / "config")) == ["c0", "c1", "c2", "c4", "c5"]


@pytest.mark.parametrize(("args", "fragment"), [
    ({"config_id": "../x", "env": ""}, "config_id must be"),
    ({"config_id": "c1"}, "env (the environment file's content) is required"),
    ({"config_id": "c1", "env": "", "units": {"shop-api.service": "# app: shop\n"}}, "are not unit names"),
    ({"config_id": "c1", "env": "", "units": {"shop-api@blue.service": "[Service]\n"}}, "lack the '# app: <name>' line"),
    ({"state": "installed", "config_id": "c1", "slot": "Blue", "app_name": "shop"}, "slot must name a slot"),
])
def test_bad_input_is_named_before_anything_changes(module, tmp_path, args, fragment):
    result = module("app_config", {"app_root": str(tmp_path / "shop"), **args})
    assert result["failed"] is True and fragment in result["msg"], result
    assert not (tmp_path / "shop").exists()
