#!/usr/bin/env python3
"""Render each role README's variable table from meta/argument_specs.yml, and
docs/variables.md, the reference of every role's variables in one page.

The table sits between the markers below; `--check` fails when a README or the
reference has drifted from the argument specs (run by `make test`'s lint stage).
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
        rows += ["", f"Entry point `{entry}` (`tasks_from: {entry}`): {_cell(spec.get('short_description', ''))}"]
        rows += ["", *_table(spec["options"])] if spec.get("options") else ["", "No variables of its own."]
    return "\n".join([BEGIN, *rows, END])


REFERENCE = ROOT / "docs" / "variables.md"


def reference(roles: list[pathlib.Path]) -> str:
    lines = ["# Variable reference", "",
             "Every role's variables, generated from its `meta/argument_specs.yml` by `scripts/role-docs.py`",
             "(do not edit by hand; `make lint` fails when this page and the specs differ). Each role's",
             "README explains how the variables work together.", ""]
    lines += [f"- [{role.name}](#{role.name})" for role in roles]
    for role in roles:
        specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
        lines += ["", f"## {role.name}", "", _cell(specs["main"].get("short_description", "")), "",
                  f"[README](../roles/{role.name}/README.md)", ""]
        lines += render(role).splitlines()[1:-1]
    return "\n".join(lines) + "\n"


def main() -> int:
    check = "--check" in sys.argv
    drifted = []
    roles = [r for r in sorted((ROOT / "roles").iterdir()) if (r / "meta" / "argument_specs.yml").exists()]
    page = reference(roles)
    if not REFERENCE.exists() or REFERENCE.read_text() != page:
        if check:
            drifted.append("docs/variables.md differs from the argument specs")
        else:
            REFERENCE.write_text(page)
            print(f"updated {REFERENCE.relative_to(ROOT)}")
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
