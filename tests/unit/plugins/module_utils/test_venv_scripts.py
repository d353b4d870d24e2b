"""pip's entry points name the venv's final path, with a plain shebang whenever that path fits."""
from __future__ import annotations

from ansible_collections.botstack.deploy.plugins.module_utils.venv import relocate_scripts

BODY = b"# -*- coding: utf-8 -*-\nimport sys\nfrom app import main\nsys.exit(main())\n"


def trampoline(python):
    return b"#!/bin/sh\n'''exec' " + python.encode() + b' "$0" "$@"\n' + b"' '''\n" + BODY


def write_script(venv, data):
    (venv / "bin").mkdir(parents=True)
    script = venv / "bin" / "app"
    script.write_bytes(data)
    return script


def test_a_trampoline_from_a_long_build_path_becomes_a_plain_shebang(tmp_path):
    temp = tmp_path / (".tmp-cpython-3.13.0-" + "x" * 80)
    final = tmp_path / "cpython-3.13.0-552c549f"
    script = write_script(temp, trampoline(f"{temp}/bin/python"))
    relocate_scripts(str(temp), str(temp), str(final))
    assert script.read_bytes() == f"#!{final}/bin/python\n".encode() + BODY


def test_a_final_path_over_the_kernel_limit_keeps_the_trampoline(tmp_path):
    temp = tmp_path / (".tmp-" + "y" * 130)
    final = tmp_path / ("z" * 130)
    script = write_script(temp, trampoline(f"{temp}/bin/python"))
    relocate_scripts(str(temp), str(temp), str(final))
    assert script.read_bytes() == trampoline(f"{final}/bin/python")


def test_a_plain_shebang_is_only_repointed(tmp_path):
    temp, final = tmp_path / ".tmp-a", tmp_path / "a"
    script = write_script(temp, f"#!{temp}/bin/python\n".encode() + BODY)
    relocate_scripts(str(temp), str(temp), str(final))
    assert script.read_bytes() == f"#!{final}/bin/python\n".encode() + BODY
