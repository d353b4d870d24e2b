#!/usr/bin/env python3
"""Write the AWX and Semaphore job templates from jobs/templates.yml, and check them.

    scripts/job-templates.py            write jobs/awx/assets.json and jobs/semaphore/project.json
    scripts/job-templates.py --check    fail when they drifted from jobs/templates.yml, when a
                                        template names a playbook or inventory that does not exist,
                                        or a survey asks for a variable its playbook does not accept

jobs/awx/assets.json is in the shape `awx export` writes and `awx import` reads (awxkit): one list per
resource type, each object with its natural key, references by natural key. Credentials are created
empty: the operator fills in the key and the vault password in AWX. jobs/semaphore/project.json is
Semaphore's project backup format (Project > Backup / Restore).
"""
from __future__ import annotations

import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = ROOT / "jobs" / "templates.yml"
AWX_FILE = ROOT / "jobs" / "awx" / "assets.json"
SEMAPHORE_FILE = ROOT / "jobs" / "semaphore" / "project.json"
CREDENTIAL_TYPES = {"ssh": "Machine", "vault": "Vault"}
# Variables every playbook accepts: Ansible's own and those AWX / Semaphore pass to every job.
ALWAYS_ACCEPTED = {"ansible_check_mode", "awx_user_name", "tower_user_name", "semaphore_vars"}


def _org(spec: dict) -> dict:
    return {"name": spec["organization"], "type": "organization"}


def _key(spec: dict, kind: str, name: str) -> dict:
    return {"organization": _org(spec), "name": name, "type": kind}


def _survey(template: dict) -> dict:
    spec = []
    for question in template.get("survey", []):
        item = {
            "question_name": question["question"],
            "question_description": question.get("description", ""),
            "required": bool(question.get("required", False)),
            "type": question["type"],
            "variable": question["variable"],
            "min": question.get("min", 0),
            "max": question.get("max", 1024),
            "default": question.get("default", ""),
            "choices": question.get("choices", ""),
            "new_question": False,
        }
        spec.append(item)
    return {"name": "", "description": "", "spec": spec}


def awx_assets(spec: dict) -> dict:
    """The objects `awx import` creates, in `awx export`'s shape."""
    project_key = _key(spec, "project", spec["project"]["name"])
    ee = spec["execution_environment"]
    ee_key = {"name": ee["name"], "type": "execution_environment"}
    credentials = [
        {
            "name": c["name"],
            "description": "Fill in after import",
            "organization": _org(spec),
            "credential_type": {"name": CREDENTIAL_TYPES[c["kind"]], "kind": c["kind"], "type": "credential_type"},
            "inputs": {},
            "natural_key": {
                "organization": _org(spec), "name": c["name"], "type": "credential",
                "credential_type": {"name": CREDENTIAL_TYPES[c["kind"]], "kind": c["kind"], "type": "credential_type"},
            },
        }
        for c in spec["credentials"]
    ]
    inventories, sources = [], []
    for inventory in spec["inventories"]:
        inventory_key = _key(spec, "inventory", inventory["name"])
        inventories.append({
            "name": inventory["name"], "description": f"From {inventory['source_path']} in the project",
            "kind": "", "organization": _org(spec), "variables": "---",
            "natural_key": inventory_key, "related": {"labels": [], "hosts": [], "groups": []},
        })
        sources.append({
            "name": f"{inventory['name']} from the project", "description": "",
            "source": "scm", "source_project": project_key, "source_path": inventory["source_path"],
            "inventory": inventory_key, "overwrite": True, "overwrite_vars": True, "update_on_launch": True,
            "verbosity": 1,
            "natural_key": {"name": f"{inventory['name']} from the project", "inventory": inventory_key,
                            "type": "inventory_source"},
            "related": {"schedules": []},
        })
    templates = []
    for template in spec["templates"]:
        survey = template.get("survey", [])
        templates.append({
            "name": template["name"],
            "description": template.get("description", ""),
            "job_type": "run",
            "inventory": _key(spec, "inventory", spec["inventories"][0]["name"]),
            "project": project_key,
            "playbook": template["playbook"],
            "scm_branch": "",
            "forks": 0,
            "limit": "",
            "verbosity": 0,
            "extra_vars": yaml.safe_dump(template.get("extra_vars", {}), default_flow_style=False) if template.get("extra_vars") else "---",
            "job_tags": "",
            "skip_tags": "",
            "timeout": 0,
            "use_fact_cache": False,
            "become_enabled": True,
            "diff_mode": bool(template.get("allow_check", False)),
            "ask_inventory_on_launch": True,
            "ask_limit_on_launch": bool(template.get("ask_limit", False)),
            "ask_job_type_on_launch": bool(template.get("allow_check", False)),
            "ask_diff_mode_on_launch": bool(template.get("allow_check", False)),
            "ask_variables_on_launch": False,
            "survey_enabled": bool(survey),
            "allow_simultaneous": False,
            "execution_environment": ee_key,
            "natural_key": _key(spec, "job_template", template["name"]),
            "related": {
                "credentials": [c["natural_key"] for c in credentials],
                "labels": [],
                "schedules": [],
                "notification_templates_error": [],
                "notification_templates_started": [],
                "notification_templates_success": [],
                "survey_spec": _survey(template) if survey else {},
            },
        })
    return {
        "projects": [{
            "name": spec["project"]["name"], "description": "Playbooks, roles and inventories",
            "scm_type": "git", "scm_url": spec["project"]["scm_url"], "scm_branch": spec["project"]["scm_branch"],
            "scm_update_on_launch": True, "allow_override": False, "organization": _org(spec),
            "default_environment": ee_key, "natural_key": project_key,
            "related": {"schedules": [], "notification_templates_error": [], "notification_templates_started": [],
                        "notification_templates_success": []},
        }],
        "execution_environments": [{
            "name": ee["name"], "description": "ee/execution-environment.yml", "image": ee["image"], "pull": "missing",
            "organization": _org(spec), "natural_key": ee_key,
        }],
        "credentials": credentials,
        "inventory": inventories,
        "inventory_sources": sources,
        "job_templates": templates,
    }


def semaphore_project(spec: dict) -> dict:
    """Semaphore's project backup: keys, repository, inventories, environment, templates with surveys."""
    kinds = {"text": "", "multiplechoice": "enum", "integer": "int"}
    templates = []
    for template in spec["templates"]:
        survey = []
        for question in template.get("survey", []):
            item = {"name": question["variable"], "title": question["question"],
                    "description": question.get("description", ""), "required": bool(question.get("required", False)),
                    "type": kinds[question["type"]]}
            if question["type"] == "multiplechoice":
                item["values"] = [{"name": choice, "value": choice} for choice in question["choices"]]
            survey.append(item)
        arguments = ["--diff"] if template.get("allow_check") else []
        templates.append({
            "name": template["name"], "description": template.get("description", ""), "app": "ansible",
            "playbook": template["playbook"], "inventory": spec["inventories"][0]["name"],
            "repository": spec["project"]["name"], "environment": "botstack",
            "vault_key": "botstack vault", "arguments": json.dumps(arguments),
            "allow_override_args_in_task": False, "survey_vars": survey, "type": "",
            "extra_vars": template.get("extra_vars", {}),
        })
    return {
        "meta": {"name": spec["project"]["name"], "alert": False, "max_parallel_tasks": 1},
        "keys": [{"name": "botstack ssh key", "type": "ssh"}, {"name": "botstack vault", "type": "login_password"},
                 {"name": "none", "type": "none"}],
        "repositories": [{"name": spec["project"]["name"], "git_url": spec["project"]["scm_url"],
                          "git_branch": spec["project"]["scm_branch"], "ssh_key": "none"}],
        "inventories": [{"name": i["name"], "type": "file", "inventory": i["source_path"],
                         "ssh_key": "botstack ssh key", "become_key": "none", "repository": spec["project"]["name"]}
                        for i in spec["inventories"]],
        "environments": [{"name": "botstack", "json": "{}", "env": json.dumps({"ANSIBLE_FORCE_COLOR": "0"})}],
        "templates": templates,
        "views": [],
    }


def _render(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def _playbook_files(playbook: pathlib.Path, seen: set) -> list[pathlib.Path]:
    """The playbook and every playbook it imports."""
    if playbook in seen:
        return []
    seen.add(playbook)
    files = [playbook]
    for play in yaml.safe_load(playbook.read_text()) or []:
        target = play.get("ansible.builtin.import_playbook") or play.get("import_playbook")
        if target:
            files += _playbook_files((playbook.parent / target).resolve(), seen)
    return files


def accepted_variables(playbook: pathlib.Path) -> set[str]:
    """Options of the argument specs of every role the playbook (and what it imports) runs, and the
    variables the playbook files name themselves."""
    names = set(ALWAYS_ACCEPTED)
    for path in _playbook_files(playbook.resolve(), set()):
        text = path.read_text()
        names |= set(re.findall(r"\b([a-z_][a-z0-9_]*)\b", text))
        for role in set(re.findall(r"botstack\.deploy\.([a-z_]+)", text)):
            specs = ROOT / "roles" / role / "meta" / "argument_specs.yml"
            if specs.is_file():
                for entry in (yaml.safe_load(specs.read_text()) or {}).get("argument_specs", {}).values():
                    names |= set((entry or {}).get("options", {}))
    return names


def check_references(spec: dict) -> list[str]:
    problems = []
    for inventory in spec["inventories"]:
        if not (ROOT / inventory["source_path"]).is_file():
            problems.append(f"inventory {inventory['name']!r}: {inventory['source_path']} does not exist")
    for template in spec["templates"]:
        playbook = ROOT / template["playbook"]
        if not playbook.is_file():
            problems.append(f"template {template['name']!r}: playbook {template['playbook']} does not exist")
            continue
        accepted = accepted_variables(playbook)
        asked = [q["variable"] for q in template.get("survey", [])] + list(template.get("extra_vars", {}))
        for variable in asked:
            if variable not in accepted:
                problems.append(f"template {template['name']!r}: {template['playbook']} does not accept {variable!r} "
                                f"(not in its roles' argument specs nor named by the playbook)")
        for question in template.get("survey", []):
            if question["type"] == "multiplechoice" and question.get("default", "") not in question["choices"] + [""]:
                problems.append(f"template {template['name']!r}: default of {question['variable']!r} is not a choice")
    return problems


def check_awx_shape(assets: dict) -> list[str]:
    """What `awx import` needs: resource lists it knows and a natural key on every object."""
    try:
        from awxkit.api.pages.api import EXPORTABLE_RESOURCES
    except ImportError:
        return ["awxkit is not installed (make setup installs it)"]
    problems = [f"awx assets: {key!r} is not a resource awx import reads" for key in assets if key not in EXPORTABLE_RESOURCES]
    for resource, objects in assets.items():
        for obj in objects:
            if "natural_key" not in obj or "type" not in obj["natural_key"]:
                problems.append(f"awx assets: {resource} {obj.get('name')!r} has no natural key")
    return problems


def main() -> int:
    check = "--check" in sys.argv[1:]
    spec = yaml.safe_load(SOURCE.read_text())
    outputs = {AWX_FILE: _render(awx_assets(spec)), SEMAPHORE_FILE: _render(semaphore_project(spec))}
    problems = check_references(spec) + check_awx_shape(awx_assets(spec))
    for path, text in outputs.items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if check:
            problems.append(f"{path.relative_to(ROOT)} is out of date: run scripts/job-templates.py")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"updated {path.relative_to(ROOT)}")
    for problem in problems:
        print(f"job templates: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
