"""The AWX jobs (jobs/templates.yml) run as AWX runs them: ansible-runner in the execution
environment built from ee/, against the host converged by the Site job (molecule converge)."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess

import pytest
import yaml

SCENARIO = pathlib.Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
PROJECT = pathlib.Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
RUNNER = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "runner"
SITE = "demo.botstack.test"

testinfra_hosts = ["ansible://ee-host"]


def job(ident: str, playbook: str, extra_vars: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCENARIO / "run-job.sh"), ident, playbook, json.dumps(extra_vars or {})],
                          capture_output=True, text=True, check=False, timeout=1200)


def recap(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("botstack-demo"))


def health(host) -> dict:
    out = host.check_output(f"curl -sk --resolve {SITE}:443:127.0.0.1 https://{SITE}/health")
    return json.loads(out)


def vault_values() -> list[str]:
    text = subprocess.run(["ansible-vault", "view", "--vault-password-file", "inventories/demo/vault-password.txt",
                           "inventories/demo/group_vars/all/vault.yml"], cwd=PROJECT, capture_output=True,
                          text=True, check=True).stdout
    return [str(v) for v in yaml.safe_load(text).values() if len(str(v)) >= 8]


def test_the_site_job_left_the_bot_serving_through_nginx(host):
    assert health(host)["status"] == "healthy"
    # The live slot runs the web process, the worker and the singleton; the other slot runs nothing.
    live = host.check_output("readlink /opt/botstack/current").rsplit("/", 1)[-1]
    processes = {"botstack-api", "botstack-worker", "botstack-scheduler"}
    running = host.check_output("systemctl list-units --state=active --no-legend --plain 'botstack-*@*.service'")
    units = sorted(unit for unit in (line.split()[0] for line in running.splitlines()) if unit.split("@")[0] in processes)
    assert {unit.split("@")[0] for unit in units} == processes, units
    assert all(unit.split("@")[1].startswith(live) for unit in units), (live, units)


def test_the_site_job_ran_with_the_collections_of_the_image():
    stdout = (RUNNER / "artifacts" / "site" / "stdout").read_text()
    assert "failed=0" in recap(stdout)
    # The project checkout has no .collections: the dependencies came from the image.
    assert not (RUNNER / "project" / ".collections").exists()


def test_no_secret_reaches_the_job_output():
    outputs = [(RUNNER / "artifacts" / ident / "stdout") for ident in ("site",)]
    leaked = [value for path in outputs for value in vault_values() if value in path.read_text()]
    assert leaked == []


def test_deploy_job_ships_the_survey_version_and_rollback_job_returns(host):
    before = health(host)["version"]
    deploy = job("deploy", "playbooks/deploy.yml", {"deploy_version": "v2"})
    assert deploy.returncode == 0, deploy.stdout[-3000:]
    assert "failed=0" in recap(deploy.stdout)
    shipped = health(host)["version"]
    assert shipped != before

    rollback = job("rollback", "playbooks/rollback.yml", {"deploy_rollback_to": ""})
    assert rollback.returncode == 0, rollback.stdout[-3000:]
    assert health(host)["version"] == before


def test_a_survey_value_that_fails_validation_stops_the_job_before_anything_changes():
    restore = job("restore", "playbooks/restore.yml",
                  {"backup_restore_kind": "postgress", "backup_restore_confirm_overwrite": "false",
                   "botstack_restore_hosts": "botstack-demo"})
    assert restore.returncode != 0
    assert "backup_restore_kind" in restore.stdout and "must be one of" in restore.stdout, restore.stdout[-2000:]
    assert "changed=0" in recap(restore.stdout)
