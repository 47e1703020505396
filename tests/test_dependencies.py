"""Every third-party module genretag loads belongs to a distribution its install declares.

`pip install genretag` installs the base requirements and, for `genretag[x]`, the extra's; a module
that is importable here only because something else (the test extra, a system package) happened to
install it is a tool that does not start for a user. So: import the modules of each part in a fresh
interpreter, map every third-party top-level module that got loaded to its distribution
(`importlib.metadata.packages_distributions()`), and require it inside the dependency closure of what
that part declares in pyproject.toml, followed recursively through the installed distributions' own
`Requires-Dist` (environment markers evaluated, extras followed only where asked for).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # the [test] extra installs tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: The modules each extra exists for; everything else of genretag/ and beetsplug/ is the base install.
PARTS = {"train": ["genretag.training"],
         "beets": ["beetsplug.genretag"],
         "dask": ["genretag.pipeline.cluster"]}

#: Names in sys.modules that no distribution owns in its RECORD, with the reason each is fine.
UNOWNED = {
    r"__editable___genretag_.*_finder": "the editable install's import hook for genretag itself",
    r"_distutils_hack": "setuptools' shim, loaded by site.py wherever setuptools is installed",
    r"__mp_main__": "multiprocessing's alias of the main module",
    r"_cython_\d+_\d+_\d+|cython_runtime": "made at run time by Cython-compiled extensions (scipy, ...)",
}


#: Modules a dependency imports only when they happen to be installed (`try: import x` / `except
#: ImportError`): loaded here because the test extra installed them, absent and harmless elsewhere.
OPTIONAL_IN_DEPENDENCIES = {
    "tqdm": "torch.hub: `from tqdm import tqdm`, with a stand-in when it is missing",
    "colorama": "tornado.log (under distributed): used for Windows consoles when present",
}


def _modules(prefix: str) -> list[str]:
    """Dotted names of every module under genretag/ or beetsplug/ whose name starts with `prefix`."""
    root = ROOT / prefix.split(".")[0]
    out = []
    for f in root.rglob("*.py"):
        name = ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        if name.endswith("__main__"):
            continue
        if name == prefix or name.startswith(prefix + "."):
            out.append(name)
    return sorted(out)


def _part_modules(part: str) -> list[str]:
    every = _modules("genretag") + _modules("beetsplug")
    if part != "base":
        return sorted(m for p in PARTS[part] for m in every if m == p or m.startswith(p + "."))
    extra = {m for ps in PARTS.values() for p in ps for m in every if m == p or m.startswith(p + ".")}
    return [m for m in every if m not in extra]


def loaded_third_party(modules: list[str]) -> set[str]:
    """Import `modules` in a fresh interpreter; the third-party top-level modules that got loaded."""
    code = (
        "import importlib, json, sys\n"
        "before = set(sys.modules)\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    names = set(json.loads(r.stdout.splitlines()[-1]))
    ours = {"genretag", "beetsplug", "__main__", "__future__"}
    return {n for n in names - ours - set(sys.stdlib_module_names) - set(sys.builtin_module_names)
            if not n.startswith("_sysconfigdata")}


def closure(requirements: list[str], extras: tuple[str, ...] = ()) -> set[str]:
    """Canonical names of the distributions `requirements` install, followed through their own
    requirements (markers evaluated for this interpreter; a dependency's extras only where named)."""
    seen: set[str] = set()
    todo = [(Requirement(r), extras) for r in requirements]
    while todo:
        req, env_extras = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (*env_extras, "")):
            continue
        name = canonicalize_name(req.name)
        key = name + "[" + ",".join(sorted(req.extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # declared but not installed here: nothing of it can be loaded either
        for sub in dist.requires or []:
            todo.append((Requirement(sub), tuple(req.extras)))
    return {k.split("[")[0] for k in seen}


def declared(part: str) -> set[str]:
    reqs = list(PYPROJECT["project"]["dependencies"])
    if part != "base":
        reqs += PYPROJECT["project"]["optional-dependencies"][part]
    return closure(reqs) | {"genretag"}


def undeclared(modules: set[str], allowed: set[str]) -> dict[str, list[str]]:
    """{module: its distributions} for every module owned by no distribution in `allowed`."""
    owners = metadata.packages_distributions()
    bad = {}
    for m in sorted(modules):
        dists = {canonicalize_name(d) for d in owners.get(m, [])}
        if m in OPTIONAL_IN_DEPENDENCIES:
            continue
        if not dists:
            if not any(re.fullmatch(p, m) for p in UNOWNED):
                bad[m] = ["(no distribution owns it)"]
        elif not dists & allowed:
            bad[m] = sorted(dists)
    return bad


@pytest.mark.slow
@pytest.mark.parametrize("part", ["base", *sorted(PARTS)])
def test_every_loaded_module_is_a_declared_dependency(part):
    modules = _part_modules(part)
    assert modules, part
    if part != "base":  # an extra's modules run on top of the base install
        modules = _part_modules("base") + modules
    bad = undeclared(loaded_third_party(modules), declared(part))
    where = "the base dependencies" if part == "base" else f"the base and [{part}] dependencies"
    assert not bad, f"loaded but not in {where} (pyproject.toml): {bad}"


def test_the_check_catches_an_undeclared_import():
    """click is installed here (beets and distributed need it) but the base install does not declare
    it: a base module importing it must be reported."""
    pytest.importorskip("click")
    base = declared("base")
    if "click" in base:
        pytest.skip("click is in the base closure on this machine")
    assert undeclared({"click"}, base) == {"click": ["click"]}
    assert undeclared({"typer", "numpy"}, base) == {}


def test_closure_follows_requirements_and_markers():
    typer = closure(["typer"])
    assert {"typer", "rich"} <= typer  # rich is typer's own requirement
    assert closure(["typer; python_version < '3'"]) == set()


def test_parts_name_real_modules():
    every = set(_modules("genretag") + _modules("beetsplug"))
    for part, prefixes in PARTS.items():
        assert any(m == p or m.startswith(p + ".") for p in prefixes for m in every), part
    assert "genretag.cli.app" in _part_modules("base")


@pytest.mark.slow
def test_a_missing_extra_is_one_line_naming_its_pip_install(tmp_path):
    """`genretag tune` without `genretag[train]`: optuna made unimportable, the real entry point run."""
    code = ("import sys; sys.modules['optuna'] = None; sys.argv = ['genretag', 'tune', '--trials', '1', "
            f"{str(tmp_path)!r}, '--out', {str(tmp_path / 'out')!r}]\n"
            "from genretag.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        "genretag: error: this needs optuna, which is not installed: pip install 'genretag[train]'"]


def test_missing_extra_names_only_an_extras_module():
    from genretag.errors import missing_extra

    assert missing_extra(ModuleNotFoundError("x", name="matplotlib.pyplot")).extra == "train"
    assert missing_extra(ModuleNotFoundError("x", name="distributed")).extra == "dask"
    assert missing_extra(ModuleNotFoundError("x", name="numpy")) is None
