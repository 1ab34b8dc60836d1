"""No import cycles, in any package: `python tools/import_cycles.py [--config pyproject.toml]`
lists every group of modules that import each other, directly or through others, and exits 1 if
there is one (tests/unit/test_import_cycles.py runs it).

Modules, not packages: import-linter's `acyclic_siblings` contract squashes each subpackage
into one node, so a service's `adapters` package (driving adapters that call the application,
driven ones it calls) would count as a cycle with `application`. Imports under TYPE_CHECKING
count: they are the same coupling, only hidden from the interpreter. The packages checked are
import-linter's `root_packages` of the given pyproject.toml; grimp (import-linter's own graph
library) reads the code, nothing is imported.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

import grimp


def root_packages(config: Path) -> list[str]:
    packages: list[str] = tomllib.loads(config.read_text())["tool"]["importlinter"]["root_packages"]
    return packages


def strongly_connected(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: every group of two or more modules that reach each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root) & modules)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.find_modules_directly_imported_by(nxt) & modules))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return sorted(groups)


def example_cycle(graph: grimp.ImportGraph, group: list[str]) -> list[str]:
    """One concrete cycle through the group's first module, for the message."""
    first = group[0]
    via = sorted(graph.find_modules_directly_imported_by(first) & set(group))[0]
    back = graph.find_shortest_chain(importer=via, imported=first)
    assert back is not None
    return [first, *back]


def problems(packages: list[str]) -> list[str]:
    graph = grimp.build_graph(*packages, cache_dir=None)
    modules = {m for m in graph.modules if m.split(".")[0] in packages}
    found = []
    for group in strongly_connected(graph, modules):
        found.append(f"import cycle: {' -> '.join(example_cycle(graph, group))}"
                     + (f" (and {', '.join(group)} reach each other)" if len(group) > 2 else ""))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("pyproject.toml"),
                        help="the pyproject.toml naming the root packages (import-linter's)")
    args = parser.parse_args(argv)
    found = problems(root_packages(args.config))
    for line in found:
        print(line)
    print(f"{len(found)} problem(s)" if found else "no import cycles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
