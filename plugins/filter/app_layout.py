# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: app_layout
short_description: The systemd units, slots and ports an application's process list turns into
version_added: 0.1.0
description:
  - Validates the role botstack.deploy.app's process list and computes, once, what the app and deploy
    roles both need - the unit files of each slot (one per process and slot, with its port), the units of each
    slot by kind, the port of each web process in each slot and the C(ExecStart) line of each unit.
  - A command's first word is the program - an absolute path as is; a relative path (C(bin/run)) from the slot's
    release directory; a bare name (C(gunicorn), C(python), C(uvicorn)) from the release's virtualenv
    (C(.venv/bin/)), as an activated venv would find it.
  - Fails with a message naming the process and the fix on bad input (a web process without a port, an
    empty command, an unknown kind, two singletons, a health path without a leading slash, clashing ports).
positional: _input
options:
  _input:
    description: >-
      A dict with C(name), C(root), C(processes), C(slots), C(slot_port_step), C(bind_address) and
      C(migrate_command) (the role's C(app_*) variables).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Work out the units
  ansible.builtin.set_fact:
    app_layout: "{{ {'name': app_name, 'root': app_root, 'processes': app_processes, 'slots': app_slots,
                     'slot_port_step': app_slot_port_step, 'bind_address': app_bind_address,
                     'migrate_command': app_migrate_command} | botstack.deploy.app_layout }}"
"""

RETURN = r"""
_value:
  description: >-
    C(unit_files) (one per process and slot - C(name), C(slot), C(port), C(kind), C(process), C(exec_start)...),
    C(units) (per slot, per kind), C(ports) (per web process, per slot), C(migrate_unit), C(web) (the web processes
    with their health checks), C(upstream) (the process behind the reverse proxy).
  type: dict
"""

import re
import shlex

from ansible.errors import AnsibleFilterError

KINDS = ("web", "worker", "singleton")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_PLACEHOLDERS = {"{port}": "${BOTSTACK_PORT}", "{bind}": "${BOTSTACK_BIND}", "{slot}": "%i"}
_HEALTH_DEFAULTS = {"path": "/health", "status_codes": [200], "json_field": None, "json_value": None,
                    "host": None, "scheme": "http"}
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(:[0-9]{1,5})?$")


def _fail(index, process, message):
    named = isinstance(process, dict) and process.get("name")
    label = "app_processes[%d]%s" % (index, " (%s)" % process["name"] if named else "")
    raise AnsibleFilterError("%s: %s" % (label, message))


def exec_start(command, root, instance=None):
    """The ExecStart line for a command run from the slot's release directory.

    A relative executable (.venv/bin/uvicorn) is taken from the slot (<root>/slots/%i/...), a bare
    name (gunicorn) from the slot's venv (<root>/slots/%i/.venv/bin/gunicorn); {port}, {bind} and
    {slot} become the unit's environment and instance; other % and $ are literal (escaped for systemd).
    """
    words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]
    line = []
    for position, word in enumerate(words):
        word = word.replace("%", "%%").replace("$", "$$")
        for placeholder, value in _PLACEHOLDERS.items():
            word = word.replace(placeholder, value)
        if instance is not None:
            word = word.replace("{instance}", str(instance))
        if position == 0 and not word.startswith("/"):
            word = "%s/slots/%%i/%s%s" % (root.rstrip("/"), "" if "/" in word else ".venv/bin/", word)
        if re.search(r"[\s\"'\\;]", word):
            word = '"%s"' % word.replace("\\", "\\\\").replace('"', '\\"')
        line.append(word)
    return " ".join(line)


def _validate(index, process, names):
    if not isinstance(process, dict):
        _fail(index, process, "must be a mapping with name, kind and command")
    name = process.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        _fail(index, process, "name must be 1-31 lowercase letters, digits or '-', starting with a letter "
                              "(it becomes part of the unit name), got %r" % (name,))
    if name in names or name == "migrate":
        _fail(index, process, "name %r is %s; every process needs its own name"
              % (name, "reserved for the migration unit" if name == "migrate" else "used twice"))
    names.add(name)
    kind = process.get("kind")
    if kind not in KINDS:
        _fail(index, process, "kind must be one of %s, got %r" % (", ".join(KINDS), kind))
    command = process.get("command")
    if not command or (isinstance(command, str) and not command.strip()):
        _fail(index, process, "command is empty; give the command that runs the process from the release "
                              "directory, e.g. .venv/bin/uvicorn app.main:app --host {bind} --port {port}")
    if kind == "web":
        port = process.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            _fail(index, process, "a web process needs port, the TCP port of its first slot (the others use "
                                  "port + slot_port_step), e.g. port: 8001; got %r" % (port,))
        health = dict(_HEALTH_DEFAULTS, **(process.get("health") or {}))
        if not isinstance(health["path"], str) or not health["path"].startswith("/"):
            _fail(index, process, "health.path must start with '/', e.g. /health; got %r" % (health["path"],))
        if health["json_field"] and health["json_value"] is None:
            _fail(index, process, "health.json_value is required with health.json_field")
        if health["scheme"] not in ("http", "https"):
            _fail(index, process, "health.scheme must be http or https (how the process itself answers), got %r"
                  % (health["scheme"],))
        if health["host"] is not None and not (isinstance(health["host"], str) and _HOST.match(health["host"])):
            _fail(index, process, "health.host is the Host header the gate sends (a name the app accepts, e.g. its "
                                  "ALLOWED_HOSTS entry such as shop.example.com), got %r" % (health["host"],))
    elif process.get("port") is not None:
        _fail(index, process, "port is for web processes only; a %s does not listen" % kind)
    instances = process.get("instances", 1)
    if not isinstance(instances, int) or isinstance(instances, bool) or instances < 1 or instances > 32:
        _fail(index, process, "instances must be a number from 1 to 32, got %r" % (instances,))
    if instances > 1 and kind != "worker":
        _fail(index, process, "only workers run several instances; a %s runs once per slot" % kind)


def app_layout(spec):
    if not isinstance(spec, dict):
        raise AnsibleFilterError("app_layout expects a dict of the app role's settings")
    app, root = spec["name"], spec["root"]
    slots = list(spec.get("slots") or [])
    step = int(spec.get("slot_port_step", 1))
    processes = spec.get("processes") or []
    if not isinstance(processes, list):
        raise AnsibleFilterError("app_processes must be a list of processes (name, kind, command...)")
    if len(slots) != 2 or len(set(slots)) != 2:
        raise AnsibleFilterError("app_slots must name two slots (blue/green style), got %r" % (slots,))
    names = set()
    for index, process in enumerate(processes):
        _validate(index, process, names)
    singletons = [p["name"] for p in processes if p["kind"] == "singleton"]
    if len(singletons) > 1:
        raise AnsibleFilterError(
            "app_processes has %d singletons (%s): only one process per environment may be a singleton; run "
            "the others as workers or merge their schedules into one scheduler" % (len(singletons), ", ".join(singletons)))

    templates = []
    units = dict((slot, {"web": [], "worker": [], "singleton": []}) for slot in slots)
    ports, web, seen_ports = {}, [], {}
    for process in processes:
        kind, count = process["kind"], process.get("instances", 1)
        for n in range(1, count + 1):
            numbered = count > 1
            prefix = "%s-%s%s" % (app, process["name"], "-%d" % n if numbered else "")
            templates.append({
                "prefix": prefix,
                "process": process["name"],
                "kind": kind,
                "instance": n if numbered else None,
                "exec_start": exec_start(process["command"], root, n if numbered else None),
                "env": dict(process.get("env") or {}),
                "stop_timeout": process.get("stop_timeout"),
            })
            for slot in slots:
                units[slot][kind].append("%s@%s.service" % (prefix, slot))
        if kind == "web":
            ports[process["name"]] = {}
            for position, slot in enumerate(slots):
                port = process["port"] + position * step
                clash = seen_ports.get(port)
                if clash:
                    raise AnsibleFilterError(
                        "app_processes: port %d is used by %s and by %s in slot %s; each web process listens on "
                        "port and port + %d (app_slot_port_step), so leave room between their ports"
                        % (port, clash, process["name"], slot, step))
                seen_ports[port] = "%s in slot %s" % (process["name"], slot)
                ports[process["name"]][slot] = port
            web.append({"name": process["name"], "ports": ports[process["name"]],
                        "health": dict(_HEALTH_DEFAULTS, **(process.get("health") or {})),
                        "units": dict((slot, "%s-%s@%s.service" % (app, process["name"], slot)) for slot in slots)})
    migrate = None
    if spec.get("migrate_command"):
        migrate = "%s-migrate@{slot}.service" % app
        templates.append({"prefix": "%s-migrate" % app, "process": "migrate", "kind": "migrate",
                          "instance": None, "exec_start": exec_start(spec["migrate_command"], root), "env": {},
                          "stop_timeout": None})
    # One unit file per process and slot: each slot's units are installed from the configuration bundle
    # it was started with (botstack.deploy.app_config), the port of its slot written in.
    unit_files = [dict(t, name="%s@%s.service" % (t["prefix"], slot), slot=slot,
                       port=ports[t["process"]][slot] if t["kind"] == "web" else None)
                  for slot in slots for t in templates]
    return {
        "name": app,
        "root": root,
        "target": "%s.target" % app,
        "slots": slots,
        "unit_files": unit_files,
        "units": units,
        "ports": ports,
        "slot_ports": dict((slot, [ports[w["name"]][slot] for w in web]) for slot in slots),
        "unit_ports": dict((w["units"][slot], [w["ports"][slot]]) for w in web for slot in slots),
        "web": web,
        "upstream": web[0] if web else None,
        "migrate_unit": migrate,
        "bind_address": spec.get("bind_address", "127.0.0.1"),
    }


class FilterModule(object):
    def filters(self):
        return {"app_layout": app_layout}
