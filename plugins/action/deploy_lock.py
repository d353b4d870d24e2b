# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's half of botstack.deploy.deploy_lock: which ansible-playbook run this is, and which runs are
alive on this controller. A run holding the lock from this same controller (another terminal, a cron job, a CI
job of the same runner) is alive while its process is, however long it stays away from the host (a pause, a
slow hook, the other hosts of a rolling deploy); once that process is gone it is dead at once, no grace
waited - the retry of a killed run starts right away."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket
import subprocess

from ansible.plugins.action import ActionBase


def ansible_pids():
    """Processes of this controller whose command line names ansible (ansible-playbook, ansible-runner...)."""
    try:
        out = subprocess.run(["ps", "-axo", "pid=,command="], capture_output=True, text=True, timeout=10,
                             check=True).stdout
        rows = [line.strip().split(None, 1) for line in out.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        rows = []
        for name in os.listdir("/proc") if os.path.isdir("/proc") else []:
            try:
                with open("/proc/%s/cmdline" % name, "rb") as handle:
                    rows.append([name, handle.read().replace(b"\0", b" ").decode("utf-8", "replace")])
            except (IOError, OSError):
                continue
    return sorted(int(row[0]) for row in rows if len(row) == 2 and row[0].isdigit() and "ansible" in row[1])


class ActionModule(ActionBase):
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
        # A worker process runs this plugin; its parent is the run's ansible-playbook.
        args.setdefault("controller", {"name": socket.gethostname(), "pid": os.getppid()})
        args.setdefault("controller_pids", ansible_pids())
        result.update(self._execute_module(module_name="botstack.deploy.deploy_lock", module_args=args,
                                           task_vars=task_vars))
        return result
