#!/usr/bin/env python3
"""Venv creation for the sample app's locked dependencies: uv vs pip, cold and warm.

Side by side on this host, same interpreter, same lock (examples/botapp/requirements.lock,
44 packages with hashes), same index (PyPI):

  naive pip cold   what deploy scripts do today: python -m venv + pip install -r, empty pip cache
  naive pip warm   the same with the pip cache filled
  module pip cold  botstack.deploy.python_venv installer=pip, empty cache
  module uv cold   botstack.deploy.python_venv installer=uv, empty uv cache
  module uv warm   a new venv store, uv cache filled
  ... no bytecode  both installers without compiling .pyc files (the role compiles: venvs are read-only)
  reuse            the same call again: the venv exists, nothing is installed

The module runs as Ansible runs it (a Python process reading its arguments from
a file). Prints a table; asserts nothing.

    .venv/bin/python benchmarks/python_venv.py [--python /usr/bin/python3] [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
LOCK = ROOT / "examples" / "botapp" / "requirements.lock"
SEED = ["pip==26.3", "setuptools==84.2.1"]
CA = "/etc/ssl/certs/ca-certificates.crt"


def clean_env() -> dict:
    """No pip configuration of this machine (local wheel dirs, constraints) skews pip's side."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_CERT=CA, SSL_CERT_FILE=CA, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def timed(argv: list[str], env: dict) -> float:
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv[:4])} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.monotonic() - start


def naive_pip(python: str, work: pathlib.Path, cache: pathlib.Path, *extra: str) -> float:
    venv = work / f"naive-{time.monotonic_ns()}"
    env = clean_env()
    start = time.monotonic()
    timed([python, "-m", "venv", str(venv)], env)
    timed([str(venv / "bin" / "pip"), "install", "--cache-dir", str(cache), *extra, "-r", str(LOCK)], env)
    return time.monotonic() - start


def module(args: dict, work: pathlib.Path) -> tuple[float, dict]:
    args_file = work / f"args-{time.monotonic_ns()}.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = clean_env()
    env["PYTHONPATH"] = str(ROOT)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "plugins" / "modules" / "python_venv.py"), str(args_file)],
                          capture_output=True, text=True, env=env, check=False)
    elapsed = time.monotonic() - start
    result = json.loads(proc.stdout)
    if result.get("failed"):
        sys.exit(f"python_venv failed: {result['msg']}")
    return elapsed, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="/usr/bin/python3", help="interpreter the venvs are built on")
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each case (fresh caches for cold ones)")
    opts = parser.parse_args()
    uv = shutil.which("uv") or str(pathlib.Path(sys.executable).parent / "uv")
    version = subprocess.check_output([opts.python, "-c", "import platform; print(platform.python_version())"],
                                      text=True).strip()
    uv_version = subprocess.check_output([uv, "--version"], text=True).split()[1]
    packages = sum(1 for line in LOCK.read_text().splitlines() if "==" in line and not line.startswith(" "))

    rows: list[tuple[str, list[float]]] = []
    with tempfile.TemporaryDirectory(prefix="botstack-venv-bench-") as tmp:
        work = pathlib.Path(tmp)

        rows.append(("naive pip, cold cache",
                     [naive_pip(opts.python, work, work / f"pip-cache-{run}") for run in range(opts.runs)]))
        rows.append(("naive pip, warm cache",
                     [naive_pip(opts.python, work, work / "pip-cache-0") for _ in range(opts.runs)]))

        def venv_args(store: str, cache: str, installer: str, compile_bytecode: bool = True) -> dict:
            return {"venvs_dir": str(work / store), "interpreter": opts.python, "requirements": str(LOCK),
                    "seed_packages": SEED, "installer": installer, "uv_path": uv, "cache_dir": str(work / cache),
                    "ca_bundle": CA, "compile_bytecode": compile_bytecode}

        rows.append(("module pip, cold cache", [module(venv_args(f"store-pip-{run}", f"cache-pip-{run}", "pip"), work)[0]
                                                for run in range(opts.runs)]))
        cold = []
        for run in range(opts.runs):
            elapsed, result = module(venv_args(f"store-uv-cold-{run}", f"cache-uv-cold-{run}", "uv"), work)
            assert result["changed"] and result["installer"] == "uv"
            cold.append(elapsed)
        rows.append(("module uv, cold cache", cold))
        # Without bytecode compilation on either side: the installers alone.
        rows.append(("naive pip --no-compile, cold cache",
                     [naive_pip(opts.python, work, work / f"pip-nc-{run}", "--no-compile") for run in range(opts.runs)]))
        rows.append(("module uv no bytecode, cold cache",
                     [module(venv_args(f"store-uv-nc-{run}", f"cache-uv-nc-{run}", "uv", False), work)[0]
                      for run in range(opts.runs)]))
        module(venv_args("store-uv", "cache-uv", "uv"), work)
        warm = []
        for run in range(opts.runs):
            elapsed, result = module(venv_args(f"store-uv-{run}", "cache-uv", "uv"), work)
            warm.append(elapsed)
        rows.append(("module uv, warm cache", warm))
        reuse, inner = [], []
        for _ in range(max(opts.runs, 5)):
            elapsed, result = module(venv_args("store-uv", "cache-uv", "uv"), work)
            assert result["reused"] and not result["changed"]
            reuse.append(elapsed)
            inner.append(result["duration"])
        rows.append(("reuse (same lock), module process", reuse))
        rows.append(("reuse (same lock), inside module", inner))

    print(f"python_venv benchmark: Python {version} ({opts.python}), uv {uv_version}, pip 26.3 seed, "
          f"{packages} locked packages, {os.cpu_count()} CPUs, index PyPI")
    print(f"{'case':<36} {'median s':>9} {'min s':>8} {'runs':>5}")
    medians = {}
    for name, values in rows:
        medians[name] = statistics.median(values)
        print(f"{name:<36} {medians[name]:>9.2f} {min(values):>8.2f} {len(values):>5}")
    print(f"uv cold vs naive pip cold: {medians['naive pip, cold cache'] / medians['module uv, cold cache']:.1f}x faster")
    print(f"uv cold vs module pip cold: {medians['module pip, cold cache'] / medians['module uv, cold cache']:.1f}x faster")
    print("without bytecode, uv cold vs naive pip cold: "
          f"{medians['naive pip --no-compile, cold cache'] / medians['module uv no bytecode, cold cache']:.1f}x faster")
    print(f"uv warm vs naive pip warm: {medians['naive pip, warm cache'] / medians['module uv, warm cache']:.1f}x faster")
    print(f"reuse: {medians['reuse (same lock), module process']:.2f} s (target <= 1 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
