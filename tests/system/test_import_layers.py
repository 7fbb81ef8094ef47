"""The "no import cycles" contract of `make lint` (tests/support/import_cycles.py): it finds a
cycle however it is hidden (through a package's __init__, or a deferred import) and names one
shortest loop through it, and finds none in a layered graph. (`make lint` runs the contract
itself on the repository.)"""

from __future__ import annotations

import grimp

from tests.support.import_cycles import one_loop, strongly_connected


def graph(*imports: tuple[str, str, int]) -> grimp.ImportGraph:
    built = grimp.ImportGraph()
    for importer, imported, line in imports:
        built.add_import(
            importer=importer, imported=imported, line_number=line, line_contents="import"
        )
    return built


def test_a_layered_graph_has_no_cycle():
    layered = graph(("app.b", "app.a", 1), ("app.c", "app.b", 2), ("app.c", "app.a", 3))
    assert strongly_connected(layered, {"app.a", "app.b", "app.c"}) == []


def test_a_cycle_through_a_package_init_and_a_deferred_import_is_named_with_its_lines():
    # app.models imports app.cache at module level; app.cache's function imports app (the
    # package), whose __init__ imports app.models: the loop acyclic_siblings cannot see.
    hidden = graph(
        ("app.models", "app.cache", 3),
        ("app.cache", "app", 41),
        ("app", "app.models", 1),
        ("app.views", "app.models", 5),
    )
    [component] = strongly_connected(hidden, {"app", "app.models", "app.cache", "app.views"})
    assert sorted(component) == ["app", "app.cache", "app.models"]
    loop = one_loop(hidden, component)
    assert loop[0] == loop[-1] and set(loop) == set(component)
    assert len(loop) == 4  # models -> cache -> app -> models, the shortest loop
