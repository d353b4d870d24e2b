"""app_layout: units, ports and ExecStart lines of a process list, and its error messages."""
from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[4]))
from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.botstack.deploy.plugins.filter.app_layout import app_layout, exec_start  # noqa: E402
from ansible_collections.botstack.deploy.plugins.filter.slot_gates import slot_gates  # noqa: E402

PROCESSES = [
    {"name": "api", "kind": "web", "port": 8001, "command": ".venv/bin/uvicorn app:app --host {bind} --port {port}",
     "health": {"path": "/health", "json_field": "status", "json_value": "healthy"}},
    {"name": "worker", "kind": "worker", "instances": 2, "command": ".venv/bin/taskiq worker app.tasks:broker"},
    {"name": "scheduler", "kind": "singleton", "command": [".venv/bin/taskiq", "scheduler", "app:s"]},
]


def spec(**changes):
    return dict({"name": "bot", "root": "/opt/bot", "processes": PROCESSES, "slots": ["blue", "green"],
                 "slot_port_step": 1, "bind_address": "127.0.0.1", "migrate_command": ".venv/bin/alembic upgrade head"},
                **changes)


def test_units_ports_and_unit_files_per_slot():
    layout = app_layout(spec())
    assert layout["units"]["green"] == {
        "web": ["bot-api@green.service"], "worker": ["bot-worker-1@green.service", "bot-worker-2@green.service"],
        "singleton": ["bot-scheduler@green.service"]}
    assert layout["ports"]["api"] == {"blue": 8001, "green": 8002}
    assert layout["unit_ports"]["bot-api@blue.service"] == [8001]
    assert layout["migrate_unit"] == "bot-migrate@{slot}.service"
    names = ["bot-api@{}.service", "bot-worker-1@{}.service", "bot-worker-2@{}.service", "bot-scheduler@{}.service",
             "bot-migrate@{}.service"]
    assert [u["name"] for u in layout["unit_files"]] == [n.format("blue") for n in names] + [n.format("green") for n in names]
    by_name = {u["name"]: u for u in layout["unit_files"]}
    assert (by_name["bot-api@green.service"]["port"], by_name["bot-api@green.service"]["slot"]) == (8002, "green")
    assert by_name["bot-worker-2@blue.service"]["port"] is None and by_name["bot-worker-2@blue.service"]["instance"] == 2
    assert layout["upstream"]["name"] == "api"


def test_a_bare_program_name_comes_from_the_release_venv_a_relative_path_from_the_release():
    assert exec_start("gunicorn shop.wsgi --bind {bind}:{port}", "/opt/shop") == (
        "/opt/shop/slots/%i/.venv/bin/gunicorn shop.wsgi --bind ${BOTSTACK_BIND}:${BOTSTACK_PORT}")
    assert exec_start("python -m notes.worker", "/opt/notes") == "/opt/notes/slots/%i/.venv/bin/python -m notes.worker"
    assert exec_start("bin/run-web", "/opt/shop") == "/opt/shop/slots/%i/bin/run-web"
    assert exec_start("/usr/bin/env true", "/opt/shop") == "/usr/bin/env true"


def test_exec_start_runs_from_the_slot_and_escapes_for_systemd():
    assert exec_start(".venv/bin/uvicorn app:app --host {bind} --port {port}", "/opt/bot") == (
        "/opt/bot/slots/%i/.venv/bin/uvicorn app:app --host ${BOTSTACK_BIND} --port ${BOTSTACK_PORT}")
    assert exec_start(["/usr/bin/env", "A=100%", "echo $HOME", "{slot}"], "/opt/bot") == (
        '/usr/bin/env A=100%% "echo $$HOME" %i')


@pytest.mark.parametrize(("processes", "fragment"), [
    ([{"name": "api", "kind": "web", "command": "x"}], "a web process needs port"),
    ([{"name": "a", "kind": "singleton", "command": "x"}, {"name": "b", "kind": "singleton", "command": "y"}],
     "only one process per environment may be a singleton"),
    ([{"name": "api", "kind": "web", "port": 8001, "command": " "}], "command is empty"),
    ([{"name": "api", "kind": "daemon", "command": "x"}], "kind must be one of web, worker, singleton"),
    ([{"name": "api", "kind": "web", "port": 8001, "command": "x", "health": {"path": "health"}}], "health.path"),
    ([{"name": "Api", "kind": "worker", "command": "x"}], "name must be"),
    ([{"name": "api", "kind": "web", "port": 8001, "command": "x"}, {"name": "adm", "kind": "web", "port": 8002,
                                                                      "command": "x"}], "port 8002 is used by"),
    ([{"name": "w", "kind": "worker", "command": "x", "port": 9}], "port is for web processes only"),
    ([{"name": "api", "kind": "web", "port": 8001, "command": "x", "health": {"scheme": "ftp"}}], "health.scheme"),
    ([{"name": "api", "kind": "web", "port": 8001, "command": "x", "health": {"host": "a b"}}], "health.host"),
])
def test_bad_process_lists_are_named(processes, fragment):
    with pytest.raises(AnsibleFilterError, match=r"^app_processes") as error:
        app_layout(spec(processes=processes))
    assert fragment in str(error.value)


def test_slot_gates_one_per_web_process_on_the_slot_port_watching_the_workers():
    gates = slot_gates(app_layout(spec()), "green", successes=3, interval=0.25, timeout=60, request_timeout=5)
    assert gates == [{"url": "http://127.0.0.1:8002/health", "host": None, "validate_certs": False,
                      "status_codes": [200], "json_field": "status",
                      "json_value": "healthy", "successes": 3, "interval": 0.25, "timeout": 60.0,
                      "request_timeout": 5.0, "settle_seconds": 0.0,
                      "units": ["bot-api@green.service", "bot-worker-1@green.service", "bot-worker-2@green.service"]}]
    # The singleton moved with the start: watched too, and held until it ran settle_seconds.
    held = slot_gates(app_layout(spec()), "green", workers=["bot-worker-1@green.service", "bot-scheduler@green.service"],
                      settle_seconds=3)
    assert held[0]["units"] == ["bot-api@green.service", "bot-worker-1@green.service", "bot-scheduler@green.service"]
    assert held[0]["settle_seconds"] == 3.0


def test_slot_gates_of_kept_processes_need_one_answer_and_watch_the_workers_given():
    layout = app_layout(spec(bind_address="::"))
    gates = slot_gates(layout, "blue", kept=["bot-api@blue.service"], workers=[])
    assert gates[0]["successes"] == 1 and gates[0]["units"] == ["bot-api@blue.service"]
    assert gates[0]["url"] == "http://127.0.0.1:8001/health"
    assert slot_gates(app_layout(spec(bind_address="fd00::5")), "blue")[0]["url"] == "http://[fd00::5]:8001/health"
    with pytest.raises(AnsibleFilterError, match="unknown slot 'red'; the slots are blue, green"):
        slot_gates(layout, "red")


def test_slot_gates_send_the_public_host_unless_the_process_names_its_own_and_follow_its_scheme():
    processes = [dict(PROCESSES[0], health={"path": "/healthz"}),
                 {"name": "admin", "kind": "web", "port": 8101, "command": "x",
                  "health": {"path": "/ping", "host": "admin.internal", "scheme": "https"}}]
    gates = slot_gates(app_layout(spec(processes=processes)), "blue", host="shop.example.com")
    assert [(g["url"], g["host"]) for g in gates] == [
        ("http://127.0.0.1:8001/healthz", "shop.example.com"),
        ("https://127.0.0.1:8101/ping", "admin.internal")]
