"""The job templates check (scripts/job-templates.py): what it must refuse before an operator's first run."""
from __future__ import annotations

import copy
import importlib.util
import json
import pathlib

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location("job_templates", REPO / "scripts" / "job-templates.py")
job_templates = importlib.util.module_from_spec(spec)
spec.loader.exec_module(job_templates)


@pytest.fixture
def templates() -> dict:
    return yaml.safe_load((REPO / "jobs" / "templates.yml").read_text())


def by_name(spec: dict, name: str) -> dict:
    return next(t for t in spec["templates"] if t["name"] == name)


def test_the_shipped_templates_pass_and_match_their_exports(templates):
    assert job_templates.check_references(templates) == []
    assert job_templates.check_awx_shape(job_templates.awx_assets(templates)) == []
    shipped = json.loads((REPO / "jobs" / "awx" / "assets.json").read_text())
    assert shipped == job_templates.awx_assets(templates)


def test_a_survey_variable_the_playbook_does_not_accept_is_refused(templates):
    broken = copy.deepcopy(templates)
    by_name(broken, "botstack deploy")["survey"][0]["variable"] = "deploy_verison"
    assert job_templates.check_references(broken) == [
        "template 'botstack deploy': playbooks/deploy.yml does not accept 'deploy_verison' "
        "(not in its roles' argument specs nor named by the playbook)"]


def test_a_variable_of_another_playbooks_role_is_refused(templates):
    broken = copy.deepcopy(templates)
    by_name(broken, "botstack rollback")["survey"].append(
        {"variable": "backup_restore_confirm_overwrite", "question": "x", "type": "text"})
    problems = job_templates.check_references(broken)
    assert len(problems) == 1 and "'backup_restore_confirm_overwrite'" in problems[0]


def test_a_missing_playbook_or_inventory_is_refused(templates):
    broken = copy.deepcopy(templates)
    by_name(broken, "botstack site")["playbook"] = "playbooks/everything.yml"
    broken["inventories"][1]["source_path"] = "inventories/stage/hosts.yml"
    assert job_templates.check_references(broken) == [
        "inventory 'botstack staging': inventories/stage/hosts.yml does not exist",
        "template 'botstack site': playbook playbooks/everything.yml does not exist"]


def test_site_accepts_the_variables_of_every_layer_it_imports():
    accepted = job_templates.accepted_variables(REPO / "site.yml")
    assert {"base_ssh_port", "deploy_version", "backup_pitr_enabled", "nginx_server_name"} <= accepted


def test_the_awx_export_has_what_awx_import_reads(templates):
    assets = job_templates.awx_assets(templates)
    deploy = next(t for t in assets["job_templates"] if t["name"] == "botstack deploy")
    assert deploy["survey_enabled"] and deploy["ask_inventory_on_launch"]
    assert deploy["related"]["survey_spec"]["spec"][0]["variable"] == "deploy_version"
    assert {c["name"] for c in assets["credentials"]} == {"botstack ssh key", "botstack vault"}
    assert job_templates.check_awx_shape({"job_template": []}) == [
        "awx assets: 'job_template' is not a resource awx import reads"]


def test_the_project_sync_requirements_match_the_collection_dependencies():
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())["dependencies"]
    sync = yaml.safe_load((REPO / "collections" / "requirements.yml").read_text())["collections"]
    assert {c["name"]: c["version"] for c in sync} == galaxy


def test_the_execution_environment_installs_what_the_roles_import_on_the_controller():
    ee = yaml.safe_load((REPO / "ee" / "execution-environment.yml").read_text())
    python = (REPO / "ee" / ee["dependencies"]["python"]).read_text()
    # ansible.utils.ipaddr needs netaddr; password_hash needs passlib.
    for package in ("netaddr", "passlib"):
        assert package in python
    listed = (REPO / "ee" / ee["dependencies"]["galaxy"]).read_text()
    for fqcn in list(yaml.safe_load((REPO / "galaxy.yml").read_text())["dependencies"]) + ["botstack.deploy"]:
        assert f"collections/{fqcn.replace('.', '-')}.tar.gz" in listed
