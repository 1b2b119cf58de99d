"""Packaging of the monorepo: every distribution declares what it imports, keeps the layering, carries its own
version and the poetry-core build, and `make dist` builds one correct wheel per distribution.

The import scan is static (``ast``): imports inside functions, ``try`` blocks and ``TYPE_CHECKING`` guards count,
as do ``importlib.import_module("literal")`` calls, so an optional import must still be declared (as an extra).
"""
from __future__ import annotations

import ast
import importlib.metadata as md
import re
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from kdv_testutils import REPO

SUBPACKAGES = ("core", "classification", "segmentation", "detection", "pretraining", "tools")
BACKEND = "poetry.core.masonry.api"


def canon(name: str) -> str:
    """PEP 503 normalized distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Dist:
    """One distribution of the monorepo: a subpackage (``core``, ...) or the meta-package (``meta``, the root)."""

    key: str

    @property
    def root(self) -> Path:
        return REPO if self.key == "meta" else REPO / self.key

    @property
    def src(self) -> Path:
        return self.root / "src"

    @cached_property
    def pyproject(self) -> dict:
        return tomllib.loads((self.root / "pyproject.toml").read_text())

    @property
    def name(self) -> str:
        return self.pyproject["project"]["name"]

    @property
    def version(self) -> str:
        return self.pyproject["project"]["version"]

    @property
    def own_module(self) -> str:
        """The top-level module this distribution ships under the ``kdvision`` namespace."""
        return "kdvision.info" if self.key == "meta" else f"kdvision.{self.key}"

    @cached_property
    def requirements(self) -> list[Requirement]:
        project = self.pyproject["project"]
        reqs = list(project.get("dependencies", []))
        for extra in project.get("optional-dependencies", {}).values():
            reqs += extra
        return [Requirement(r) for r in reqs]

    @property
    def declared(self) -> set[str]:
        return {canon(r.name) for r in self.requirements}

    def files(self) -> list[Path]:
        """Python files of the distribution: its ``src/`` tree and, for a subpackage, its entry scripts."""
        if self.key == "meta":
            tree = [self.src / "kdvision" / "info.py"]
        else:
            tree = sorted((self.src / "kdvision" / self.key).rglob("*.py"))
        scripts = [] if self.key == "meta" else sorted(self.root.glob("*.py"))
        return tree + scripts

    def module_of(self, file: Path) -> str | None:
        """Dotted module name of a file under ``src/`` (None for an entry script)."""
        try:
            rel = file.relative_to(self.src).with_suffix("")
        except ValueError:
            return None
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        return ".".join(parts)


DISTS = [Dist(k) for k in SUBPACKAGES] + [Dist("meta")]
IDS = [d.key for d in DISTS]


def imported_modules(file: Path, module: str | None) -> list[tuple[str, int]]:
    """``(absolute module name, line)`` for every import in ``file``; relative imports resolved against ``module``."""
    tree = ast.parse(file.read_text(), filename=str(file))
    is_pkg = file.name == "__init__.py"
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                out.append((node.module, node.lineno))
                continue
            assert module is not None, f"{file}:{node.lineno}: relative import outside a package"
            package = module.split(".") if is_pkg else module.split(".")[:-1]
            base = package[: len(package) - (node.level - 1)]
            assert base, f"{file}:{node.lineno}: relative import beyond the top-level package"
            target = ".".join(base + ([node.module] if node.module else []))
            if node.module:
                out.append((target, node.lineno))
            else:  # `from . import x`: x may be a submodule
                out += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            out.append((node.args[0].value, node.lineno))
    return out


def scan(dist: Dist) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """``(third-party top-level module -> where, kdvision.X module -> where)`` over the distribution's files."""
    third, own = {}, {}
    for file in dist.files():
        for name, line in imported_modules(file, dist.module_of(file)):
            where = f"{file.relative_to(REPO)}:{line}"
            top = name.split(".")[0]
            if top == "kdvision":
                own.setdefault(".".join(name.split(".")[:2]), []).append(where)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third.setdefault(top, []).append(where)
    return third, own


@pytest.fixture(scope="module")
def module_to_dists() -> dict[str, list[str]]:
    return md.packages_distributions()


@pytest.mark.parametrize("dist", DISTS, ids=IDS)
def test_every_third_party_import_is_declared(dist, module_to_dists):
    third, _ = scan(dist)
    assert dist.files(), f"no source files found for {dist.name}"
    missing = []
    for module, where in sorted(third.items()):
        dists = module_to_dists.get(module)
        if not dists:
            missing.append(f"{module} (not installed, so its distribution is unknown) at {', '.join(where)}")
        elif not {canon(d) for d in dists} & dist.declared:
            missing.append(f"{module} (distribution {' or '.join(sorted(set(dists)))}) at {', '.join(where[:3])}")
    assert not missing, (f"{dist.name} imports libraries its pyproject.toml does not declare "
                         f"(add them to [project] dependencies or an extra):\n  " + "\n  ".join(missing))


@pytest.mark.parametrize("dist", DISTS, ids=IDS)
def test_kdvision_imports_keep_the_layering(dist):
    """Task subpackages import only kdvision.core and themselves; core imports only itself (not kdvision.info);
    the meta-package imports only what it depends on. Every kdvision import is backed by a declared dependency."""
    _, own = scan(dist)
    if dist.key == "core":
        allowed = {"kdvision.core"}
    elif dist.key == "meta":
        allowed = {dist.own_module} | {f"kdvision.{canon(r.name)[len('kdvision-'):]}" for r in dist.requirements
                                       if canon(r.name).startswith("kdvision-")}
    else:
        allowed = {"kdvision.core", dist.own_module}
    bad = {m: where for m, where in own.items() if m not in allowed}
    assert not bad, f"{dist.name} imports kdvision modules outside its layer (allowed {sorted(allowed)}): {bad}"
    if dist.key not in ("core", "meta"):
        assert "kdvision-core" in dist.declared, f"{dist.name} builds on kdvision-core but does not declare it"
        others = {n for n in dist.declared if n.startswith("kdvision") and n != "kdvision-core"}
        assert not others, f"{dist.name} depends on other kdvision distributions: {sorted(others)}"
    if dist.key == "core":
        assert not {n for n in dist.declared if n.startswith("kdvision")}, "core depends on a kdvision distribution"


@pytest.mark.parametrize("dist", DISTS, ids=IDS)
def test_own_version_and_poetry_core_build(dist):
    project, build = dist.pyproject["project"], dist.pyproject.get("build-system", {})
    assert "version" not in project.get("dynamic", []), f"{dist.name}: the version must be static"
    Version(dist.version)  # a valid PEP 440 version of its own
    assert build.get("build-backend") == BACKEND, f"{dist.name}: build-backend is not poetry-core"
    reqs = [Requirement(r) for r in build.get("requires", [])]
    core = [r for r in reqs if canon(r.name) == "poetry-core"]
    assert core and not core[0].specifier.contains("1.9.1") and core[0].specifier.contains("2.0.0"), \
        f"{dist.name}: build-system requires must pin poetry-core>=2, got {build.get('requires')}"
    assert dist.pyproject["tool"]["poetry"]["packages"] == [{"include": "kdvision", "from": "src"}]
    assert dist.name == ("kdvision" if dist.key == "meta" else f"kdvision-{dist.key}")


@pytest.mark.parametrize("dist", DISTS, ids=IDS)
def test_namespace_layout_ships_only_its_own_package(dist):
    """PEP 420: no kdvision/__init__.py; src/kdvision holds only this distribution's package, so the wheel
    (which includes all of src/kdvision) cannot ship another subpackage."""
    ns = dist.src / "kdvision"
    assert not (ns / "__init__.py").exists(), f"{ns}/__init__.py breaks the shared namespace"
    entries = {p.name for p in ns.iterdir() if p.name != "__pycache__"}
    expected = {"info.py"} if dist.key == "meta" else {dist.key}
    assert entries == expected, f"{ns} holds {sorted(entries)}, expected only {sorted(expected)}"
    if dist.key != "meta":
        init = (ns / dist.key / "__init__.py").read_text()
        found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", init, re.M)
        if found:
            assert found.group(1) == dist.version, f"{dist.name}: __version__ {found.group(1)} != {dist.version}"


@pytest.mark.parametrize("dist", DISTS, ids=IDS)
def test_plugin_entry_points_name_the_distributions_own_package(dist):
    eps = dist.pyproject["project"].get("entry-points", {}).get("kdvision.plugins", {})
    for name, target in eps.items():
        module = target.split(":")[0]
        assert module == dist.own_module or module.startswith(dist.own_module + "."), (name, target)
        path = dist.src.joinpath(*module.split("."))
        assert (path / "__init__.py").is_file() or path.with_suffix(".py").is_file(), (name, target)
    assert not (dist.key == "core" and eps), "core registers no plugins of its own"


def test_meta_package_requires_every_subpackage_at_its_version():
    meta = Dist("meta")
    reqs = {canon(r.name): r for r in meta.requirements}
    for key in SUBPACKAGES:
        sub = Dist(key)
        assert canon(sub.name) in reqs, f"the kdvision meta-package does not depend on {sub.name}"
        assert reqs[canon(sub.name)].specifier.contains(sub.version), (sub.name, sub.version,
                                                                       str(reqs[canon(sub.name)].specifier))
        if key != "core":
            core_req = next(r for r in sub.requirements if canon(r.name) == "kdvision-core")
            assert core_req.specifier.contains(Dist("core").version), (sub.name, str(core_req.specifier))


@pytest.mark.slow
def test_make_dist_builds_one_wheel_per_distribution(tmp_path):
    out = tmp_path / "dist"
    out.mkdir()
    (out / "stale-0.0.0-py3-none-any.whl").write_text("")  # `make dist` starts from an empty folder
    proc = subprocess.run(["make", "-s", "dist", f"DIST={out}"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = {f"{canon(d.name).replace('-', '_')}-{d.version}-py3-none-any.whl": d for d in DISTS}
    assert {p.name for p in out.iterdir()} == set(expected)
    for wheel_name, dist in expected.items():
        with zipfile.ZipFile(out / wheel_name) as zf:
            names = set(zf.namelist())
            info = f"{canon(dist.name).replace('-', '_')}-{dist.version}.dist-info"
            payload = {n for n in names if not n.startswith(info + "/")}
            prefix = dist.own_module.replace(".", "/")
            assert "kdvision/__init__.py" not in payload, wheel_name
            stray = {n for n in payload if not (n == prefix + ".py" or n.startswith(prefix + "/"))}
            assert not stray, f"{wheel_name} ships files of other packages: {sorted(stray)[:5]}"
            assert not {n for n in payload if "__pycache__" in n or n.endswith(".pyc")}, wheel_name
            tree = dist.src.joinpath(*dist.own_module.split("."))
            sources = [tree.with_suffix(".py")] if dist.key == "meta" else [
                p for p in tree.rglob("*") if p.suffix in (".py", ".yaml", ".yml") and "__pycache__" not in p.parts]
            wanted = {p.relative_to(dist.src).as_posix() for p in sources}
            assert wanted <= payload, f"{wheel_name} lacks {sorted(wanted - payload)[:5]}"
            meta = md.PathDistribution(zipfile.Path(zf, info + "/"))  # METADATA, entry_points.txt of the wheel
            assert meta.metadata["Name"] == dist.name and meta.version == dist.version
            requires = {canon(Requirement(r).name) for r in (meta.requires or []) if "extra ==" not in r}
            assert requires == {canon(r) for r in (Requirement(x).name for x in
                                                     dist.pyproject["project"].get("dependencies", []))}
            eps = {ep.name: ep.value for ep in meta.entry_points.select(group="kdvision.plugins")}
            assert eps == dist.pyproject["project"].get("entry-points", {}).get("kdvision.plugins", {})
            if dist.key in ("classification", "segmentation"):  # the YAML presets travel with the package
                assert any(n.startswith(f"{prefix}/configs/") and n.endswith(".yaml") for n in payload)
