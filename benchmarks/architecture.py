"""The floor plan of qbench/ in figures (issue 30): what the redesign must bring to its targets.

    python benchmarks/architecture.py [--root qbench] [--json]

Read from the source with `ast` (nothing is imported but the plugin registry, to know which
names are plugin names):

- import cycles: strongly connected groups of modules in the graph of every `import`, at module
  level or inside a function (a lazy import still ties the two modules' designs together);
- modules over 500 lines, functions over 80 lines (a parser table is no exception here: it is
  listed, and judged by a reader);
- format comparisons outside `qbench/formats/`: `fmt == "onnx"`, `format in ("tflite", ...)`
  and the like — the branches a new artifact format has to edit;
- plugin names outside their own module: string constants equal to a registered member's name
  (a backend, method, transport ...) in any other module — the central lists a new member has
  to edit. Docstrings are not counted.

Targets (issue 30): 0 cycles, no module over 500 lines, no function over 80, 0 format
comparisons outside formats/, 0 plugin names outside their module.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FORMAT_NAMES = frozenset({"onnx", "tflite", "edgetpu", "torch", "openvino", "pte", "gguf"})
MODULE_LINES, FUNCTION_LINES = 500, 80


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, tuple[Path, ast.Module]]:
    return {module_name(p, root): (p, ast.parse(p.read_text(encoding="utf-8"), str(p)))
            for p in sorted(root.rglob("*.py"))}  # fmt: skip


def _imported(node: ast.AST, here: str, is_package: bool, known: set[str]) -> list[str]:
    """The qbench modules an import statement names (the longest known prefix of each)."""
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = here if is_package else here.rsplit(".", 1)[0]
            for _ in range(node.level - 1):
                package = package.rsplit(".", 1)[0]
            base = f"{package}.{base}" if base else package
        names = [f"{base}.{a.name}" for a in node.names] + [base]
    out = []
    for name in names:
        while name and name not in known:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        if name and name != here:
            out.append(name)
    return out


def import_graph(mods: dict[str, tuple[Path, ast.Module]]) -> dict[str, set[str]]:
    known = set(mods)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, (path, tree) in mods.items():
        package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                graph[name].update(_imported(node, name, package, known))
    # a package's __init__ importing its own children is how packages work, not a cycle
    return {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def long_functions(mods: dict[str, tuple[Path, ast.Module]]) -> list[tuple[str, int]]:
    out = []
    for name, (_, tree) in mods.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > FUNCTION_LINES:
                    out.append((f"{name}:{node.name}", length))
    return sorted(out, key=lambda item: -item[1])


def _format_constants(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in FORMAT_NAMES
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return bool(node.elts) and all(_format_constants(e) for e in node.elts)
    return False


def _names_a_format(node: ast.AST) -> bool:
    text = ast.unparse(node).lower()
    return "fmt" in text or "format" in text


def format_comparisons(mods: dict[str, tuple[Path, ast.Module]]) -> dict[str, int]:
    """Per module outside qbench.formats: comparisons of a format variable with format names."""
    counts: dict[str, int] = defaultdict(int)
    for name, (_, tree) in mods.items():
        if name.startswith("qbench.formats"):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            if any(_format_constants(s) for s in sides) and any(
                _names_a_format(s) for s in sides if not _format_constants(s)
            ):
                counts[name] += 1
    return dict(counts)


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def plugin_members() -> dict[str, str]:
    """Registered member name -> the module that defines it (built-in members only)."""
    sys.path.insert(0, str(REPO))
    from qbench.plugins import load_all

    fam = load_all()
    owners: dict[str, str] = {}
    for family in fam.names:
        registry = fam.by_name(family)
        for name in registry.names():
            owners.setdefault(name, registry.get(name).__module__)
    return owners


def plugin_names_outside(mods: dict[str, tuple[Path, ast.Module]], owners: dict[str, str]
                         ) -> dict[str, list[str]]:  # fmt: skip
    """Per module: the plugin names it spells out as string constants (not its own)."""
    found: dict[str, list[str]] = defaultdict(list)
    for name, (_, tree) in mods.items():
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and id(node) not in skip and node.value in owners
                    and owners[node.value] != name):  # fmt: skip
                found[name].append(node.value)
    return dict(found)


def measure(root: Path) -> dict[str, object]:
    mods = modules(root)
    lines = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, (p, _) in mods.items()}
    graph = import_graph(mods)
    fmt = format_comparisons(mods)
    outside = plugin_names_outside(mods, plugin_members())
    return {
        "modules": len(mods),
        "lines": sum(lines.values()),
        "import_cycles": cycles(graph),
        "modules_over_500_lines": sorted(
            ((m, n) for m, n in lines.items() if n > MODULE_LINES), key=lambda item: -item[1]
        ),
        "functions_over_80_lines": long_functions(mods),
        "format_comparisons_outside_formats": sum(fmt.values()),
        "format_comparisons_by_module": dict(sorted(fmt.items(), key=lambda kv: -kv[1])),
        "plugin_names_outside_their_module": sum(len(v) for v in outside.values()),
        "modules_naming_plugins": len(outside),
        "plugin_names_by_module": {m: sorted(set(v)) for m, v in sorted(outside.items())},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=REPO / "qbench", help="package folder")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures = measure(args.root.resolve())
    if args.json:
        print(json.dumps(figures, indent=1))
        return 0
    print(f"{'figure':<42} {'value':>7}  target")
    print(f"{'modules / lines':<42} {figures['modules']:>7}  ({figures['lines']} lines)")
    rows = [
        ("import cycles", len(figures["import_cycles"])),  # type: ignore[arg-type]
        ("modules over 500 lines", len(figures["modules_over_500_lines"])),  # type: ignore[arg-type]
        ("functions over 80 lines", len(figures["functions_over_80_lines"])),  # type: ignore[arg-type]
        ("format comparisons outside formats/", figures["format_comparisons_outside_formats"]),
        ("plugin names outside their module", figures["plugin_names_outside_their_module"]),
        ("modules naming other plugins", figures["modules_naming_plugins"]),
    ]
    for label, value in rows:
        print(f"{label:<42} {value:>7}  0")
    print("\nimport cycles:")
    for group in figures["import_cycles"]:  # type: ignore[union-attr]
        print("  " + " <-> ".join(group))
    print("\nlongest modules:")
    for m, n in figures["modules_over_500_lines"][:10]:  # type: ignore[index]
        print(f"  {n:>5}  {m}")
    print("\nlongest functions:")
    for f, n in figures["functions_over_80_lines"][:10]:  # type: ignore[index]
        print(f"  {n:>5}  {f}")
    print("\nformat comparisons by module:")
    for m, n in list(figures["format_comparisons_by_module"].items())[:10]:  # type: ignore[union-attr]
        print(f"  {n:>5}  {m}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
