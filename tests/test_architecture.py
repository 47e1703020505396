"""The package's structure: no import cycles, no torch on the light side, one error root, logging."""

from __future__ import annotations

import ast
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genretag import errors
from genretag.cli import app

runner = CliRunner()
PACKAGE = Path(__file__).resolve().parents[1] / "genretag"


# --------------------------------------------------------------------------- import graph

def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST):
    """Every node of `tree` except those under `if TYPE_CHECKING:` (imports for annotations only)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
                continue
            todo.append(child)


def import_graph(package: Path = PACKAGE, type_only: bool = False) -> dict[str, set[str]]:
    """genretag module -> the genretag modules it imports, at any depth of the file (functions included).

    `from P import X` counts as an edge to P.X when that is a module, else to P.
    Imports under `if TYPE_CHECKING:` never run and are left out, unless
    `type_only` asks for them too (the layer contract counts them). The
    implicit import of a module's parent packages is left out too: every
    import does it, and a package's __init__ importing its own submodules
    is not a cycle between modules.
    """
    files = {_module_name(f, package): f for f in package.rglob("*.py")}
    nodes = ast.walk if type_only else _runtime_nodes
    graph: dict[str, set[str]] = {}
    for mod, f in files.items():
        is_pkg = f.name == "__init__.py"
        edges: set[str] = set()
        for node in nodes(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name.split(".")[0] == "genretag")
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
                if base.split(".")[0] != "genretag":
                    continue
                for a in node.names:
                    edges.add(f"{base}.{a.name}" if f"{base}.{a.name}" in files else base)
        graph[mod] = {e for e in edges if e in files and e != mod}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert {"genretag.cli.app", "genretag.store.resolve", "genretag.store.index"} <= set(graph)
    assert "genretag.pipeline.heap" in graph["genretag.cli.app"]  # imported inside main(): function level counts
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_nothing_outside_the_cli_imports_the_cli():
    """The CLI is a thin layer over the library: library code a user imports never reaches up into it."""
    graph = import_graph()
    upward = {mod: sorted(e for e in edges if e == "genretag.cli" or e.startswith("genretag.cli."))
              for mod, edges in graph.items()
              if mod != "genretag.cli" and not mod.startswith("genretag.cli.") and mod != "genretag.__main__"}
    assert {mod: e for mod, e in upward.items() if e} == {}
    assert "genretag.pipeline.heap" in graph["genretag.pipeline.cluster"]  # what the cluster worker shares


def test_the_cycle_finder_finds_a_function_level_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# --------------------------------------------------------------------------- the layer contract

#: genretag's layers, lowest first (docs/architecture.md draws them). A module is in the layer of the
#: longest name here that is the module or a package holding it ("genretag" itself: the facade,
#: its __init__ only). Every module of genretag/ must be in one.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("genretag.errors", "genretag.paths", "genretag.version", "genretag.deprecation", "genretag.labels",
     "genretag.fs"),
    ("genretag.audio",),
    ("genretag.tags",),  # torch-free: only audio.containers and errors below it
    ("genretag.card",),
    # the stages: segments, prepare, early_exit, calibration, threads, heap, output, and the model
    # stage (inference), which names the model only by its Predictor protocol
    ("genretag.pipeline",),
    ("genretag.report",),  # torch-free: tags, pipeline.segments, TrackResult
    ("genretag.runtime",),  # torch-free: the numpy log-mel and the ONNX export, run without torch
    ("genretag.nets",),
    ("genretag.store",),
    ("genretag.model", "genretag"),
    # the executors: a model over many files, and the protocol the commands hold them by
    ("genretag.pipeline.executor", "genretag.pipeline.result_cache", "genretag.pipeline.worker_network",
     "genretag.pipeline.classifier", "genretag.pipeline.cluster"),
    ("genretag.training",),
    ("genretag.cli", "genretag.__main__"),
    # genretag 0.1's addresses, each a deprecated alias of a module above: nothing imports them
    ("genretag.api", "genretag.inference", "genretag.prepare",
     "genretag.store.load", "genretag.store.card", "genretag.store.metrics",
     "genretag.pipeline.cache"),  # and 0.2.0's address of the executors' names
)


def layer_of(module: str, layers=LAYERS) -> int | None:
    """The index of the module's layer in `layers`, or None when no layer names it."""
    best: tuple[int, int] | None = None  # (length of the matching name, layer)
    for i, names in enumerate(layers):
        for name in names:
            inside = module.startswith(name + ".") and name != "genretag"
            if (module == name or inside) and (best is None or len(name) > best[0]):
                best = (len(name), i)
    return None if best is None else best[1]


def layer_violations(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """"a -> b" for every import of a module from a higher layer, and "a: in no layer" for a module
    that the layers do not place."""
    found = [f"{m}: in no layer" for m in sorted(graph) if layer_of(m, layers) is None]
    for m in sorted(graph):
        mine = layer_of(m, layers)
        for e in sorted(graph[m]):
            theirs = layer_of(e, layers)
            if mine is not None and theirs is not None and theirs > mine:
                found.append(f"{m} -> {e}")
    return found


def test_every_module_imports_only_its_own_layer_or_lower_ones():
    """Type-only imports count: an annotation that names a higher layer is a dependency on it too."""
    graph = import_graph(type_only=True)
    assert layer_violations(graph) == []
    assert "genretag.model" in graph["genretag.store.load"]  # the aliases are in the graph, on top
    assert {"genretag.pipeline.inference", "genretag.nets", "genretag.store.weights"} <= graph["genretag.model"]


def test_the_layer_contract_finds_an_upward_import():
    layers = (("p.low",), ("p.mid",), ("p",), ("p.high",))
    graph = {"p.low.a": {"p.low.b"}, "p.low.b": {"p.high.x"}, "p.mid": {"p.low.a"}, "p.high.x": {"p.mid"},
             "p": {"p.high.x"}, "q": set()}
    assert layer_violations(graph, layers) == ["q: in no layer", "p -> p.high.x", "p.low.b -> p.high.x"]
    assert layer_of("p.low.a", layers) == 0 and layer_of("p.other", layers) == 2 and layer_of("r", layers) is None
    assert layer_of("genretag.unplaced") is None  # the facade's layer holds genretag/__init__.py only


def test_the_0_1_addresses_are_imported_by_nothing():
    aliases = set(LAYERS[-1])
    graph = import_graph(type_only=True)
    assert {m: sorted(e & aliases) for m, e in graph.items() if e & aliases} == {}


# --------------------------------------------------------------------------- the torch-free side

LIGHT_PACKAGES = ("genretag.audio", "genretag.tags", "genretag.report", "genretag.runtime")
LOOKUP_MODULES = ("genretag.card", "genretag.card.metrics", "genretag.store.weights", "genretag.store.local",
                  "genretag.store.index", "genretag.store.resolve", "genretag.errors", "genretag.paths",
                  "genretag.labels", "genretag.training.labelled", "genretag.pipeline.executor")

_PROBE = """
import importlib, pkgutil, sys
for pkg in {packages!r}:
    for m in pkgutil.iter_modules(importlib.import_module(pkg).__path__, pkg + "."):
        importlib.import_module(m.name)
for name in {modules!r}:
    importlib.import_module(name)
from genretag.store.resolve import find_card
find_card(None)
sys.argv = ["genretag", "--version"]
from genretag.cli import main
try:
    main()
except SystemExit:
    pass
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchaudio", "torchvision"))
print("HEAVY", heavy, "AUDIO", "genretag.audio.decode" in sys.modules)
"""


def test_audio_tags_store_lookup_and_version_never_import_torch():
    r = subprocess.run([sys.executable, "-c", _PROBE.format(packages=LIGHT_PACKAGES, modules=LOOKUP_MODULES)],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ), check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "HEAVY [] AUDIO True"
    assert "genretag 0." in r.stdout  # the version really was printed


# --------------------------------------------------------------------------- the error root

def test_a_module_that_raises_an_error_holds_the_one_class():
    from genretag.audio.containers import FingerprintError
    from genretag.audio.decode import AudioError
    from genretag.store import index
    from genretag.store.local import ModelError
    from genretag.tags.fields import TagError
    from genretag.training.dataset import DatasetError

    assert AudioError is errors.AudioError and FingerprintError is errors.FingerprintError
    assert TagError is errors.TagError and DatasetError is errors.DatasetError and ModelError is errors.ModelError
    assert (index.HubError, index.OfflineError, index.ChecksumError) == (
        errors.HubError, errors.OfflineError, errors.ChecksumError)
    for cls in (AudioError, FingerprintError, TagError, DatasetError, ModelError):
        assert issubclass(cls, errors.GenretagError)
    assert issubclass(errors.OfflineError, errors.HubError) and issubclass(errors.ChecksumError, errors.HubError)
    assert issubclass(errors.HubError, errors.ModelError)


def test_genretag_imports_its_errors_from_their_own_modules():
    """`genretag.errors` (and `genretag.tags.errors` for the tag stack's own) is where genretag's code
    imports an error class from, never a module that happens to hold it too."""
    from genretag.tags import errors as tag_errors

    homes = {"genretag.errors": errors, "genretag.tags.errors": tag_errors}
    names = {n for mod in homes.values() for n, v in vars(mod).items()
             if isinstance(v, type) and issubclass(v, Exception)}
    elsewhere = []
    for f in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("genretag"):
                wrong = [a.name for a in node.names if a.name in names and node.module not in homes]
                if wrong:
                    elsewhere.append(f"{f.relative_to(PACKAGE)}:{node.lineno} {node.module} {wrong}")
    assert elsewhere == []


def test_exit_code_defaults_and_overrides():
    assert errors.AudioError("x").exit_code == 1
    assert errors.DatasetError("x").exit_code == 2
    e = errors.HubError("refused", 2)
    assert e.exit_code == e.code == 2 and str(e) == "refused"
    assert errors.ChecksumError("bad").exit_code == 1


def test_one_line():
    assert errors.one_line(ValueError("first\nsecond\nthird")) == "first"
    assert errors.one_line(KeyError()) == "KeyError"
    assert errors.one_line(RuntimeError("  \n  padded line \n")) == "padded line"
    assert len(errors.one_line(RuntimeError("x" * 1000))) == errors.MAX_MESSAGE


def test_model_errors_reach_the_cli_as_one_line_with_their_code(tiny_model_dir, tmp_path):
    unknown = runner.invoke(app, ["classify", str(tmp_path / "x.flac"), "--model", "no-such-model"])
    assert unknown.exit_code == 2
    assert unknown.stderr.strip().splitlines() == [
        "genretag: error: model 'no-such-model' not found (not a card path, not bundled, not in the cache)"]

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir.parent, broken)
    w = broken / tiny_model_dir.with_suffix(".safetensors").name
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    r = runner.invoke(app, ["classify", str(tmp_path / "x.flac"), "--model", str(broken / tiny_model_dir.name)])
    assert r.exit_code == 1  # a model that cannot be loaded is a run-time failure, not a usage error
    assert r.stderr.strip().splitlines() == [
        f"genretag: error: {w}: sha256 does not match the model card (corrupt or tampered)"]


def test_dataset_errors_exit_2_through_the_cli(tmp_path):
    r = runner.invoke(app, ["evaluate", str(tmp_path / "nothing-here"), "--model", "no-such-model"])
    assert r.exit_code == 2 and r.stderr.startswith("genretag: error:") and len(r.stderr.splitlines()) == 1


# --------------------------------------------------------------------------- logging

@pytest.fixture()
def index_with_one_model(tmp_path):
    import json

    idx = tmp_path / "index.json"
    idx.write_text(json.dumps({"format": 1, "models": [{"name": "far-away",
                                                        "url": "http://127.0.0.1:9/far-away.safetensors",
                                                        "sha256": "0" * 64}]}))
    return idx


def test_library_messages_go_through_logging(caplog, monkeypatch, index_with_one_model):
    from genretag.store import index, local, resolve

    monkeypatch.setenv(index.INDEX_ENV, str(index_with_one_model))
    with caplog.at_level(logging.DEBUG, logger="genretag"):
        card = resolve.find_card("far-away")  # port 9 refuses: offline, so the bundled default
    assert card is not None and card.stem == local.default_model_name()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.name for r in warnings] == ["genretag.store.resolve"]
    assert "using the bundled default" in warnings[0].getMessage()


@pytest.mark.parametrize("flags, shown", [([], {"warning"}), (["-v"], {"warning", "debug"}), (["-q"], set())])
def test_quiet_and_verbose_set_the_log_level(flags, shown, monkeypatch, index_with_one_model, tmp_path):
    from genretag.store import index

    monkeypatch.setenv(index.INDEX_ENV, str(index_with_one_model))
    r = runner.invoke(app, [*flags, "models", "info", "far-away"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, [*flags, "classify", str(tmp_path / "missing.flac"), "--model", "far-away",
                            "--format", "jsonl"])
    lines = r.stderr.splitlines()
    got = set()
    if any(x.startswith("genretag: warning: model 'far-away' is not cached") for x in lines):
        got.add("warning")
    if any(x.startswith("download error:") for x in lines):
        got.add("debug")
    assert got == shown


# --------------------------------------------------------------------------- hidden state

def _reads(pred) -> list[str]:
    """`file:line` of every node of the library (genretag/, the CLI left out) for which `pred` holds."""
    hits = []
    for f in sorted(PACKAGE.rglob("*.py")):
        if f.relative_to(PACKAGE).parts[0] == "cli":
            continue
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if pred(node):
                hits.append(f"{f.relative_to(PACKAGE)}:{node.lineno}")
    return hits


def test_the_library_never_reads_sys_argv():
    """The command a card records comes from the CLI (`cli.app.command_line`), not from sys.argv."""
    def argv(node):
        return isinstance(node, ast.Attribute) and node.attr == "argv" and ast.unparse(node.value) == "sys"
    assert _reads(argv) == []


def test_production_code_reads_no_test_variable():
    """The crash tests install `tags.safe_write._checkpoint` themselves; no GENRETAG_TEST_* is read."""
    def test_var(node):
        return isinstance(node, ast.Constant) and isinstance(node.value, str) and "GENRETAG_TEST" in node.value
    assert _reads(test_var) == []
    assert [f for f in (PACKAGE / "cli").rglob("*.py") if "GENRETAG_TEST" in f.read_text()] == []


def test_every_module_is_on_the_architecture_map():
    """docs/architecture.md's package map names every module of genretag/ (as `name.py` under its
    package's line, or its dotted name), so a newcomer finds where each idea lives."""
    root = Path(__file__).resolve().parent.parent
    doc = (root / "docs" / "architecture.md").read_text()
    missing = []
    for f in sorted((root / "genretag").rglob("*.py")):
        rel = f.relative_to(root / "genretag")
        if f.name in ("__init__.py", "__main__.py") or rel.parts[0] == "_models":
            continue
        dotted = ".".join(rel.with_suffix("").parts)
        if f.name not in doc and dotted not in doc and str(rel) not in doc:
            missing.append(str(rel))
    assert missing == [], f"not on docs/architecture.md's map: {missing}"
