# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""This host's entry in an nginx upstream directory: written atomically, checked with nginx -t
(the previous entry put back when nginx rejects it) and loaded with a graceful reload."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import tempfile
import time

from ansible.module_utils.common.text.converters import to_bytes, to_text

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_ADDRESS = re.compile(r"^[A-Za-z0-9_.:\[\]-]+$")


def render(name, address, port, down):
    host = "[%s]" % address if ":" in address and not address.startswith("[") else address
    return (
        "# Managed by botstack.deploy: %s's entry in this upstream. The nginx role writes it first,\n"
        "# the deploy role rewrites it on each blue/green switch (nginx -t, then a graceful reload).\n"
        "server %s:%d%s;\n" % (name, host, port, " down" if down else "")
    )


def _read(path):
    try:
        with open(path, "rb") as handle:
            return to_text(handle.read())
    except (IOError, OSError):
        return None


def _write(module, path, content):
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(to_bytes(content))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        module.atomic_move(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _children(pid):
    """Process ids whose parent is pid."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as handle:
            return [int(child) for child in handle.read().split()]
    except (IOError, OSError, ValueError):
        pass
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat and stat[1] == str(pid):
                found.append(int(entry))
    return found


def _stat(pid):
    """Fields of /proc/<pid>/stat after the command name (state, ppid, ...), None when the process is gone."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (IOError, OSError, IndexError):
        return None


def loaded_since(main_pid):
    """Wall-clock time of nginx's last start or reload: the start of its newest process. None when unknown."""
    if not main_pid:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    starts = []
    for pid in [main_pid] + _children(main_pid):
        stat = _stat(pid)
        if stat is not None:
            starts.append(boot + int(stat[19]) / float(ticks))  # field 22, starttime, in clock ticks since boot
    return max(starts) if starts else None


def _nginx_service(module):
    """(active, main pid) of nginx.service as systemd sees it."""
    systemctl = module.get_bin_path("systemctl")
    if systemctl is None:
        return False, 0
    rc, out, _err = module.run_command([systemctl, "show", "--property=ActiveState,MainPID", "nginx"])
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line) if rc == 0 else {}
    try:
        main_pid = int(values.get("MainPID", "0"))
    except ValueError:
        main_pid = 0
    return values.get("ActiveState") == "active", main_pid


def _check_and_reload(module, p, nginx, result, previous, path):
    """nginx -t (the previous entry put back on rejection), then a graceful reload when nginx runs."""
    rc, out, err = module.run_command([nginx, "-t", "-q"])
    if rc != 0:
        if previous != _read(path):
            if previous is None:
                os.unlink(path)
            else:
                _write(module, path, previous)
            kept = "the previous one was put back and nginx kept its configuration"
        else:
            kept = "nginx kept its configuration"
        module.fail_json(
            msg="nginx rejected the upstream entry %s (%s), so %s: %s"
                % (p["name"], result["server"], kept, (err or out).strip()),
            **result)
    systemctl = module.get_bin_path("systemctl")
    if systemctl is not None and module.run_command([systemctl, "is-active", "--quiet", "nginx"])[0] == 0:
        rc, out, err = module.run_command([nginx, "-s", "reload"])
        if rc != 0:
            module.fail_json(msg="nginx accepted the configuration but did not reload: %s" % (err or out).strip(),
                             **result)
        result["reloaded"] = True


# Process start times count in clock ticks (10 ms); a file written this long after the newest
# process started is newer than what nginx loaded.
_LOAD_MARGIN = 0.05


def apply_entry(module, p):
    """Write the entry p (dir, name, address, port, down, reload) and load it; fails through module.fail_json.

    Returns the nginx_upstream_server module's result. Shared by that module and the slot switch.
    """
    if not _NAME.match(p["name"]):
        module.fail_json(msg="name must be a host name made of letters, digits, '.', '_' and '-', got %r" % p["name"])
    if not p["address"] or not _ADDRESS.match(p["address"]):
        module.fail_json(msg="address must be an IP address or a host name, got %r" % p["address"])
    if not 1 <= p["port"] <= 65535:
        module.fail_json(msg="port must be between 1 and 65535, got %d" % p["port"])
    if os.path.exists(p["dir"]) and not os.path.isdir(p["dir"]):
        module.fail_json(msg="dir %s exists and is not a directory" % p["dir"])

    path = os.path.join(p["dir"], p["name"] + ".conf")
    content = render(p["name"], p["address"], p["port"], p["down"])
    previous = _read(path)
    result = dict(changed=previous != content, path=path, server=content.splitlines()[-1], reloaded=False,
                  pending_reload=False)
    if module._diff:
        result["diff"] = dict(before=previous or "", after=content, before_header=path, after_header=path)
    nginx = module.get_bin_path("nginx")
    if not result["changed"]:
        if p["reload"] and nginx is not None:
            active, main_pid = _nginx_service(module)
            since = loaded_since(main_pid) if active else None
            if since is not None and os.stat(path).st_mtime > since + _LOAD_MARGIN:
                result.update(changed=True, pending_reload=True)
                if not module.check_mode:
                    _check_and_reload(module, p, nginx, result, previous, path)
        return result
    if module.check_mode:
        return result
    if not os.path.isdir(p["dir"]):
        os.makedirs(p["dir"], 0o755)
        os.chmod(p["dir"], 0o755)
    _write(module, path, content)
    if p["reload"] and nginx is not None:
        _check_and_reload(module, p, nginx, result, previous, path)
    return result
