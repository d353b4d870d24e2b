#!/usr/bin/env python3
"""Render each role README's variable table from meta/argument_specs.yml.

The table sits between the markers below; `--check` fails when a README has
drifted from its argument spec (run by `make test`'s lint stage).
"""
from __future__ import annotations

import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
BEGIN = "<!-- BEGIN VARIABLES: generated from meta/argument_specs.yml by scripts/role-docs.py -->"
END = "<!-- END VARIABLES -->"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(spec: dict) -> str:
    if "default" not in spec:
        return "see defaults/main.yml" if spec.get("type") == "list" else ""
    value = spec["default"]
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}`"


def _table(options: dict) -> list[str]:
    rows = ["| Variable | Type | Default | Description |", "|---|---|---|---|"]
    for name, opt in options.items():
        desc = opt.get("description", "")
        desc = " ".join(desc) if isinstance(desc, list) else desc
        if "choices" in opt:
            desc += " Choices: " + ", ".join(f"`{c}`" for c in opt["choices"]) + "."
        if opt.get("required"):
            desc = "**Required.** " + desc
        kind = opt.get("type", "str") + (f" of {opt['elements']}" if "elements" in opt else "")
        rows.append(f"| `{name}` | {kind} | {_cell(_default(opt))} | {_cell(desc)} |")
    return rows


def render(role: pathlib.Path) -> str:
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    rows = _table(specs["main"]["options"])
    # Further entry points (include_role tasks_from) get a table each.
    for entry, spec in specs.items():
        if entry == "main":
            continue
        rows += ["", f"Entry point `{entry}` (`tasks_from: {entry}`): {_cell(spec.get('short_description', ''))}",
                 "", *_table(spec.get("options", {}))]
    return "\n".join([BEGIN, *rows, END])


def main() -> int:
    check = "--check" in sys.argv
    drifted = []
    for role in sorted((ROOT / "roles").iterdir()):
        readme = role / "README.md"
        if not (role / "meta" / "argument_specs.yml").exists():
            drifted.append(f"{role.name}: no meta/argument_specs.yml")
            continue
        text = readme.read_text() if readme.exists() else ""
        if BEGIN not in text or END not in text:
            drifted.append(f"{role.name}: README.md lacks the variable table markers")
            continue
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        new = head + render(role) + tail
        if new != text:
            if check:
                drifted.append(f"{role.name}: README.md variable table differs from argument_specs.yml")
            else:
                readme.write_text(new)
                print(f"updated {readme.relative_to(ROOT)}")
    for line in drifted:
        print(line, file=sys.stderr)
    if drifted:
        print("run: scripts/role-docs.py", file=sys.stderr)
    return 1 if drifted else 0


if __name__ == "__main__":
    sys.exit(main())
