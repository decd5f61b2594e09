"""Code fingerprints that only the code's meaning moves: comments, docstrings and formatting do
not count (docs/workloads.md, "Fingerprints and hashes").

Source is parsed with :mod:`ast`, every docstring and other bare string statement is dropped, and
the tree is written out without line numbers (:func:`normalized`). :func:`definitions` picks out
of a module only what a set of classes needs: the classes and, transitively, the module-level
functions, classes and constants they name, in that module or in modules they import from, so
that a test added next to a workload in its file leaves the workload's fingerprint alone.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import sys
import textwrap
import types
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any


def normalized(source: str) -> str:
    """A canonical text of ``source``'s syntax tree: no comments, docstrings, line numbers or
    formatting. Empty fields are left out, so the text is the same on every Python >= 3.11
    (``ast.dump`` shows them before 3.13 and not after)."""
    return _dump(_without_docstrings(ast.parse(source)))


def digest(pieces: Mapping[str, str]) -> str:
    """sha256 (16 hex) over ``pieces`` (name -> normalised code), in name order."""
    h = hashlib.sha256()
    for key in sorted(pieces):
        h.update(f"{key}\0{pieces[key]}\0".encode())
    return h.hexdigest()[:16]


def source_files(root: Path, names: Iterable[str]) -> dict[str, str]:
    """``{path relative to root: normalised source}`` for each ``.py`` file of ``names`` (files
    or folders under ``root``)."""
    out = {}
    for name in names:
        target = root / name
        for path in sorted(target.rglob("*.py")) if target.is_dir() else [target]:
            out[path.relative_to(root).as_posix()] = normalized(path.read_text())
    return out


def module_files(module: str) -> dict[str, str]:
    """Normalised source of a module (``{"name.py": ...}``) or of every file of a package
    (``{"package/sub/name.py": ...}``): keys that do not depend on where the code lives."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise ValueError(f"code module {module!r}: no Python source found")
    origin = Path(spec.origin).resolve()
    if origin.name == "__init__.py":
        return source_files(origin.parent.parent, [origin.parent.name])
    return {origin.name: normalized(origin.read_text())}


def definitions(classes: Iterable[type], follow: Callable[[str], bool]) -> dict[str, str]:
    """The code ``classes`` run: each class's definition and, transitively, every module-level
    definition (function, class, assignment) a collected definition names, looked up in its own
    module; a name imported from a module for which ``follow(module name)`` holds is looked up
    there (a name imported from elsewhere, such as torch, is not code of ours). Keys are the
    definitions' names (``Net``, ``Net.forward`` for a method of a class made at run time),
    values their normalised source."""
    found: dict[tuple[str, str], tuple[str, str]] = {}  # (module, name) -> (key, code)
    queue: list[tuple[str, str]] = []
    modules: dict[str, _Module] = {}

    def module_of(name: str) -> _Module:
        if name not in modules:
            modules[name] = _Module(name)
        return modules[name]

    def need(module: str, tree: ast.AST) -> None:
        queue.extend((module, name) for name in _loaded_names(tree))

    for cls in classes:
        module = module_of(cls.__module__)
        if "." not in cls.__qualname__ and cls.__qualname__ in module.bindings:
            queue.append((cls.__module__, cls.__qualname__))
            continue
        for key, tree, where in _runtime_class(cls):  # nested, local, or made with type()
            found[(where, key)] = (key, _dump(_without_docstrings(tree)))
            need(where, tree)
    while queue:
        module_name, name = queue.pop()
        if (module_name, name) in found:
            continue
        found[(module_name, name)] = ("", "")  # visited; no code of its own yet
        module = module_of(module_name)
        statement = module.bindings.get(name)
        if statement is None:  # a builtin, a local name, or a star import
            continue
        target = _imported(statement, name, module)
        if target is None:
            found[(module_name, name)] = (name, _dump(_without_docstrings(statement)))
            need(module_name, statement)
        elif target[1] is None:  # a whole module, used as ``module.attr``
            if follow(target[0]):
                queue.extend((target[0], n) for n in module_of(target[0]).bindings)
        elif follow(target[0]):
            queue.append((target[0], target[1]))
    return _unique(code for code in found.values() if code[0])


def _unique(pieces: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``{key: code}``; equal keys from different modules (two ``mse``) become ``mse``,
    ``mse (2)``, ordered by their code, so the names do not depend on where the code lives."""
    out: dict[str, str] = {}
    for key, code in sorted(set(pieces)):
        n, unique = 1, key
        while unique in out:
            n += 1
            unique = f"{key} ({n})"
        out[unique] = code
    return out


class _Module:
    """An imported module's module-level bindings (name -> top-level statement), read from its
    source file now (none when it has no Python source)."""

    def __init__(self, name: str) -> None:
        self.module = sys.modules.get(name)
        self.bindings: dict[str, ast.stmt] = {}
        path = getattr(self.module, "__file__", None)
        if not path or not str(path).endswith(".py") or not Path(path).is_file():
            return
        for statement in ast.parse(Path(path).read_text()).body:
            for bound in _bound_names(statement):
                self.bindings.setdefault(bound, statement)


def _bound_names(statement: ast.stmt) -> set[str]:
    """Names a top-level statement binds (also inside ``if``/``try``/``with`` blocks)."""
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {statement.name}
    if isinstance(statement, (ast.Import, ast.ImportFrom)):
        return {
            (a.asname or a.name).partition(".")[0]
            if isinstance(statement, ast.Import)
            # ``from m import x as y`` binds y
            else a.asname or a.name
            for a in statement.names
            if a.name != "*"
        }
    if isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    names: set[str] = set()
    for child in ast.iter_child_nodes(statement):
        if isinstance(child, ast.stmt):
            names |= _bound_names(child)
        elif isinstance(child, ast.ExceptHandler):
            for inner in child.body:
                names |= _bound_names(inner)
    return names


def _imported(statement: ast.stmt, name: str, module: _Module) -> tuple[str, str | None] | None:
    """Where an imported ``name`` comes from: ``(module, name there)``, ``(module, None)`` for a
    module bound to ``name``; ``None`` when ``statement`` defines ``name`` itself."""
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return None
    for node in ast.walk(statement):
        if isinstance(node, ast.Import):
            for a in node.names:
                if (a.asname or a.name.partition(".")[0]) == name:
                    return (a.name if a.asname else name), None
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                if (a.asname or a.name) != name:
                    continue
                package = getattr(module.module, "__package__", None) or ""
                source = importlib.util.resolve_name(
                    "." * node.level + (node.module or ""), package
                )
                obj = getattr(sys.modules.get(source), a.name, None)
                if isinstance(obj, types.ModuleType):
                    return obj.__name__, None
                qualname = getattr(obj, "__qualname__", "")
                # a class or function: where it is defined (a re-export is skipped)
                if (inspect.isclass(obj) or inspect.isfunction(obj)) and "<" not in qualname:
                    return obj.__module__, qualname.partition(".")[0]
                return source, a.name
    return None


def _runtime_class(cls: type) -> list[tuple[str, ast.AST, str]]:
    """``(key, tree, module)`` for a class not at the top level of its module: its source when
    ``inspect`` finds it, else (a class made with ``type()``) its methods' source and its other
    attributes' values."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
        return [(cls.__qualname__, ast.parse(source), cls.__module__)]
    except (OSError, TypeError, SyntaxError):
        pass
    out: list[tuple[str, ast.AST, str]] = []
    for attr, value in sorted(vars(cls).items()):
        if attr.startswith("__") or attr in ADVICE:
            continue
        if not _is_plain(value) and not inspect.isfunction(value):
            continue
        key = f"{cls.__qualname__}.{attr}"
        if not inspect.isfunction(value):
            out.append((key, ast.parse(f"{attr} = {value!r}"), cls.__module__))
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(value)))
        except (OSError, TypeError, SyntaxError):
            continue
        out.append((key, tree, value.__module__))
    return out


def _is_plain(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, tuple, frozenset, type(None)))


def _loaded_names(tree: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


#: Class attributes that are advice for people, not code that computes: a workload's
#: ``mitigations`` (what the report recommends) change no number.
ADVICE = frozenset({"mitigations"})


def _without_docstrings(tree: ast.AST) -> ast.AST:
    """``tree`` (changed in place) without bare string statements: docstrings, and the strings
    some code puts under an attribute (they compute nothing), nor a class body's assignment of
    an :data:`ADVICE` attribute. A body left empty gets ``pass``."""
    for node in ast.walk(tree):
        in_class = isinstance(node, ast.ClassDef)
        for field, value in ast.iter_fields(node):
            if not (isinstance(value, list) and value and isinstance(value[0], ast.stmt)):
                continue
            kept = [
                s
                for s in value
                if not _is_bare_string(s) and not (in_class and field == "body" and _is_advice(s))
            ]
            setattr(node, field, kept or [ast.Pass()])
    return tree


def _is_advice(statement: ast.stmt) -> bool:
    if isinstance(statement, ast.Assign):
        targets = statement.targets
    elif isinstance(statement, ast.AnnAssign):
        targets = [statement.target]
    else:
        return False
    return all(isinstance(t, ast.Name) and t.id in ADVICE for t in targets)


def _is_bare_string(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def _dump(node: Any) -> str:
    if isinstance(node, ast.AST):
        fields = (
            f"{name}={_dump(value)}"
            for name, value in ast.iter_fields(node)
            if value is not None and value != []
        )
        return f"{type(node).__name__}({', '.join(fields)})"
    if isinstance(node, list):
        return f"[{', '.join(_dump(v) for v in node)}]"
    return repr(node)
