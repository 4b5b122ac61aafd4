"""bench/ is a package on the exporter's public API: no module edits ``sys.path``, imports a private name (of
exporter, client or another bench module) or patches the project's modules. Read from the source with ``ast``,
so nothing here runs a benchmark."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
MODULES = sorted(BENCH.glob("*.py"))
PROJECT = ("exporter", "client", "bench")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _project(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] in PROJECT


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _project_names(tree: ast.Module) -> set[str]:
    """Local names bound to the project's modules or objects by imports."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names if _project(a.name)}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _project(node.module):
            names |= {a.asname or a.name for a in node.names}
    return names


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _sys_path_edits(tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _dotted(node) == "sys.path":
            found.append(f"line {node.lineno}: sys.path")
        elif isinstance(node, ast.ImportFrom) and node.module == "sys" and any(a.name == "path" for a in node.names):
            found.append(f"line {node.lineno}: from sys import path")
        elif isinstance(node, ast.Attribute) and _dotted(node) == "site.addsitedir":
            found.append(f"line {node.lineno}: site.addsitedir")
    return found


def _private_imports(tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            found.append(f"line {node.lineno}: relative import (use bench.* / exporter.*)")
        elif isinstance(node, ast.ImportFrom) and _project(node.module):
            bad = [p for p in node.module.split(".") if _private(p)] + [a.name for a in node.names if _private(a.name)]
            found += [f"line {node.lineno}: from {node.module} import {b}" for b in bad]
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if _project(a.name) and any(_private(p) for p in a.name.split("."))]
    return found


def _patches(tree: ast.Module) -> set[str]:
    """Private attributes of the project's modules read, and any of their attributes assigned or setattr'd."""
    roots = _project_names(tree)
    found = set()
    for node in ast.walk(tree):
        targets: list[ast.AST] = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr"):
            targets = node.args[:1]
        for target in targets:
            dotted = _dotted(target) if isinstance(target, (ast.Attribute, ast.Name)) else None
            if dotted and "." in dotted and dotted.split(".")[0] in roots:
                found.add(dotted)
            elif isinstance(node, ast.Call) and dotted in roots:
                found.add(f"setattr({dotted}, ...)")
        if isinstance(node, ast.Attribute) and _private(node.attr):
            dotted = _dotted(node)
            if dotted and dotted.split(".")[0] in roots:
                found.add(dotted)
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_sys_path_edits(path):
    assert _sys_path_edits(_tree(path)) == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_private_imports(path):
    assert _private_imports(_tree(path)) == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_monkeypatching_of_the_project(path):
    assert _patches(_tree(path)) == set()


def test_the_checks_catch_what_they_are_for():
    source = ("import sys\nfrom exporter.precisions._onnx import export_fp32\nfrom exporter.serve import _x\n"
              "from bench.report import _fmt\nfrom exporter import serve\nsys.path.insert(0, '.')\n"
              "serve.TritonServer.start = None\nserve._check = None\nsetattr(serve, 'x', 1)\n")
    tree = ast.parse(source)
    assert len(_sys_path_edits(tree)) == 1
    assert len(_private_imports(tree)) == 3
    assert _patches(tree) == {"serve.TritonServer.start", "serve._check", "setattr(serve, ...)"}


@pytest.mark.parametrize("module", ["bench.cpu", "bench.gpu", "bench.load"])
def test_entry_points_import_from_the_installed_package(module):
    assert callable(importlib.import_module(module).main)


def test_every_record_names_its_libraries_from_exporter_versions():
    import exporter
    from bench.gpu import host_facts
    from bench.machine import machine

    found = exporter.versions()
    assert {"torch", "transformers", "sentence-transformers", "onnxruntime", "tokenizers", "emb-provider"} <= set(found)
    assert list(found) == [name for name in exporter.provenance.LIBRARIES if name in found]
    assert machine()["libraries"] == found and host_facts()["libraries"] == found
