# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The deploy lock and how a run tells a live holder from a dead one.

The lock is a JSON file (owner, run_id, since, details) that only ever appears complete: it is written under a
random name and hard-linked into place (``link(2)`` fails when the name exists). A run is one ansible-playbook
run; the deploy role makes its id once and sets, on every task from the lock to its release::

    BOTSTACK_DEPLOY_RUN=<run id>    BOTSTACK_DEPLOY_LOCK=<lock path>

so a run shows it is alive on the host in two ways:

* processes: every module process of the run and its children (git, pip, systemctl waiting for a migration...)
  carry ``BOTSTACK_DEPLOY_RUN`` in ``/proc/<pid>/environ`` (root reads every process's);
* heartbeat: every botstack.deploy module calls :func:`heartbeat` first; when the lock is its run's, it touches
  the lock file, so a run between two tasks is seen too (its inode's mtime and ctime change).

Another run takes the lock over only from a dead run: no process of it, and no heartbeat while it watched.
Every removal of the lock (takeover, release) happens under an exclusive ``flock`` of ``<lock>.guard`` after
checking that the file is still the one judged (same inode, same times), and a heartbeat touches the lock under a
shared ``flock`` of it: two runs that both judged the holder dead cannot both win, and a heartbeat cannot slip
between a takeover's last check and its removal.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import errno
import fcntl
import json
import os
import tempfile
import time

ENV_RUN = "BOTSTACK_DEPLOY_RUN"
ENV_LOCK = "BOTSTACK_DEPLOY_LOCK"
GUARD_SUFFIX = ".guard"
POLL_SECONDS = 0.1
GUARD_WAIT_SECONDS = 30.0
HEARTBEAT_GUARD_WAIT_SECONDS = 2.0
_MAX_LOCK_BYTES = 1 << 16
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class LockError(Exception):
    """The lock could not be examined or changed; the message says why."""


# ---------------------------------------------------------------- reading


def read_lock(path):
    """(holder, stat) of the lock file, (None, None) when there is none. An unreadable file is a holder too."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None, None
        raise
    try:
        info = os.fstat(fd)
        raw = os.read(fd, _MAX_LOCK_BYTES)
    finally:
        os.close(fd)
    try:
        holder = json.loads(raw.decode("utf-8"))
        if not isinstance(holder, dict):
            raise ValueError("not an object")
    except ValueError:
        holder = {"owner": "unknown (unreadable lock file)", "since": None}
    return holder, info


def signature(info):
    """What changes when the lock file is replaced or touched."""
    return None if info is None else (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_ctime_ns)


def _lstat(path):
    try:
        return os.lstat(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise


# ---------------------------------------------------------------- processes of a run


def lineage(pid=None):
    """pid (default: this process) and its ancestors: they carry this run's variables, never the holder's."""
    pids, pid = set(), pid or os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            with open("/proc/%d/stat" % pid) as handle:
                pid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (IOError, OSError, ValueError, IndexError):
            break
    return pids


def run_processes(run_id, exclude=()):
    """[{pid, cmd}] of the processes on this host whose environment holds BOTSTACK_DEPLOY_RUN=run_id."""
    if not run_id:
        return []
    needle = ("%s=%s" % (ENV_RUN, run_id)).encode("utf-8")
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in exclude:
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as handle:
                environ = handle.read()
        except (IOError, OSError):
            continue  # gone, or not ours to read (only root sees every process)
        if needle in environ.split(b"\0"):
            found.append({"pid": int(name), "cmd": _cmdline(name)})
    return sorted(found, key=lambda proc: proc["pid"])


def _cmdline(pid, width=120):
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as handle:
            words = handle.read().split(b"\0")
    except (IOError, OSError):
        return "?"
    text = " ".join(w.decode("utf-8", "replace") for w in words if w)
    return text if len(text) <= width else text[:width - 3] + "..."


# ---------------------------------------------------------------- watching a holder


def identity(holder):
    """What tells one taking of the lock from another (a heartbeat changes the file's times, never this)."""
    return None if holder is None else tuple(holder.get(key) for key in ("owner", "run_id", "since", "pid"))


def watch(path, judged, holder, grace, exclude=(), clock=time.monotonic, sleep=time.sleep):
    """Watch the lock judged (its stat and holder) for up to grace seconds for a sign that its run lives.

    Returns a dict: ``sign`` - None (nothing for the whole grace: the run is dead), ``processes`` (a process of
    the run appeared), ``heartbeat`` (the file was touched), ``replaced`` (another lock is there now: another run
    took it), ``released`` (the file is gone) - with ``processes`` and ``waited_seconds``.
    """
    run_id, started = holder.get("run_id"), clock()
    deadline = started + grace
    while True:
        info = _lstat(path)
        sign, procs = None, []
        if info is None:
            sign = "released"
        elif signature(info) != signature(judged):
            # Inode numbers are reused: a lock written anew can have the old one; its content tells.
            current = read_lock(path)[0]
            sign = "released" if current is None else "heartbeat" if identity(current) == identity(holder) else "replaced"
        else:
            procs = run_processes(run_id, exclude)
            sign = "processes" if procs else None
        now = clock()
        if sign or now >= deadline:
            return {"sign": sign, "processes": procs, "waited_seconds": round(now - started, 2)}
        sleep(min(POLL_SECONDS, deadline - now))


# ---------------------------------------------------------------- changing the lock (under the guard)


def create(path, content):
    """Write the lock at path unless a file is there. True when this call created it."""
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=".%s.new-" % name, dir=directory or ".")
    try:
        try:
            os.write(fd, (json.dumps(content, sort_keys=True) + "\n").encode("utf-8"))
            os.fchmod(fd, 0o600)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                return False
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
            return _create_exclusive(path, content)  # a file system without hard links
        return True
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _create_exclusive(path, content):
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            return False
        raise
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(content, sort_keys=True) + "\n")
    return True


def take_free(path, content):
    """Create the lock when there is none. Returns (True, None), or (False, holder) when another run has it."""
    with guarded(path):
        if create(path, content):
            return True, None
        return False, read_lock(path)[0]


def take_over(path, judged, holder, content, exclude=()):
    """Replace the lock judged dead (its stat and holder) with content, unless it changed or its run showed up.

    Returns (outcome, detail): ``taken``; ``changed`` (touched or replaced since it was judged: detail is the
    current holder); ``processes`` (a process of its run runs now: detail lists them); ``raced`` (another run
    created the lock first: detail is its holder).
    """
    with guarded(path):
        current, info = read_lock(path)
        if current is not None:
            if signature(info) != signature(judged) or identity(current) != identity(holder):
                return "changed", current
            procs = run_processes(holder.get("run_id"), exclude)
            if procs:
                return "processes", procs
            os.unlink(path)
        if create(path, content):
            return "taken", None
        return "raced", read_lock(path)[0]


def release(path, run_id):
    """Remove the lock when it is run_id's. Returns (removed, holder)."""
    with guarded(path):
        holder = read_lock(path)[0]
        if holder is None or holder.get("run_id") != run_id:
            return False, holder
        os.unlink(path)
        return True, holder


@contextlib.contextmanager
def guarded(path, wait=GUARD_WAIT_SECONDS):
    """Hold an exclusive flock of <lock>.guard (created 0600, never removed) for the with-block."""
    guard = path + GUARD_SUFFIX
    fd = os.open(guard, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | _CLOEXEC, 0o600)
    try:
        if not _flock(fd, fcntl.LOCK_EX, wait):
            raise LockError("%s stayed locked by another deploy_lock task for %g s" % (guard, wait))
        yield
    finally:
        os.close(fd)  # closing the only descriptor drops the flock


def _flock(fd, operation, wait):
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return True
        except (IOError, OSError) as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


# ---------------------------------------------------------------- heartbeat


def heartbeat(environ=None):
    """Touch the deploy lock when it is this run's: BOTSTACK_DEPLOY_RUN and BOTSTACK_DEPLOY_LOCK set (in environ,
    default os.environ) and the lock's run_id equal to BOTSTACK_DEPLOY_RUN. Every botstack.deploy module calls it
    first. Never raises: a module must not fail over its heartbeat. True when the lock was touched."""
    environ = os.environ if environ is None else environ
    try:
        return _heartbeat(environ.get(ENV_RUN), environ.get(ENV_LOCK))
    except Exception:
        return False


def _heartbeat(run_id, path):
    if not run_id or not path or _run_of(path) != run_id:
        return False
    # Under a shared flock of the guard: a takeover (exclusive) either sees this touch or has already replaced the
    # file, so the touch never falls between its last check and its removal of the lock.
    guard = os.open(path + GUARD_SUFFIX, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | _CLOEXEC, 0o600)
    try:
        if not _flock(guard, fcntl.LOCK_SH, HEARTBEAT_GUARD_WAIT_SECONDS):
            return False
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC)
        try:
            if _run_of(fd) != run_id:
                return False
            os.utime(fd)  # the file just read, whatever its name points at now
            return True
        finally:
            os.close(fd)
    finally:
        os.close(guard)


def _run_of(lock):
    """The run_id in the lock (a path or an open descriptor), None when there is none."""
    if not isinstance(lock, int):
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC)
        try:
            return _run_of(fd)
        finally:
            os.close(fd)
    try:
        holder = json.loads(os.read(lock, _MAX_LOCK_BYTES).decode("utf-8"))
    except ValueError:
        return None
    return holder.get("run_id") if isinstance(holder, dict) else None
