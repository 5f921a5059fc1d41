"""The docs list what the registries hold: every registered name in its row of the
README's configuration table, and nothing else (a name added without its docs, or docs
left behind by a removed one, fails here)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
NOT_NAMES = {"none", "default"}  # the off-switches and the builder's own fusion


@pytest.fixture(scope="module")
def registered() -> dict[str, list[str]]:
    """The built-in names of every registry, read in a fresh process (the tests register
    their own entries in this one)."""
    code = (
        "import json, mmanet.registry as r\n"
        "names = ['DATASETS', 'DISTILLATIONS', 'FUSIONS', 'METHODS', 'MODELS', 'REGULARIZERS',"
        " 'TASKS']\n"
        "print(json.dumps({n: getattr(r, n).names() for n in names}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def table_row(key: str) -> str:
    """The README configuration-table row whose first cell names ``key`` first."""
    for line in README.read_text().splitlines():
        if line.startswith(f"| `{key}`"):
            return line
    raise AssertionError(f"README has no configuration row for {key}")


def listed(row: str, cell: int = 3) -> set[str]:
    """The `backticked` names of one cell of a table row."""
    text = row.split("|")[cell]
    return {name for name in re.findall(r"`([a-z0-9_]+)`", text)} - NOT_NAMES


@pytest.mark.parametrize(
    ("key", "registry"),
    [
        ("data.name", "DATASETS"),
        ("model.name", "MODELS"),
        ("model.fusion", "FUSIONS"),
        ("method.name", "METHODS"),
        ("task", "TASKS"),
    ],
)
def test_the_readme_lists_every_registered_name(registered, key, registry):
    assert listed(table_row(key)) == set(registered[registry])


def test_the_readme_lists_every_distillation_loss_and_regularizer(registered):
    names = listed(table_row("method.dropout"))
    assert names == set(registered["DISTILLATIONS"]) | set(registered["REGULARIZERS"])


def test_the_method_docs_list_every_registered_method(registered):
    table = (Path(__file__).parents[1] / "docs" / "method.md").read_text()
    section = table[table.index("## Methods") : table.index("## Paper settings")]
    for name in registered["METHODS"]:
        assert f"`{name}`" in section, name
