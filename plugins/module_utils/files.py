# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Writing files as root into directories another user may write (e.g. node_exporter's textfile directory,
group-writable by the backup units).

Whoever can write a directory can plant a symlink (or swap a file for one) at any name in it. Root then must
never open, chmod or chown a path there by name after creating it: every write goes through a file descriptor
of a file root created itself (``O_EXCL``, or ``O_NOFOLLOW`` for a file that is appended to), its mode and
owner are set on that descriptor (``fchmod``/``fchown``), and a new content goes live with ``rename(2)``
(``os.replace``), which replaces a symlink at the target name itself, never the file it points to.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import stat
import tempfile


def _to_bytes(data):
    return data if isinstance(data, bytes) else data.encode("utf-8")


def write_file_atomic(path, data, mode, uid=None, gid=None):
    """Replace path with data: a new file (random name, ``O_EXCL``) in the same directory, its mode and owner
    set on the descriptor, synced, then renamed onto path. A symlink planted at path is replaced, not followed."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=directory)
    try:
        try:
            _write_all(fd, _to_bytes(data))
            if uid is not None or gid is not None:
                os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def append_line(path, line, mode, uid=None, gid=None):
    """Append one line to path (created with mode when missing). Refuses a path that is a symlink (``O_NOFOLLOW``),
    not a regular file, or a hard link to another name (a file root does not own could sit behind it); mode and
    owner are set on the descriptor. Returns nothing; raises OSError with the reason."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0),
                 mode)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if info.st_nlink != 1:
            raise OSError(errno.EMLINK, "the file has %d names (hard links); refusing to write it" % info.st_nlink, path)
        if uid is not None or gid is not None:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        os.fchmod(fd, mode)
        _write_all(fd, _to_bytes(line))
    finally:
        os.close(fd)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass
