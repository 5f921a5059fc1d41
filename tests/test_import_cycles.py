"""The engine imports the tasks, never the other way round: each module of either side
imports first in a fresh interpreter, and no module under ``mmanet/tasks`` imports
``mmanet.engine`` (not even inside a function: the engine hands a task its loops)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import mmanet

FIRST = [
    "mmanet.tasks",
    "mmanet.tasks.base",
    "mmanet.tasks.classification",
    "mmanet.tasks.segmentation",
    "mmanet.engine.evaluate",
    "mmanet.engine",
]


def test_each_module_imports_first_in_a_fresh_interpreter():
    started = {
        name: subprocess.Popen(
            [sys.executable, "-c", f"import {name}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in FIRST
    }
    for name, process in started.items():
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, f"import {name} first:\n{err}"


def test_no_task_module_imports_the_engine():
    tasks = Path(mmanet.__file__).parent / "tasks"
    found = []
    for file in sorted(tasks.glob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            found += [
                f"{file.name}:{node.lineno} {n}"
                for n in names
                if n == "mmanet.engine" or n.startswith("mmanet.engine.")
            ]
    assert not found, found
