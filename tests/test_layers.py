"""The package layout (docs/architecture.md) holds: each package imports only the packages it may,
nothing but dropbn/train imports torch at module level, no import circle, small modules with
distinct names. Read from the source with `ast`; nothing is imported."""
from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "dropbn"
MAX_LINES = 400
# package -> the dropbn packages its modules may import (besides their own); docs/architecture.md
ALLOWED = {
    "base": set(),
    "stats": set(),
    "record": {"base"},
    "train": {"base", "record"},
    "config": {"base", "record", "train"},  # train only inside functions: its registries, to validate names
    "study": {"base", "stats", "record", "config"},
    "report": {"base", "stats", "record", "config", "study"},  # config: claims files, their registration
    "commands": {"base", "stats", "record", "train", "config", "study", "report"},
}
TOP_MODULES = {"__init__", "cli", "callbacks"}  # the only modules at the top of dropbn/
LAZY_ONLY = {("config", "train")}  # (package, imported package): allowed inside functions only
TORCH_FREE = {"base", "stats", "record", "config", "study", "report"}  # at module level


def modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def imports(name: str, path: Path):
    """[(imported module, at module level)] of one module, relative imports resolved."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top = {id(n) for n in tree.body}
    top |= {id(c) for n in tree.body if isinstance(n, (ast.If, ast.Try)) for c in ast.walk(n)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            for a in node.names:  # `from pkg import module` imports the module
                out.append((f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod, id(node) in top))
    return out


MODULES = modules()


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else "top"


def test_each_package_imports_only_the_packages_below_it():
    wrong = []
    for name, path in MODULES.items():
        here = layer(name)
        for mod, at_top in imports(name, path):
            if not mod.startswith("dropbn.") or mod == "dropbn":
                continue
            there = layer(mod)
            if here == "top" or there == here:
                continue
            if there == "top" or there not in ALLOWED[here] or ((here, there) in LAZY_ONLY and at_top):
                wrong.append(f"{name} imports {mod}")
    assert not wrong, wrong


def test_only_train_and_the_commands_import_torch_at_module_level():
    wrong = [f"{name} imports {mod}" for name, path in MODULES.items() if layer(name) in TORCH_FREE
             for mod, at_top in imports(name, path)
             if mod.split(".")[0] in ("torch", "torchvision") or (at_top and layer(mod) == "train"
                                                                  and mod.startswith("dropbn."))]
    assert not wrong, wrong


def test_no_import_circle_between_modules():
    graph = {name: {m for m, at_top in imports(name, path) if at_top and m in MODULES and m != name}
             for name, path in MODULES.items()}
    state, cycle = {}, []

    def visit(n, stack):
        state[n] = "open"
        for m in sorted(graph[n]):
            if state.get(m) == "open" and not cycle:
                cycle.extend(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m, stack + [m])
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycle, " -> ".join(cycle)


def test_small_modules_with_distinct_names_and_few_at_the_top():
    lines = {str(p.relative_to(PKG.parent)): len(p.read_text().splitlines()) for p in MODULES.values()}
    long = {p: n for p, n in lines.items() if n > MAX_LINES}
    assert not long, long
    names = Counter(p.name for p in MODULES.values() if p.name != "__init__.py")
    assert not [n for n, c in names.items() if c > 1], names.most_common(3)
    top = {p.stem for p in PKG.glob("*.py")}
    assert top == TOP_MODULES
    assert {p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()} == set(ALLOWED)
