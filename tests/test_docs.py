"""The user's documents stay true to the tree: README.md is short, every repository path named
in README.md and docs/ exists, every `ec` command and option they name exists; and the
package's imports have no circle."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import click
import pytest

from ec.cli import cli

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TOP = ("ec/", "tests/", "benchmarks/", "docs/", "configs/", "julia/", ".ci/")
CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
FENCE = re.compile(r"```(?:bash|sh|console)?\n(.*?)```", re.S)


def _doc_ids():
    return [str(p.relative_to(REPO)) for p in DOCS]


def test_readme_is_at_most_200_lines():
    n = len((REPO / "README.md").read_text().splitlines())
    assert n <= 200, f"README.md has {n} lines; measurements and details belong in docs/"


def _paths(text: str, doc: Path) -> set[str]:
    found = set()
    for span in CODE.findall(text):
        for word in span.split():
            word = word.strip("(),;:'\"")
            if word.startswith(TOP) or word in ("README.md", "pyproject.toml"):
                found.add(word.split("::")[0].rstrip("."))
    for link in LINK.findall(text):
        if "://" not in link and not link.startswith("mailto:"):
            target = (doc.parent / link).resolve()
            found.add(str(target.relative_to(REPO)) if target.is_relative_to(REPO) else link)
    return found


@pytest.mark.parametrize("doc", DOCS, ids=_doc_ids())
def test_every_repository_path_named_exists(doc):
    missing = []
    for path in sorted(_paths(doc.read_text(), doc)):
        if path.startswith("runs/") or any(ch in path for ch in "*<>{}…"):
            continue  # run directories are made by the commands; patterns are not paths
        if not (REPO / path).exists():
            missing.append(path)
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


def _commands(text: str) -> list[list[str]]:
    """Every `ec ...` command line in code spans and shell blocks."""
    lines = [line for block in FENCE.findall(text) for line in block.splitlines()]
    lines += CODE.findall(text)
    out = []
    for line in lines:
        for part in re.split(r"&&|\||;", line.split("#")[0]):
            part = part.strip()
            if part.startswith("ec "):
                try:
                    out.append(shlex.split(part)[1:])
                except ValueError:
                    out.append(part.split()[1:])
    return out


def _resolve(words: list[str]) -> tuple[click.Command, list[str]] | None:
    cmd, rest = cli, list(words)
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        if rest[0] not in cmd.commands:
            return None
        cmd, rest = cmd.commands[rest[0]], rest[1:]
    return cmd, rest


@pytest.mark.parametrize("doc", DOCS, ids=_doc_ids())
def test_every_ec_command_and_option_named_exists(doc):
    problems = []
    for words in _commands(doc.read_text()):
        if not words or words[0] in ("COMMAND", "SUBCOMMAND") or words[0].startswith("-"):
            continue
        found = _resolve(words)
        if found is None:
            problems.append(f"no command: ec {' '.join(words)}")
            continue
        cmd, rest = found
        options = {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}
        for word in rest:
            name = word.split("=")[0]
            if name.startswith("--") and name not in options:
                problems.append(f"ec {' '.join(words)}: no option {name}")
    assert not problems, f"{doc.name}:\n" + "\n".join(problems)


def _module_imports(path: Path, module: str) -> set[str]:
    """Modules of the `ec` package imported anywhere in the file: an import inside a function
    is still a dependency (a lazy import must not hide a circle)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("ec"):
                out.add(target)
                out |= {f"{target}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names if alias.name.startswith("ec")}
    return out


def test_no_import_circle_between_modules():
    """Data flows one way (teacher -> queries -> students -> clusters -> reconstruction ->
    fine-tune -> metrics -> run directory): no module depends on itself through others."""
    modules = {}
    for path in (REPO / "ec").rglob("*.py"):
        rel = path.relative_to(REPO).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = path
    graph = {name: {m for m in _module_imports(path, name) if m in modules and m != name}
             for name, path in modules.items()}
    # A package's __init__ re-exporting its children is not a dependency of the children on it.
    for name in graph:
        graph[name] = {m for m in graph[name] if not (name.startswith(m + ".") and (REPO / m.replace(".", "/")).is_dir())}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
