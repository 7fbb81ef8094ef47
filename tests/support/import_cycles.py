"""An import-linter contract type: no import cycle among the modules of the given packages.

import-linter's own `acyclic_siblings` looks at the children of one package at a time (squashed
into packages) and misses a cycle through a package's `__init__`. This contract looks at the
module graph itself: every strongly connected component of two or more modules is a cycle, and
the failure names one concrete loop through it with the line of each import. Imports made inside
functions count: grimp reads them like any other, and a deferred import only postpones a cycle
to run time.

    [[tool.importlinter.contracts]]
    name = "No import cycles"
    type = "acyclic_modules"
    packages = ["edge", "webapp", "config"]
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable

import grimp
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


def strongly_connected(graph: grimp.ImportGraph, modules: Iterable[str]) -> list[list[str]]:
    """The strongly connected components of two or more modules among `modules` (Tarjan's
    algorithm without recursion: the graph is deep enough to pass Python's recursion limit)."""
    members = set(modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def imported_by(module: str) -> list[str]:
        return sorted(graph.find_modules_directly_imported_by(module) & members)

    for root in sorted(members):
        if root in index:
            continue
        work = [(root, iter(imported_by(root)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(imported_by(target))))
                    break
                if target in on_stack:
                    low[module] = min(low[module], index[target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[module])
                if low[module] == index[module]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == module:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return sorted(components)


def one_loop(graph: grimp.ImportGraph, component: list[str]) -> list[str]:
    """A shortest loop from the component's first module back to itself, within the component."""
    members = set(component)
    start = component[0]
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for target in sorted(graph.find_modules_directly_imported_by(module) & members):
            if target == start:
                loop = [module]
                while loop[-1] != start:
                    loop.append(came_from[loop[-1]])
                return [*reversed(loop), start]
            if target not in came_from:
                came_from[target] = module
                queue.append(target)
    raise AssertionError(f"{start} is in a strongly connected component but on no loop")


class AcyclicModulesContract(Contract):
    """Fails on any import cycle among the modules of `packages`."""

    type_name = "acyclic_modules"

    packages = fields.ListField(subfield=fields.StringField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        modules: set[str] = set()
        for package in self.packages:  # type: ignore[attr-defined]
            modules |= {package} | graph.find_descendants(package)
        cycles = []
        for component in strongly_connected(graph, modules):
            loop = one_loop(graph, component)
            steps = []
            for importer, imported in itertools.pairwise(loop):
                lines = sorted(detail["line_number"] for detail in graph.get_import_details(
                    importer=importer, imported=imported))
                steps.append((importer, imported, lines))
            cycles.append({"modules": component, "loop": steps})
        return ContractCheck(kept=not cycles, metadata={"cycles": cycles})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for cycle in check.metadata["cycles"]:
            output.print_error(f"Import cycle among {', '.join(cycle['modules'])}:")
            output.new_line()
            for importer, imported, lines in cycle["loop"]:
                where = ", ".join(f"l.{line}" for line in lines)
                output.print_error(f"- {importer} -> {imported} ({where})", bold=False)
            output.new_line()
