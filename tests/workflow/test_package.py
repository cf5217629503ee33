"""Package-level rules: a light import, and no print() in library code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import deepwiener

PACKAGE = Path(deepwiener.__file__).parent


def test_import_loads_neither_matplotlib_nor_control() -> None:
    code = ("import sys, deepwiener; heavy = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'matplotlib', 'control'}); print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_names_exist() -> None:
    for name in deepwiener.__all__:
        assert hasattr(deepwiener, name), name


def test_no_print_outside_the_cli() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, offenders
