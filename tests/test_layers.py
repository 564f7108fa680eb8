"""The shape of the package, read from its source: no import cycle, the server on top, no private reads.

The import graph is built from the AST of every module of `asgi_apim`:

- every ``import`` and ``from … import``, wherever it is written (inside a
  function, a method or a ``try`` as well as at the top): an import moved into a
  function to dodge a cycle is still a cycle;
- except those under ``if TYPE_CHECKING:``, which never run: an annotation may
  name a type of a module above (the cycle check leaves them out; the other two
  checks do not);
- ``importlib.import_module("asgi_apim.x")`` and ``__import__("asgi_apim.x")``
  with a literal name count as imports too;
- importing ``asgi_apim.a.b`` runs ``asgi_apim/a/__init__.py`` first, so it is
  also an import of ``asgi_apim.a`` (unless the importer lives in that package,
  which is then already being imported): a package that re-exports from its
  modules takes part in their cycles, as it does when Python runs it.

`KNOWN` lists the violations that remain in the modules being reworked by the
request-path refactor; each entry goes when its import does. A new violation
anywhere else fails.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "asgi_apim"

# (importer, imported module) pairs allowed for now, all in files of the request-path refactor.
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()
KNOWN_SERVER_IMPORTS: set[tuple[str, str]] = set()
KNOWN_PRIVATE_IMPORTS: set[tuple[str, str, str]] = set()
KNOWN_PRIVATE_ATTRIBUTES: set[tuple[str, str]] = set()
TOP = ("asgi_apim.server", "asgi_apim.cli")


@dataclass(frozen=True)
class Import:
    importer: str
    module: str  # the module imported: ``from a import b`` is ``a.b`` when b is a module, else ``a``
    name: str | None  # ``b`` of ``from a import b`` when b is not a module
    line: int
    type_checking: bool

    def __str__(self) -> str:
        what = self.module if self.name is None else f"{self.module}.{self.name}"
        return f"{self.importer} -> {what} ({module_path(self.importer)}:{self.line})"


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


MODULES = module_names()


def module_path(name: str) -> str:
    return str(MODULES[name].relative_to(ROOT))


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def package_of(name: str) -> str:
    return name if is_package(name) else name.rpartition(".")[0]


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                nodes.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return nodes


def _literal_import(node: ast.Call) -> str | None:
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if called in ("import_module", "__import__") and node.args:
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
    return None


def imports_of(importer: str) -> Iterator[Import]:
    tree = ast.parse(MODULES[importer].read_text(encoding="utf-8"))
    hidden = _type_checking_nodes(tree)
    package = package_of(importer)
    for node in ast.walk(tree):
        tc = id(node) in hidden
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(importer, alias.name, None, node.lineno, tc)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                full = f"{source}.{alias.name}"
                if full in MODULES:
                    yield Import(importer, full, None, node.lineno, tc)
                else:
                    yield Import(importer, source, alias.name, node.lineno, tc)
        elif isinstance(node, ast.Call) and (literal := _literal_import(node)):
            yield Import(importer, literal, None, node.lineno, tc)


IMPORTS = [i for name in MODULES for i in imports_of(name) if i.module.split(".")[0] == "asgi_apim"]


def edges(imp: Import) -> Iterator[str]:
    """The modules an import runs: the module, and each enclosing package not already being imported."""
    yield imp.module
    parts = imp.module.split(".")
    for n in range(2, len(parts)):
        pkg = ".".join(parts[:n])
        if not (imp.importer == pkg or imp.importer.startswith(pkg + ".")):
            yield pkg


def graph(known: set[tuple[str, str]]) -> dict[str, dict[str, Import]]:
    g: dict[str, dict[str, Import]] = {name: {} for name in MODULES}
    for imp in IMPORTS:
        if imp.type_checking or (imp.importer, imp.module) in known:
            continue
        for target in edges(imp):
            if target != imp.importer and target in MODULES:
                g[imp.importer].setdefault(target, imp)
    return g


def cycles(g: dict[str, dict[str, Import]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def describe(component: list[str], g: dict[str, dict[str, Import]]) -> str:
    inside = set(component)
    lines = [
        f"{v} -> {w}"
        + ("" if w == imp.module else f" (its __init__, run by importing {imp.module})")
        + f" at {module_path(v)}:{imp.line}"
        for v in component
        for w, imp in sorted(g[v].items())
        if w in inside
    ]
    return "cycle between " + ", ".join(component) + ":\n    " + "\n    ".join(lines)


def is_top(name: str) -> bool:
    return any(name == top or name.startswith(top + ".") for top in TOP)


def test_the_graph_sees_imports_inside_functions_and_package_inits() -> None:
    g = graph(set())
    assert "asgi_apim.auth.jwt" in g["asgi_apim.auth.application"]
    assert "asgi_apim.throttling" in g["asgi_apim._stack"]
    assert "asgi_apim.secrets" in g["asgi_apim.config"]  # config imports secrets.keys: secrets/__init__ runs
    assert "asgi_apim.secrets" not in g["asgi_apim.secrets.rotate"]  # its own package is already being imported
    assert "asgi_apim.server.run" in g["asgi_apim.cli"]
    assert not any(imp.type_checking for imp in g["asgi_apim.throttling.middleware"].values())


def test_a_cycle_is_found_and_named() -> None:
    g = graph(set())
    g["asgi_apim.errors"]["asgi_apim.config"] = Import("asgi_apim.errors", "asgi_apim.config", None, 1, False)
    found = [c for c in cycles(g) if "asgi_apim.errors" in c]
    assert found and "asgi_apim.config" in found[0]
    assert "asgi_apim.errors -> asgi_apim.config at asgi_apim/errors.py:1" in describe(found[0], g)


def test_no_import_cycle() -> None:
    g = graph(KNOWN_CYCLE_EDGES)
    assert not (found := cycles(g)), "\n".join(describe(c, g) for c in found)


def test_known_cycle_edges_are_still_there() -> None:
    present = {(i.importer, i.module) for i in IMPORTS}
    assert not (gone := KNOWN_CYCLE_EDGES - present), f"remove from KNOWN_CYCLE_EDGES: {sorted(gone)}"
    remaining = graph(KNOWN_CYCLE_EDGES)
    still = {(a, b) for a, b in KNOWN_CYCLE_EDGES if a in cycles_with_edge(remaining, a, b)}
    assert still == KNOWN_CYCLE_EDGES, f"no longer part of a cycle, remove: {sorted(KNOWN_CYCLE_EDGES - still)}"


def cycles_with_edge(g: dict[str, dict[str, Import]], a: str, b: str) -> set[str]:
    """``{a}`` if adding the edge a -> b to ``g`` closes a cycle (b reaches a), else empty."""
    seen, todo = {b}, [b]
    while todo:
        for w in g[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return {a} if a in seen else set()


def test_nothing_below_imports_the_server_or_the_cli() -> None:
    wrong = {(i.importer, i.module): i for i in IMPORTS if is_top(i.module) and not is_top(i.importer)}
    new = [str(i) for key, i in sorted(wrong.items()) if key not in KNOWN_SERVER_IMPORTS]
    assert not new, "only asgi_apim.server and asgi_apim.cli may import them:\n" + "\n".join(new)
    assert not (gone := KNOWN_SERVER_IMPORTS - set(wrong)), f"remove from KNOWN_SERVER_IMPORTS: {sorted(gone)}"


def test_no_private_name_imported_from_another_package() -> None:
    wrong = {
        (i.importer, i.module, i.name): i
        for i in IMPORTS
        if i.name is not None
        and i.name.startswith("_")
        and not i.name.startswith("__")
        and i.module in MODULES
        and package_of(i.module) != package_of(i.importer)
    }
    new = [str(i) for key, i in sorted(wrong.items()) if key not in KNOWN_PRIVATE_IMPORTS]
    assert not new, "a private name is private to its package:\n" + "\n".join(new)
    assert not (gone := KNOWN_PRIVATE_IMPORTS - set(wrong)), f"remove from KNOWN_PRIVATE_IMPORTS: {sorted(gone)}"


def test_no_private_attribute_of_a_module_of_another_package() -> None:
    """``resolver._HINT`` after ``from asgi_apim.certs import resolver`` is the same read as importing it."""
    wrong = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {}
        for imp in imports_of(name):
            if imp.name is None and imp.module in MODULES:
                aliases[imp.module.rpartition(".")[2]] = imp.module
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname and alias.name in MODULES:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and package_of(aliases[node.value.id]) != package_of(name)
            ):
                wrong.append(f"{name} reads {aliases[node.value.id]}.{node.attr} ({module_path(name)}:{node.lineno})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    "name", ["asgi_apim", "asgi_apim.secrets", "asgi_apim.throttling.tiers", "asgi_apim.throttling.engine"]
)
def test_every_public_name_resolves(name: str) -> None:
    """The package root's lazy names, and what moved to a lower module, are still there."""
    module = importlib.import_module(name)
    assert [attr for attr in module.__all__ if getattr(module, attr, None) is None] == []


def private_names_defined(tree: ast.Module) -> set[str]:
    """The private names a module gives its objects: ``self._x = …``, ``def _x``, ``_x = …``, ``__slots__``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
        ):
            if isinstance(node.value, ast.Tuple | ast.List):
                names.update(
                    e.value for e in node.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
                )
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_no_private_attribute_of_another_package_is_read() -> None:
    """``obj._x`` where ``_x`` is a private name only another package defines.

    Without types this is a heuristic: a name that the reader's package also
    defines (``_current`` is a method in auth.jwt and an attribute in
    certs.truststore) passes unseen; a name reported is certainly another's.
    """
    trees = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}
    defined: dict[str, set[str]] = {}
    for name, tree in trees.items():
        defined.setdefault(package_of(name), set()).update(private_names_defined(tree))
    wrong = {}
    for name, tree in trees.items():
        own = defined[package_of(name)]
        other_libraries = {  # ``argparse._SubParsersAction`` is argparse's business
            (alias.asname or alias.name).split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
            if alias.name.split(".")[0] != "asgi_apim"
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls", *other_libraries))
                and node.attr not in own
            ):
                owners = sorted(pkg for pkg, names in defined.items() if node.attr in names)
                if owners:
                    where = f"{name} reads {ast.unparse(node)}, private to {', '.join(owners)}"
                    wrong.setdefault((name, node.attr), f"{where} ({module_path(name)}:{node.lineno})")
    new = [text for key, text in sorted(wrong.items()) if key not in KNOWN_PRIVATE_ATTRIBUTES]
    assert not new, "\n".join(new)
    gone = KNOWN_PRIVATE_ATTRIBUTES - set(wrong)
    assert not gone, f"remove from KNOWN_PRIVATE_ATTRIBUTES: {sorted(gone)}"
