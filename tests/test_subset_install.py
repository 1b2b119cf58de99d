"""A subset install works: with only kdvision-core and kdvision-classification installed, the classification entry
scripts train (DFAD and a data-free baseline) and record the installed distributions' versions.

The subset is simulated in a subprocess by a ``sitecustomize.py`` on PYTHONPATH: it drops the other
distributions' source folders from ``sys.path`` (they are editable installs), puts a finder first on
``sys.meta_path`` that raises ModuleNotFoundError for their modules, and filters their metadata out of
``importlib.metadata`` (so their ``kdvision.plugins`` entry points and versions disappear too), as if they had
never been installed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib

import pytest
import yaml

from kdv_testutils import REPO

pytestmark = pytest.mark.slow

KEPT = ("core", "classification")
HIDDEN = ("segmentation", "detection", "pretraining", "tools")


def _project(root) -> dict:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]


VERSIONS = {_project(REPO / k)["name"]: _project(REPO / k)["version"] for k in KEPT}
HIDDEN_DISTS = [_project(REPO / k)["name"] for k in HIDDEN] + [_project(REPO)["name"]]  # + the meta-package
HIDDEN_MODULES = [f"kdvision.{k}" for k in HIDDEN] + ["kdvision.info"]
HIDDEN_PATHS = [str(REPO / k / "src") for k in HIDDEN] + [str(REPO / "src")]

SITECUSTOMIZE = '''
"""Test harness (tests/test_subset_install.py): hide some kdvision distributions from this interpreter."""
import importlib.abc
import importlib.metadata as _md
import os
import re
import sys

_cfg = {cfg!r}
_canon = lambda name: re.sub(r"[-_.]+", "-", name or "").lower()
_dists = {{_canon(d) for d in _cfg["dists"]}} if _cfg["hide_metadata"] else set()
_paths = {{os.path.normpath(p) for p in _cfg["paths"]}}
sys.path[:] = [p for p in sys.path if os.path.normpath(os.path.abspath(p or os.curdir)) not in _paths]


def _hidden(name):
    return any(name == m or name.startswith(m + ".") for m in _cfg["modules"])


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if _hidden(name):
            raise ModuleNotFoundError(f"No module named {{name!r}} (not installed in this subset)", name=name)
        return None


class _HideMetadata:
    """Wraps PathFinder: imports unchanged, the hidden distributions' metadata filtered out."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, attr):
        return getattr(self._inner, attr)

    def find_distributions(self, *args, **kwargs):
        return (d for d in self._inner.find_distributions(*args, **kwargs) if _canon(d.name) not in _dists)


sys.meta_path[:] = [_HideMetadata(f) if hasattr(f, "find_distributions") else f for f in sys.meta_path]
sys.meta_path.insert(0, _Blocker())
'''

PROBE = textwrap.dedent('''
    import importlib, importlib.metadata as md, json, sys, warnings
    mods = json.loads(sys.argv[1])
    imported = []
    for m in mods:
        try:
            importlib.import_module(m)
            imported.append(m)
        except ModuleNotFoundError:
            pass
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from kdvision.core.models import create_model, list_models
        models = list_models(task=None)
        create_model("lenet5")
    from kdvision.core.versions import package_versions
    print(json.dumps({
        "imported": imported,
        "dists": sorted(d.name for d in md.distributions() if d.name.lower().startswith("kdvision")),
        "plugins": sorted(ep.value for ep in md.entry_points(group="kdvision.plugins")),
        "models": models,
        "warnings": [str(w.message) for w in caught if "plugin" in str(w.message)],
        "versions": package_versions(),
    }))
''')


def subset_env(tmp_path, hide_metadata: bool = True) -> dict[str, str]:
    site = tmp_path / ("site" if hide_metadata else "site_stale")
    site.mkdir()
    cfg = {"modules": HIDDEN_MODULES, "dists": HIDDEN_DISTS, "paths": HIDDEN_PATHS, "hide_metadata": hide_metadata}
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(cfg=cfg))
    path = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def probe(env) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(HIDDEN_MODULES)], capture_output=True,
                          text=True, timeout=120, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_harness_hides_the_other_distributions(tmp_path):
    seen = probe(subset_env(tmp_path))
    assert seen["imported"] == [], "hidden modules are still importable"
    assert sorted(seen["dists"]) == sorted(VERSIONS), seen["dists"]
    assert seen["plugins"] == [] and seen["warnings"] == []
    assert "lenet5" in seen["models"] and not any("deeplab" in m for m in seen["models"])
    assert {k: v for k, v in seen["versions"].items() if k.startswith("kdvision")} == VERSIONS


def test_a_plugin_whose_package_is_gone_is_skipped_with_a_warning(tmp_path):
    """Stale metadata (an entry point whose module cannot be imported) must not break core's registries."""
    seen = probe(subset_env(tmp_path, hide_metadata=False))
    assert seen["imported"] == []
    assert "kdvision.segmentation" in seen["plugins"]
    assert any("segmentation" in w for w in seen["warnings"]), seen["warnings"]
    assert "lenet5" in seen["models"]


def run_entry(script: str, *args, env) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / script), *map(str, args), "--device", "cpu", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert proc.returncode == 0, f"{script} failed in the core+classification subset:\n{proc.stdout}\n{proc.stderr}"
    assert "kdvision plugin" not in proc.stderr, proc.stderr
    return proc


def assert_run_directory(run, method: str) -> None:
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == method
    versions = yaml.safe_load((run / "config.yaml").read_text())["_run"]["versions"]
    assert {k: v for k, v in versions.items() if k.startswith("kdvision")} == VERSIONS, versions


def test_dfad_and_data_free_runs_with_core_and_classification_only(tmp_path):
    env = subset_env(tmp_path)
    run_entry("classification/train_teacher.py", "--dataset", "digits", "--model", "lenet5",
                        "--epochs", "1", "--iters-per-epoch", "3", "--batch_size", "32",
                        "--output", tmp_path / "teacher", "--data_root", tmp_path, env=env)
    assert_run_directory(tmp_path / "teacher", "supervised")
    weights = tmp_path / "teacher" / "digits-lenet5.pt"  # the teacher script's weights file, DFAD's format
    assert weights.is_file()

    run_entry("classification/dfad_mnist.py", "--dataset", "digits", "--ckpt", weights, "--epochs", "1",
              "--iters-per-epoch", "2", "--batch_size", "16", "--set", "ngf=8",
              "--output", tmp_path / "dfad", "--data_root", tmp_path, env=env)
    assert_run_directory(tmp_path / "dfad", "dfad")

    run_entry("classification/kd_datafree.py", "--method", "dfq", "--dataset", "digits", "--teacher", "lenet5",
              "--student", "lenet5_half", "--teacher_weights", weights, "--epochs", "1", "--kd_steps", "2",
              "--ep_steps", "2", "--g_steps", "2", "--batch_size", "8", "--synthesis_batch_size", "8",
              "--ngf", "8", "--nz", "16", "--output", tmp_path / "dfq", "--data_root", tmp_path, env=env)
    assert_run_directory(tmp_path / "dfq", "dfq")
