"""Layering rules for ``preempt``, checked statically by walking every import statement with ``ast``.

Layers (lowest = 0); a module's layer is that of its top-level name under ``preempt``
(``preempt.models.train`` -> ``models``, the package ``__init__`` -> ``preempt``):

    0 base     preempt (the __init__), registry, artifacts, paths, runtime, errors, compat
    1 methods  data, models, defenses, attacks, reversions, metrics, stats, claims, published, papers, plots
    2 schema   config
    3 CLI      __main__, cli, stages, dag, dvcfile, snapshots, prefetch, catalog, slurm, coverage

Rules: no cycle between modules, no cycle between top-level names, no import from a lower layer
to a higher one, and no preempt-internal import hidden in a function body or under
``if TYPE_CHECKING:``. A module whose top-level name is not in :data:`LAYERS` fails until it is
added there. Only import *statements* are seen: ``importlib.import_module`` calls are not.

Run as a script for a summary of any source tree::

    python tests/test_layers.py [SRC_DIR]      # default: this checkout's src/preempt
"""

from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "preempt"

LAYER_NAMES = ("base", "methods", "schema", "CLI and stages")
LAYERS: dict[str, int] = {
    **dict.fromkeys(("preempt", "registry", "artifacts", "paths", "runtime", "errors", "compat"), 0),
    **dict.fromkeys(("data", "models", "defenses", "attacks", "reversions", "metrics", "stats", "claims", "published", "papers", "plots", "shrink"), 1),
    "config": 2,
    **dict.fromkeys(("__main__", "cli", "stages", "dag", "dvcfile", "snapshots", "prefetch", "catalog", "slurm", "recovery", "warm", "coverage"), 3),
}

MODULE, FUNCTION, TYPE_CHECKING = "module", "function", "TYPE_CHECKING"


# --------------------------------------------------------------------------------------------
# analysis helper
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Import:
    """One imported name of one import statement."""

    src: str      # importing module, e.g. "preempt.stages.attack"
    dst: str      # imported module: absolute, a submodule when `from X import sub` names one
    file: Path
    line: int
    where: str    # MODULE, FUNCTION (in a def/lambda body) or TYPE_CHECKING (under that if)
    internal: bool

    def at(self, root: Path) -> str:
        try:
            rel = self.file.relative_to(root.parent)
        except ValueError:
            rel = self.file
        return f"{rel}:{self.line}"


@dataclass
class Analysis:
    root: Path
    package: str
    modules: dict[str, Path] = field(default_factory=dict)
    imports: list[Import] = field(default_factory=list)
    syntax_errors: list[str] = field(default_factory=list)
    type_ignores: int = 0
    total_lines: int = 0

    def __repr__(self) -> str:
        return f"Analysis({self.root}, {len(self.modules)} modules, {len(self.imports)} imports)"

    # ---- names -------------------------------------------------------------------------
    def top(self, module: str) -> str:
        """Top-level name under the package: ``preempt.models.train`` -> ``models``."""
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else parts[0]

    def layer(self, module: str) -> int | None:
        return LAYERS.get(self.top(module))

    def unknown_modules(self) -> list[str]:
        """Modules (files, or internal import targets) whose top-level name has no layer."""
        names = set(self.modules) | {i.dst for i in self.internal()}
        return sorted(m for m in names if self.layer(m) is None)

    def unresolved(self) -> list[Import]:
        """Internal imports naming a module that has no file in the tree."""
        return [i for i in self.internal() if i.dst not in self.modules]

    # ---- edges -------------------------------------------------------------------------
    def internal(self) -> list[Import]:
        return [i for i in self.imports if i.internal and i.src != i.dst]

    def hidden(self) -> list[Import]:
        return [i for i in self.internal() if i.where != MODULE]

    def module_graph(self) -> dict[str, set[str]]:
        g: dict[str, set[str]] = defaultdict(set)
        for i in self.internal():
            g[i.src].add(i.dst)
        return g

    def package_graph(self) -> dict[str, set[str]]:
        g: dict[str, set[str]] = defaultdict(set)
        for i in self.internal():
            a, b = self.top(i.src), self.top(i.dst)
            if a != b:
                g[a].add(b)
        return g

    def evidence(self, a: str, b: str, *, packages: bool = False) -> str:
        """file:line of the first import that makes the edge a -> b."""
        for i in self.internal():
            s, d = (self.top(i.src), self.top(i.dst)) if packages else (i.src, i.dst)
            if (s, d) == (a, b):
                return f"{i.src} -> {i.dst} at {i.at(self.root)}" if packages else i.at(self.root)
        return "?"

    def module_cycles(self) -> list[list[str]]:
        return cycles(self.module_graph())

    def package_cycles(self) -> list[list[str]]:
        return cycles(self.package_graph())

    def cycle_groups(self, *, packages: bool = False) -> list[list[str]]:
        """The strongly connected groups (more than one member) the cycles live in."""
        g = self.package_graph() if packages else self.module_graph()
        return sorted((c for c in _sccs(g) if len(c) > 1), key=lambda c: (-len(c), c))

    def describe_cycles(self, *, packages: bool = False) -> list[str]:
        cyc = self.package_cycles() if packages else self.module_cycles()
        groups = self.cycle_groups(packages=packages)
        if not cyc:
            return []
        return [f"  (all within {len(groups)} strongly connected group(s): "
                + "; ".join("{" + ", ".join(g) + "}" for g in groups) + ")",
                *(self.describe_cycle(c, packages=packages) for c in cyc)]

    def upward(self) -> list[Import]:
        out = []
        for i in self.internal():
            a, b = self.layer(i.src), self.layer(i.dst)
            if a is not None and b is not None and b > a:
                out.append(i)
        return out

    # ---- formatting --------------------------------------------------------------------
    def describe_cycle(self, cyc: list[str], *, packages: bool = False) -> str:
        path = " -> ".join(cyc + cyc[:1])
        steps = [f"      {a} -> {b}: {self.evidence(a, b, packages=packages)}"
                 for a, b in zip(cyc, cyc[1:] + cyc[:1])]
        return "\n".join([f"  {path}", *steps])

    def describe_import(self, i: Import) -> str:
        la, lb = self.layer(i.src), self.layer(i.dst)
        layers = ""
        if la is not None and lb is not None:
            layers = f"  [{la} {LAYER_NAMES[la]} -> {lb} {LAYER_NAMES[lb]}]"
        return f"  {i.at(self.root)}: {i.src} -> {i.dst} ({i.where}){layers}"


def _module_name(path: Path, root: Path, package: str) -> str:
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, where: str = MODULE):
    """Yield (import node, where) for every import statement in node, with its context."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node, where
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        for child in ast.iter_child_nodes(node):
            yield from _walk(child, FUNCTION)
    elif isinstance(node, ast.If) and where == MODULE and _is_type_checking(node.test):
        for stmt in node.body:
            yield from _walk(stmt, TYPE_CHECKING)
        for stmt in node.orelse:
            yield from _walk(stmt, where)
    else:
        for child in ast.iter_child_nodes(node):
            yield from _walk(child, where)


def _count_type_ignores(text: str) -> int:
    n = 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT and re.search(r"#\s*type:\s*ignore", tok.string):
                n += 1
    except (tokenize.TokenError, SyntaxError):
        n = len(re.findall(r"#\s*type:\s*ignore", text))
    return n


def analyse(src_dir: Path | str = SRC) -> Analysis:
    """Walk every .py file under ``src_dir`` (the package directory, e.g. ``src/preempt``)."""
    root = Path(src_dir).resolve()
    package = root.name
    a = Analysis(root=root, package=package)
    files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    for p in files:
        a.modules[_module_name(p, root, package)] = p

    for p in files:
        src = _module_name(p, root, package)
        text = p.read_text(encoding="utf-8", errors="replace")
        a.total_lines += len(text.splitlines())
        a.type_ignores += _count_type_ignores(text)
        try:
            tree = ast.parse(text, filename=str(p))
        except SyntaxError as e:
            a.syntax_errors.append(f"{p}:{e.lineno}: {e.msg}")
            continue
        # the package a relative import is resolved against
        pkg = src.split(".") if p.name == "__init__.py" else src.split(".")[:-1]
        for node, where in _walk(tree, MODULE):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    up = node.level - 1
                    if up > len(pkg) - 1:  # beyond the top package: leave it outside the tree
                        base = "." * node.level + (node.module or "")
                    else:
                        base = ".".join(pkg[: len(pkg) - up] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = []
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if alias.name != "*" and sub in a.modules else base)
            for t in dict.fromkeys(targets):
                internal = t == package or t.startswith(package + ".")
                a.imports.append(Import(src, t, p, node.lineno, where, internal))
    return a


def _sccs(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (iterative Tarjan)."""
    nodes = sorted(set(graph) | {d for ds in graph.values() for d in ds})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    out.append(sorted(comp))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """For every node on a cycle, the shortest cycle through it (deduplicated, rotated so the
    smallest name comes first). Self-loops are not counted. Empty when the graph is acyclic."""
    found: dict[tuple[str, ...], None] = {}
    for comp in _sccs(graph):
        if len(comp) < 2:
            continue
        members = set(comp)
        for s in comp:
            prev: dict[str, str] = {}
            q = deque([s])
            seen = {s}
            hit = None
            while q and hit is None:
                v = q.popleft()
                for w in sorted(graph.get(v, ())):
                    if w not in members:
                        continue
                    if w == s:
                        hit = v
                        break
                    if w not in seen:
                        seen.add(w)
                        prev[w] = v
                        q.append(w)
            path = [hit]
            while path[-1] != s:
                path.append(prev[path[-1]])
            cyc = path[::-1]
            k = cyc.index(min(cyc))
            found[tuple(cyc[k:] + cyc[:k])] = None
    return sorted((list(c) for c in found), key=lambda c: (len(c), c))


def picture(a: Analysis) -> str:
    internal = a.internal()
    edges = {(i.src, i.dst) for i in internal}
    fn_internal = [i for i in internal if i.where == FUNCTION]
    tc_internal = [i for i in internal if i.where == TYPE_CHECKING]
    fn_external = [i for i in a.imports if not i.internal and i.where == FUNCTION]
    mod_cycles, pkg_cycles, up = a.module_cycles(), a.package_cycles(), a.upward()
    lines = [
        f"source tree: {a.root}",
        f"modules: {len(a.modules)}",
        f"preempt-internal import edges: {len(edges)} (module pairs; "
        f"{len(internal)} imported names in {len({(i.file, i.line) for i in internal})} statements)",
        f"module-level cycles: {len(mod_cycles)}",
        *a.describe_cycles(),
        f"package-level cycles: {len(pkg_cycles)}",
        *a.describe_cycles(packages=True),
        f"upward imports: {len(up)}",
        *(a.describe_import(i) for i in up),
        f"preempt-internal imports inside functions: {len(fn_internal)}",
        *(a.describe_import(i) for i in fn_internal),
        f"preempt-internal imports under TYPE_CHECKING: {len(tc_internal)}",
        *(a.describe_import(i) for i in tc_internal),
        f"third-party/stdlib imports inside functions: {len(fn_external)}",
        f"'# type: ignore' comments: {a.type_ignores}",
        f"total lines of .py: {a.total_lines}",
    ]
    unknown = a.unknown_modules()
    if unknown:
        lines.append(f"modules with no layer (add their top-level name to LAYERS): {len(unknown)}")
        lines += [f"  {m}" for m in unknown]
    unresolved = a.unresolved()
    if unresolved:
        lines.append(f"internal imports of modules with no file: {len(unresolved)}")
        lines += [f"  {i.at(a.root)}: {i.src} -> {i.dst}" for i in unresolved]
    if a.syntax_errors:
        lines.append(f"files that do not parse: {len(a.syntax_errors)}")
        lines += [f"  {e}" for e in a.syntax_errors]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # script use without pytest installed
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="module")
    def analysis() -> Analysis:
        return analyse(SRC)

    def test_sources_parse(analysis: Analysis) -> None:
        assert not analysis.syntax_errors, "files that do not parse:\n" + "\n".join(analysis.syntax_errors)

    def test_walker_finds_edges(analysis: Analysis) -> None:
        assert len(analysis.modules) > 20, sorted(analysis.modules)
        edges = {(i.src, i.dst) for i in analysis.internal()}
        assert len(edges) > 20, edges
        attack = {d for s, d in edges if s == "preempt.stages.attack"}
        assert any(d == "preempt.attacks" or d.startswith("preempt.attacks.") for d in attack), (
            f"walker found no import of preempt.attacks in preempt.stages.attack; it found {sorted(attack)}")

    def test_every_module_has_a_layer(analysis: Analysis) -> None:
        unknown = analysis.unknown_modules()
        assert not unknown, (
            "modules whose top-level name has no layer: add the name to LAYERS in "
            "tests/test_layers.py (decide its layer):\n" + "\n".join(f"  {m}" for m in unknown))

    def test_no_module_cycles(analysis: Analysis) -> None:
        cyc = analysis.module_cycles()
        assert not cyc, f"{len(cyc)} import cycle(s) between modules:\n" + "\n".join(
            analysis.describe_cycles())

    def test_no_package_cycles(analysis: Analysis) -> None:
        cyc = analysis.package_cycles()
        assert not cyc, f"{len(cyc)} import cycle(s) between top-level names:\n" + "\n".join(
            analysis.describe_cycles(packages=True))

    def test_no_upward_imports(analysis: Analysis) -> None:
        unknown = analysis.unknown_modules()
        up = analysis.upward()
        msg = []
        if unknown:
            msg.append("modules with no layer (add their top-level name to LAYERS in "
                       "tests/test_layers.py): " + ", ".join(unknown))
        if up:
            msg.append(f"{len(up)} upward import(s) (lower layer importing a higher one):")
            msg += [analysis.describe_import(i) for i in up]
        assert not msg, "\n".join(msg)

    def test_no_hidden_internal_imports(analysis: Analysis) -> None:
        hidden = analysis.hidden()
        assert not hidden, (
            f"{len(hidden)} preempt-internal import(s) inside a function body or under "
            "TYPE_CHECKING (move them to module level):\n"
            + "\n".join(analysis.describe_import(i) for i in hidden))

    def test_helper_reports_a_synthetic_tree(tmp_path: Path) -> None:
        pkg = tmp_path / "preempt"
        files = {
            "__init__.py": "from . import registry\n",
            # base importing schema: upward (0 -> 2), and registry <-> config is a cycle
            "registry.py": "import os\nfrom .config import Config\n",
            "config.py": "from preempt import registry\n",
            "models/__init__.py": "from .train import fit\n",
            # `from .. import errors` is the submodule; the in-function and TYPE_CHECKING
            # imports are hidden; `import json` in a function is a fine third-party lazy import
            "models/train.py": (
                "from typing import TYPE_CHECKING\n"
                "from .. import errors, paths\n"
                "if TYPE_CHECKING:\n"
                "    from ..stages import run\n"
                "def fit():\n"
                "    import json\n"
                "    from preempt.models import zoo\n"
                "    return zoo\n"),
            "models/zoo.py": "x = 1  # type: ignore[misc]\n",
            "errors.py": "",
            "stages/__init__.py": "from ..models import train\n",
            "widgets.py": "from . import errors\n",
        }
        for name, text in files.items():
            (pkg / name).parent.mkdir(parents=True, exist_ok=True)
            (pkg / name).write_text(text)

        a = analyse(pkg)
        edges = {(i.src, i.dst) for i in a.internal()}
        assert ("preempt.registry", "preempt.config") in edges
        assert ("preempt.config", "preempt.registry") in edges   # submodule, not the __init__
        assert ("preempt", "preempt.registry") in edges
        assert ("preempt.models.train", "preempt.errors") in edges
        assert ("preempt.models.train", "preempt") in edges      # paths has no file here
        assert ("preempt.stages", "preempt.models.train") in edges
        assert ("preempt.models", "preempt.models.train") in edges
        # registry <-> config, and stages -> models.train -> stages (under TYPE_CHECKING)
        assert a.module_cycles() == [["preempt.config", "preempt.registry"],
                                     ["preempt.models.train", "preempt.stages"]], a.module_cycles()
        assert any(set(c) == {"config", "registry"} for c in a.package_cycles()), a.package_cycles()
        # stages -> models -> stages (the TYPE_CHECKING import counts)
        assert any(set(c) == {"models", "stages"} for c in a.package_cycles()), a.package_cycles()
        up = {(i.src, i.dst) for i in a.upward()}
        assert ("preempt.registry", "preempt.config") in up
        assert ("preempt.models.train", "preempt.stages") in up
        assert ("preempt.stages", "preempt.models.train") not in up
        hidden = {(i.src, i.dst, i.where, i.line) for i in a.hidden()}
        assert hidden == {("preempt.models.train", "preempt.stages", TYPE_CHECKING, 4),
                          ("preempt.models.train", "preempt.models.zoo", FUNCTION, 7)}
        assert [i.dst for i in a.imports if not i.internal and i.where == FUNCTION] == ["json"]
        assert a.unknown_modules() == ["preempt.widgets"]
        assert a.type_ignores == 1
        text = picture(a)
        assert "upward imports: 2" in text and "add their top-level name to LAYERS" in text

        # and an acyclic, well-layered tree is clean
        clean = tmp_path / "clean" / "preempt"
        (clean / "stages").mkdir(parents=True)
        (clean / "__init__.py").write_text("")
        (clean / "registry.py").write_text("import os\n")
        (clean / "config.py").write_text("from . import registry\n")
        (clean / "stages" / "__init__.py").write_text("from ..config import x\nfrom .. import registry\n")
        c = analyse(clean)
        assert len(c.internal()) == 3
        assert not (c.module_cycles() or c.package_cycles() or c.upward() or c.hidden()
                    or c.unknown_modules())


if __name__ == "__main__":
    print(picture(analyse(Path(sys.argv[1]) if len(sys.argv) > 1 else SRC)))
