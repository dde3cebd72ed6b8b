"""The import graph of the package (read with ``ast``, lazy imports inside
functions included): no cycle, and the one-way flow of docs/architecture.md."""

import ast
from pathlib import Path

from tests.conftest import ROOT


def import_graph() -> dict[str, set[str]]:
    pkg_root = ROOT / "tfanomaly"
    mods = {}
    for p in pkg_root.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    graph = {m: set() for m in mods}
    for name, p in mods.items():
        pkg = name if p.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(Path(p).read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                subs = [f"{base}.{a.name}" for a in node.names]
                # `from pkg import submodule` depends on the submodule, not on pkg/__init__
                targets = [s for s in subs if s in mods] + ([base] if any(s not in mods for s in subs) else [])
            else:
                continue
            graph[name] |= {t for t in targets if t in mods and t != name}
    return graph


def test_import_graph_has_no_cycle():
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n) :] + [n]))
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_imports_flow_one_way():
    """Leaves import no tfanomaly module (errors, files, validators, filters, version);
    the config layer no TensorFlow-side module; nothing in models/ imports
    data/; losses does not import models/; families share networks through
    blocks/dcgan, never through each other; only the CLI and the package's API
    import the training driver."""
    graph = import_graph()
    leaves = {"tfanomaly.errors", "tfanomaly.files", "tfanomaly.validators", "tfanomaly.filters", "tfanomaly.version"}
    for m in leaves:
        assert graph[m] <= {"tfanomaly.errors"} - {m}, (m, graph[m])
    config_layer = {"tfanomaly.config", "tfanomaly.family_configs"}
    for m in config_layer:
        assert graph[m] <= leaves | config_layer, (m, graph[m] - leaves - config_layer)
    families = {"grdnet", "ganomaly", "autoencoder", "adgan", "cyclegan"}
    shared = {"tfanomaly.models", "tfanomaly.models.base", "tfanomaly.models.blocks", "tfanomaly.models.dcgan"}
    for m, deps in graph.items():
        if m.startswith("tfanomaly.models"):
            assert not {d for d in deps if d.startswith("tfanomaly.data")}, (m, deps)
        if m.split(".")[-1] in families:
            assert not {d for d in deps if d.startswith("tfanomaly.models") and d not in shared}, (m, deps)
        if m != "tfanomaly":  # the package's API (tfanomaly.train(...)) and cli/ may drive training
            assert "tfanomaly.train" not in deps, m
    assert not {d for d in graph["tfanomaly.losses"] if d.startswith("tfanomaly.models")}


def test_a_family_without_the_contract_is_refused_at_class_creation():
    """AnomalyModel names what every family defines; a subclass missing any of
    it is a TypeError when the class is made, not at the first score or epoch."""
    import pytest

    from tfanomaly.models import registry
    from tfanomaly.models.base import AnomalyModel

    for name in registry.names():  # the five families satisfy it
        assert all(callable(getattr(registry.model_class(name), m)) for m in AnomalyModel.REQUIRED)
    with pytest.raises(TypeError, match="must define sample_outputs, train_step, optimizer_groups"):

        class Partial(AnomalyModel):
            def score(self, images):
                return {}
