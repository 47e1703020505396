"""What `pip install genretag` and `pipx install .` put on a machine: the wheel, its models, its extras.

The wheel is built once per session from a copy of the working tree (so the build's `build/` and
`*.egg-info` folders never land in the checkout), offline and without build isolation. `.ci/run`
then installs that kind of wheel into a fresh virtual environment and classifies a file with it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import genretag

if sys.version_info >= (3, 11):
    import tomllib
else:  # the [test] extra installs tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: The wheel is downloaded by every pip/pipx install; models/ is most of it.
MAX_WHEEL_BYTES = 20 * 1024 * 1024

#: What an extra's modules are: `[train]` must hold exactly what these import beyond the base.
#: (An engineer adding an extra adds its modules here.)
EXTRA_MODULES = {"train": ["genretag/training"], "beets": ["beetsplug/genretag.py"],
                 "dask": ["genretag/pipeline/cluster.py"]}

_NOT_SOURCE = shutil.ignore_patterns(".git", ".cache", "build", "dist", "runs", "*.egg-info", "__pycache__",
                                     ".pytest_cache", "*.whl")


def _source_copy(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, ignore=_NOT_SOURCE)
    return dest


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """One wheel and one sdist built from a copy of this tree."""
    base = tmp_path_factory.mktemp("build")
    src = _source_copy(base / "src")
    out = base / "dist"
    pip = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", str(src), "-w", str(out)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-3000:]
    sdist = subprocess.run(
        [sys.executable, "-c", f"from setuptools import build_meta as b; print(b.build_sdist({str(out)!r}))"],
        cwd=src, capture_output=True, text=True)
    assert sdist.returncode == 0, sdist.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    (tgz,) = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": tgz}


def model_problems(files: dict[str, bytes], prefix: str, models: Path = MODELS) -> list[str]:
    """What is missing or wrong in an archive's copy of `models/` (files: archive name -> bytes).

    Every card, the weights each card names with the card's sha256, and DEFAULT naming a bundled card.
    """
    problems = []
    expected = [models / "DEFAULT", *sorted(models.glob("*.json"))]
    for card in expected[1:]:
        weights = json.loads(card.read_text()).get("weights")
        if weights:
            expected.append(models / weights)
    for f in dict.fromkeys(expected):
        name = prefix + f.name
        if name not in files:
            problems.append(f"{name} is missing")
        elif files[name] != f.read_bytes():
            problems.append(f"{name} differs from models/{f.name}")
    for card in sorted(models.glob("*.json")):
        meta = json.loads(card.read_text())
        weights, digest = meta.get("weights"), meta.get("weights_sha256")
        if weights and prefix + weights in files and digest:
            got = hashlib.sha256(files[prefix + weights]).hexdigest()
            if got != digest:
                problems.append(f"{prefix}{weights}: sha256 {got[:12]}... but {card.name} says {digest[:12]}...")
    default = files.get(prefix + "DEFAULT", b"").decode().strip()
    if prefix + "DEFAULT" in files and prefix + f"{default}.json" not in files:
        problems.append(f"DEFAULT names {default!r}, which the archive has no card for")
    return problems


def _zip_files(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def _without(wheel: Path, dest: Path, drop, change=None) -> Path:
    """A copy of `wheel` with the entries `drop(name)` selects left out (and `change` applied to the rest)."""
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(dest, "w") as out:
        for n in src.namelist():
            if not drop(n):
                data = src.read(n)
                out.writestr(n, change(n, data) if change else data)
    return dest


@pytest.mark.slow
def test_wheel_carries_every_bundled_model_with_the_cards_sha256(built):
    assert list(MODELS.glob("*.safetensors")), "models/ holds no weights to check"
    assert model_problems(_zip_files(built["wheel"]), "genretag/_models/") == []


def test_the_model_check_fails_a_wheel_without_its_models(built, tmp_path):
    wheel = built["wheel"]
    bare = _without(wheel, tmp_path / "bare.whl", lambda n: n.startswith("genretag/_models/"))
    problems = model_problems(_zip_files(bare), "genretag/_models/")
    assert "genretag/_models/DEFAULT is missing" in problems
    assert any(p.endswith(".safetensors is missing") for p in problems)

    first = sorted(MODELS.glob("*.safetensors"))[0].name
    flipped = _without(wheel, tmp_path / "flipped.whl", lambda n: False,
                       lambda n, d: d[:-1] + bytes([d[-1] ^ 1]) if n == "genretag/_models/" + first else d)
    problems = model_problems(_zip_files(flipped), "genretag/_models/")
    assert any(first in p and "sha256" in p for p in problems), problems


def test_wheel_is_under_20_mb(built):
    size = built["wheel"].stat().st_size
    assert size < MAX_WHEEL_BYTES, f"wheel is {size / 2**20:.1f} MB; the budget is {MAX_WHEEL_BYTES / 2**20:.0f} MB"


def test_wheel_holds_every_module_and_package_file(built):
    names = set(_zip_files(built["wheel"]))
    source = [p.relative_to(ROOT).as_posix() for p in (ROOT / "genretag").rglob("*")
              if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".json", ".txt")]
    assert source
    missing = sorted(set(source) - names)
    assert missing == [], f"in genretag/ but not in the wheel: {missing[:10]}"
    # the beets plugin, in beets' namespace package: an __init__.py there would hide beets' own plugins
    assert names >= {"beetsplug/genretag.py"} and "beetsplug/__init__.py" not in names
    assert {n.split("/")[0] for n in names} == {"genretag", "beetsplug", next(n for n in names if ".dist-info/" in n)
                                                .split("/")[0]}


def test_wheel_metadata_version_license_and_entry_point(built):
    files = _zip_files(built["wheel"])
    info = next(n.split("/")[0] for n in files if n.endswith(".dist-info/METADATA"))
    meta = files[f"{info}/METADATA"].decode()
    assert re.search(r"^Version: (.+)$", meta, re.MULTILINE).group(1) == genretag.__version__
    assert re.search(r"^License-Expression: (.+)$", meta, re.MULTILINE).group(1) == PYPROJECT["project"]["license"]
    assert "musicnn" in re.search(r"^Summary: (.+)$", meta, re.MULTILINE).group(1)
    assert files[f"{info}/licenses/LICENSE"] == (ROOT / "LICENSE").read_bytes()
    assert "genretag = genretag.cli:main" in files[f"{info}/entry_points.txt"].decode()


def test_sdist_carries_models_license_and_the_build_files(built):
    with tarfile.open(built["sdist"]) as t:
        top = t.getnames()[0].split("/")[0]
        files = {m.name[len(top) + 1:]: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}
    assert model_problems(files, "models/") == []
    for name in ("LICENSE", "setup.py", "pyproject.toml", "README.md"):
        assert files.get(name) == (ROOT / name).read_bytes(), name


def test_installed_wheel_finds_its_models_without_a_checkout(built, tmp_path):
    """Unpacked wheel on sys.path, run from a folder outside the checkout: the models come from the wheel."""
    site = tmp_path / "site"
    with zipfile.ZipFile(built["wheel"]) as z:
        z.extractall(site)
    env = {k: v for k, v in os.environ.items() if k not in ("GENRETAG_BUNDLED_MODELS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    code = ("import genretag, genretag.paths as p; from genretag.store.local import default_model_name;"
            "print(genretag.__file__); print(p.bundled_models_dir()); print(default_model_name())")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    where, models, default = r.stdout.split()
    assert Path(where).is_relative_to(site)
    assert Path(models) == site / "genretag" / "_models"
    assert default == (MODELS / "DEFAULT").read_text().strip()


def test_a_checkout_reads_the_top_level_models_folder(monkeypatch):
    from genretag.paths import bundled_models_dir

    monkeypatch.delenv("GENRETAG_BUNDLED_MODELS", raising=False)
    if not Path(genretag.__file__).resolve().is_relative_to(ROOT):
        pytest.skip("genretag is imported from an install, not from this checkout")
    assert bundled_models_dir() == MODELS


# -- extras -------------------------------------------------------------------------------------


def _names(reqs: list[str]) -> set[str]:
    """Import names of requirements (`dask[distributed]>=2024` -> dask, distributed)."""
    out = set()
    for r in reqs:
        m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(?:\[([^\]]*)\])?", r)
        out.add(m.group(1).lower().replace("-", "_"))
        out.update(x.strip().lower() for x in (m.group(2) or "").split(",") if x.strip())
    return out


def _imports(paths: list[Path]) -> set[str]:
    """Top-level modules the files import (absolute imports, at any depth in the code)."""
    found = set()
    for f in paths:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"genretag", "__future__"}


BASE = _names(PYPROJECT["project"]["dependencies"])
EXTRAS = {k: _names(v) for k, v in PYPROJECT["project"]["optional-dependencies"].items()}


@pytest.mark.parametrize("extra", sorted(EXTRA_MODULES))
def test_extra_holds_exactly_what_its_modules_import(extra):
    files = [f for p in EXTRA_MODULES[extra] for f in ((ROOT / p).rglob("*.py") if (ROOT / p).is_dir()
                                                       else [ROOT / p])]
    assert files
    assert _imports(files) - BASE == EXTRAS[extra]


@pytest.mark.slow
def test_the_base_imports_no_optional_dependency():
    """Every module outside an extra's modules imports with every extra's packages made unimportable."""
    blocked = sorted(set().union(*(v for k, v in EXTRAS.items() if k != "test")) - BASE)
    assert blocked
    extra_files = {f for ps in EXTRA_MODULES.values() for p in ps
                   for f in ((ROOT / p).rglob("*.py") if (ROOT / p).is_dir() else [ROOT / p])}
    modules = sorted(".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                     for f in (ROOT / "genretag").rglob("*.py") if f not in extra_files and f.name != "__main__.py")
    code = f"""
import importlib, sys
for name in {blocked!r}:
    sys.modules[name] = None          # `import name` now raises ImportError
for m in {modules!r}:
    importlib.import_module(m)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    assert "genretag.cli.app" in modules and "genretag.pipeline.inference" in modules


def test_the_test_extra_installs_every_other_extra():
    """`.ci/run` installs `.[test]`; the tests exercise every extra's modules."""
    for name, reqs in EXTRAS.items():
        assert reqs <= EXTRAS["test"], f"[{name}] has {sorted(reqs - EXTRAS['test'])} that [test] lacks"


@pytest.mark.slow
def test_a_wheel_built_from_the_sdist_carries_the_same_files(built, tmp_path):
    """What PyPI users of the sdist get: unpack it, build a wheel from it, compare with the tree's wheel."""
    with tarfile.open(built["sdist"]) as t:
        t.extractall(tmp_path, filter="data")
    (src,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", str(src), "-w", str(tmp_path / "dist")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    (again,) = (tmp_path / "dist").glob("*.whl")
    ours, theirs = _zip_files(built["wheel"]), _zip_files(again)
    # RECORD lists hashes of the rest, so equal payloads give equal RECORDs too.
    assert sorted(theirs) == sorted(ours)
    assert [n for n in ours if ours[n] != theirs[n]] == []


@pytest.mark.slow
def test_twine_accepts_the_release_files(built):
    """`twine check` is what PyPI's upload runs on the metadata and the README rendering."""
    r = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(built["wheel"]), str(built["sdist"])],
                       capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert r.stdout.count("PASSED") == 2
