"""The layers hold at run time too, and no import inside a function dodges them.

`lint-imports` (.importlinter, run by CI) checks the import graph; these tests check what the
graph cannot: (1) an import placed inside a function is one of the few kinds the design allows
(an optional heavy dependency, or a CLI command loading the part it runs), never a project
module pulled in late to hide a cycle; (2) what each floor actually loads when imported.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("bnlab", "backend", "worker")
# The only places a function may import a project module, and why:
ALLOWED_LATE = {
    # The command line: each command loads the part it runs (the server, the worker, the
    # engine), so a client install without them still runs `bnlab sync`, and `serve
    # --data-dir` can set the environment before the server's settings are read.
    "bnlab/cli.py": FIRST_PARTY,
    # Run.watch / Run.evaluate need torch, which the client does not depend on.
    "bnlab/sdk/run.py": ("bnlab.sdk.probe",),
    # NumPy is optional for the client: the binary wire format loads at the first send.
    "bnlab/sdk/transport.py": ("bnlab.core.wire",),
}


def late_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every first-party import inside a function body."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = "." * node.level + (node.module or "")
                names = [
                    f"{base}.{a.name}" if not base.endswith(".") else base + a.name
                    for a in node.names
                ]
            for name in names:
                if name.startswith(".") or name.split(".")[0] in FIRST_PARTY:
                    found.append((node.lineno, name))
    return found


def test_no_function_level_import_of_a_project_module_outside_the_allowed_places():
    offenders = []
    for top in FIRST_PARTY:
        for path in sorted((REPO / top).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if "/migrations/" in rel:
                continue  # Alembic loads revision files itself
            allowed = ALLOWED_LATE.get(rel, ())
            for line, name in late_imports(path):
                if not any(name == a or name.startswith(a + ".") for a in allowed):
                    offenders.append(f"{rel}:{line} imports {name} inside a function")
    assert not offenders, "\n".join(offenders)


def test_the_checker_sees_a_late_import(tmp_path):
    """The check above can fail: a function-level project import is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from backend.db import models\n    return models\n")
    assert late_imports(bad) == [(2, "backend.db.models")]


def loaded_by(module: str) -> set[str]:
    """The top-level packages (and bnlab's parts) a fresh interpreter holds after importing
    `module`."""
    code = (
        f"import json, sys; import {module}; "
        "print(json.dumps(sorted({m if m.startswith('bnlab.') and m.count('.') == 1 "
        "else m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout))


@pytest.mark.parametrize(
    ("module", "never"),
    [
        # the core: no torch, no server library, no HTTP client, no other floor
        (
            "bnlab.core.schema.experiment",
            {"torch", "sqlalchemy", "httpx", "backend", "worker", "bnlab.sdk", "bnlab.engine"},
        ),
        # the client: no torch, no server library, no server code
        ("bnlab", {"torch", "sqlalchemy", "celery", "fastapi", "backend", "worker"}),
        ("bnlab.sdk.run", {"torch", "sqlalchemy", "celery", "fastapi", "backend", "worker"}),
        # the server: no torch, no engine, no client, no worker
        ("backend.api.main", {"torch", "bnlab.engine", "bnlab.sdk", "worker"}),
        # the engine: no server, no client
        ("bnlab.engine.train", {"sqlalchemy", "celery", "httpx", "backend", "bnlab.sdk"}),
    ],
)
def test_a_floor_loads_nothing_it_must_not(module, never):
    assert not loaded_by(module) & never
