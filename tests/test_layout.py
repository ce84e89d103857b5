"""The shape the design card promises, checked on the source: protocol adapters hold only their
wire format, and the core knows no transport."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ADAPTERS = sorted(p for p in (REPO / "protocols").glob("*.py") if p.name != "__init__.py")
# the gateway's parts an adapter must not drive itself: it calls one operation per request
LIFECYCLE = {
    *("admission", "accounting", "keyring", "router", "backends", "store", "metrics"),
    *("authenticate", "route", "settle", "finish", "bill", "close_books", "check_duration"),
    *("admit_connection", "admit_key", "admit_job", "admit_stream", "note_error", "begin"),
}


def _names(path: Path) -> tuple[set[str], set[str]]:
    """Attribute names used, and modules imported, by ``path``."""
    tree = ast.parse(path.read_text())
    attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    modules = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return attributes, modules


@pytest.mark.parametrize("path", ADAPTERS, ids=lambda p: p.name)
def test_an_adapter_calls_no_admission_or_accounting_step(path: Path) -> None:
    attributes, modules = _names(path)
    assert not attributes & LIFECYCLE, sorted(attributes & LIFECYCLE)
    assert not {m for m in modules if m.split(".")[-1] in LIFECYCLE | {"execution"}}


@pytest.mark.parametrize("path", sorted((REPO / "speechgw").glob("*.py")), ids=lambda p: p.name)
def test_the_core_imports_no_transport(path: Path) -> None:
    _, modules = _names(path)
    process = ("app.py", "server.py", "_hypercorn_compat.py", "_wsproto_compat.py", "cli.py")
    if path.name in (*process, "early_answer.py"):
        return  # the ASGI app (and its HTTP answers to any protocol) and the process around it
    transports = {
        m for m in modules if m.split(".")[0] in ("starlette", "hypercorn", "websockets", "wsproto")
    }
    assert not transports, transports
