"""A package that installs anywhere: the wheel built from the repository ships l2reg with
l2reg.cli (the repository's cli/) and l2reg.conf (its conf/, YAML as package data), puts no generic
top-level name (`cli`, `conf`) into site-packages, and `l2sweep` runs from another folder."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
QUICK = ["train.epochs=1", "train.batch_size=64", "train.eval_batch_size=100"]


def repo_files() -> dict[str, Path]:
    """What the wheel must hold: every module of l2reg/ and cli/, the C source of l2reg/ (the max-pool's
    kernels, built on first use) and every YAML of conf/, by wheel path."""
    wanted = {}
    for folder, package, pattern in (("l2reg", "l2reg", "*.py"), ("l2reg", "l2reg", "*.c"),
                                     ("cli", "l2reg/cli", "*.py"), ("conf", "l2reg/conf", "*.yaml")):
        for path in (REPO / folder).rglob(pattern):
            if "__pycache__" not in path.parts:
                wanted[f"{package}/{path.relative_to(REPO / folder).as_posix()}"] = path
    return wanted


def run(command, cwd, env=None, timeout=300):
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel` of a copy of the repository's sources (the build leaves build/ and *.egg-info
    behind: never in the working tree)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("l2reg", "cli", "conf"):
        shutil.copytree(REPO / folder, source / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", source, "--no-deps", "--no-build-isolation", "-q", "-w",
         root / "dist"], cwd=root)
    [built] = (root / "dist").glob("l2sweep-*.whl")
    return built


def test_the_wheel_holds_l2reg_with_cli_and_conf_and_nothing_else(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        top_level = archive.read(f"{dist_info}/top_level.txt").decode().split()
    assert {name.split("/")[0] for name in names} == {"l2reg", dist_info}
    assert top_level == ["l2reg"]
    missing = sorted(set(repo_files()) - names)
    assert not missing, f"not in the wheel (add the package to [tool.setuptools] packages): {missing}"
    assert {"l2reg/conf/config.yaml", "l2reg/conf/schedule/exponential.yaml",
            "l2reg/conf/experiment/ablation.yaml", "l2reg/cli/main.py"} <= names
    assert "[console_scripts]\nl2sweep = l2reg.cli.main:main" in entry_points


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("install") / "site"
    run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", target, wheel], cwd=target.parent)
    return target


def installed_env(site: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(site)}


def test_the_installed_package_has_no_generic_top_level_names(site):
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info")) == ["bin", "l2reg"]
    assert not (site / "cli").exists() and not (site / "conf").exists()
    assert (site / "l2reg" / "conf" / "config.yaml").is_file()
    assert (site / "l2reg" / "cli" / "main.py").is_file()
    assert (site / "bin" / "l2sweep").is_file()


def test_the_installed_package_finds_its_own_config(site, tmp_path):
    probe = ("import l2reg, l2reg.cli.main, l2reg.config as c; "
             "print(l2reg.__file__); print(l2reg.cli.main.__file__); print(c.default_config_dir())")
    lines = run([sys.executable, "-c", probe], cwd=tmp_path, env=installed_env(site)).stdout.splitlines()
    assert lines == [str(site / "l2reg" / "__init__.py"), str(site / "l2reg" / "cli" / "main.py"),
                     str(site / "l2reg" / "conf")]


def test_the_installed_command_runs_from_another_folder(site, tiny_mnist, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    l2sweep = site / "bin" / "l2sweep"
    env = installed_env(site)
    helped = run([l2sweep, "--help"], cwd=elsewhere, env=env)
    assert "Usage: l2sweep" in helped.stdout
    planned = run([l2sweep, "run", "--dry-run", "experiment=ablation-quick", "results_dir=res"], cwd=elsewhere, env=env)
    assert planned.stdout.splitlines()[0] == "12 planned runs -> res/ablation-quick (0 done)"
    done = run([l2sweep, "run", "alpha=1e-3", "seeds=1", f"data.root={tiny_mnist}", "results_dir=res", "name=w",
                *QUICK], cwd=elsewhere, env=env)
    folder = elsewhere / "res" / "w"
    assert sorted(p.name for p in folder.iterdir()) == ["plots", "report.html", "report.md", "runs", "runs.csv",
                                                        "summary.csv", "sweep.json", "verdict.json"], done.stderr
    runs = pd.read_csv(folder / "runs.csv")
    assert len(runs) == 2 and set(runs["status"]) == {"ok"}
    invocation = json.loads((folder / "sweep.json").read_text())["invocations"][0]
    assert invocation["git"]["commit"] == "unknown"  # an installed package is not a git checkout
    assert invocation["environment"]["versions"]["l2sweep"] == "0.1.0"
    assert not (REPO / "results" / "w").exists()


def test_the_editable_install_maps_the_same_names(tmp_path):
    """The development install (pip install -e) resolves l2reg.cli and l2reg.conf to the repository's
    cli/ and conf/, and leaves no top-level `cli` importable outside the repository."""
    probe = ("import importlib.util, l2reg.cli.main, l2reg.config as c; print(l2reg.cli.main.__file__); "
             "print(c.default_config_dir()); print(importlib.util.find_spec('cli'))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    lines = run([sys.executable, "-c", probe], cwd=tmp_path, env=env).stdout.splitlines()
    assert lines == [str(REPO / "cli" / "main.py"), str(REPO / "conf"), "None"]
