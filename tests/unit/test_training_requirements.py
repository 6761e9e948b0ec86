"""requirements.txt in the source dir is installed before the script runs, as the SageMaker
training toolkit does, into a cached virtualenv on top of the configured interpreter.

Offline: the only requirement is a wheel built here by hand, and every requirements file starts
with --no-index so pip never looks at an index.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import zipfile
from pathlib import Path

import pytest

from mlops_ci.backends import TrainingResult, TrainingSpec
from mlops_ci.backends.local_training import (
    PIP_LOG_PREFIX,
    LocalTrainingBackend,
    ensure_venv,
    requirements_digest,
)
from tests.conftest import Project

DEP = "mlopsci_tinydep"

# Prints what the requirements venv must provide: the installed wheel, the interpreter it runs
# on, and which copy of pytest it sees (the configured interpreter's, not the one of the
# installation underneath a venv).
TRAIN = textwrap.dedent(
    """
    import sys

    import pytest

    try:
        import mlopsci_tinydep
        marker = mlopsci_tinydep.MARKER
    except ImportError:
        marker = "missing"
    print(f"tinydep={marker}")
    print(f"prefix={sys.prefix}")
    print(f"executable={sys.executable}")
    print(f"pytest={pytest.__file__}")
    """
)


def wheel(dest: Path, version: str) -> str:
    """A minimal pure-Python wheel of `DEP` whose module has MARKER = "v<version>"."""
    dist = f"{DEP}-{version}.dist-info"
    files = {
        f"{DEP}/__init__.py": f'MARKER = "v{version}"\n',
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {DEP}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    name = f"{DEP}-{version}-py3-none-any.whl"
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest / name, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return name


def source(tmp_path: Path, requirements: str | None) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "train.py").write_text(TRAIN)
    for version in ("0.1", "0.2"):
        wheel(src / "wheels", version)
    if requirements is not None:
        (src / "requirements.txt").write_text(requirements)
    return src


def reqs(version: str) -> str:
    # pytest is installed in the configured interpreter: pip must find it there, not install it
    return f"--no-index\n./wheels/{DEP}-{version}-py3-none-any.whl\npytest\n"


def spec(src: Path) -> TrainingSpec:
    return TrainingSpec(
        job_name="job-1",
        code_dir=src,
        entry_point="train.py",
        hyperparameters={},
        channels={},
        metric_regexes={},
        environment={},
        python=sys.executable,
        max_run=120,
    )


def train(backend: LocalTrainingBackend, src: Path, workdir: Path) -> tuple[TrainingResult, list[str], dict[str, str]]:
    lines: list[str] = []
    workdir.mkdir(parents=True)
    result = backend.run(spec(src), workdir, lines.append)
    output = {k: v for k, _, v in (ln.partition("=") for ln in lines if not ln.startswith(PIP_LOG_PREFIX))}
    return result, lines, output


def test_requirements_are_installed_once_per_requirements_and_interpreter(tmp_path: Path):
    cache = tmp_path / "venvs"
    src = source(tmp_path, reqs("0.1"))
    backend = LocalTrainingBackend(venv_cache=cache)

    result, lines, out = train(backend, src, tmp_path / "run1")
    assert result.exit_code == 0 and result.failure is None, lines
    key = requirements_digest(src, sys.executable)
    assert key is not None
    venv = cache / key[:16]
    assert out["tinydep"] == "v0.1"
    assert Path(out["prefix"]) == venv
    assert out["pytest"] == pytest.__file__  # the configured interpreter's packages stay visible
    pip_lines = [ln for ln in lines if ln.startswith(PIP_LOG_PREFIX)]
    assert any("-m pip install" in ln for ln in pip_lines)
    assert any("Successfully installed" in ln for ln in pip_lines)
    assert any("Requirement already satisfied: pytest" in ln for ln in pip_lines)
    log_text = result.log_path.read_text()
    assert f"{PIP_LOG_PREFIX}Successfully installed" in log_text and "tinydep=v0.1" in log_text
    # the venv is used where it was built, so the absolute paths pip writes into scripts hold
    subprocess.run([venv / "bin" / "pip", "--version"], check=True, capture_output=True)
    marker = os.stat(venv / "pyvenv.cfg")

    result, lines, out = train(backend, src, tmp_path / "run2")
    assert result.exit_code == 0 and out["tinydep"] == "v0.1"
    assert not any("-m pip install" in ln for ln in lines), "the cached venv is reused"
    assert any("reusing" in ln for ln in lines)
    again = os.stat(venv / "pyvenv.cfg")
    assert (again.st_ino, again.st_mtime_ns) == (marker.st_ino, marker.st_mtime_ns)

    (src / "requirements.txt").write_text(reqs("0.2"))
    result, lines, out = train(backend, src, tmp_path / "run3")
    assert result.exit_code == 0 and out["tinydep"] == "v0.2"
    assert Path(out["prefix"]) != venv and Path(out["prefix"]).parent == cache
    assert (venv / "pyvenv.cfg").is_file()  # the other requirements keep their venv
    # each venv is a symlink to the directory it was built in; no lock or partial build is left
    links = [venv, Path(out["prefix"])]
    assert sorted(p.name for p in cache.iterdir()) == sorted([p.name for p in links] + [os.readlink(p) for p in links])


def test_a_failing_install_fails_the_training_and_leaves_nothing_cached(tmp_path: Path):
    cache = tmp_path / "venvs"
    src = source(tmp_path, "--no-index\nmlopsci-no-such-package-4e1f\n")
    result, lines, out = train(LocalTrainingBackend(venv_cache=cache), src, tmp_path / "run")
    assert result.exit_code == 1
    assert result.failure is not None
    first = result.failure.splitlines()[0]
    assert first.startswith("requirements.txt: pip install -r requirements.txt failed with exit code 1")
    assert "mlopsci-no-such-package-4e1f" in first
    assert "last lines of its output" in result.failure
    assert (result.output_dir / "failure").read_text().strip() == result.failure
    assert "tinydep" not in out  # the script never ran
    assert any(ln.startswith(f"{PIP_LOG_PREFIX}ERROR:") for ln in lines)  # pip's own words are in the log
    key = requirements_digest(src, sys.executable)
    assert key is not None
    assert [p.name for p in cache.iterdir() if p.name.startswith(key[:16])] == []


def test_no_requirements_runs_the_configured_interpreter_and_creates_no_venv(tmp_path: Path):
    cache = tmp_path / "venvs"
    src = source(tmp_path, None)
    result, lines, out = train(LocalTrainingBackend(venv_cache=cache), src, tmp_path / "run")
    assert result.exit_code == 0, lines
    assert out["tinydep"] == "missing"
    assert out["executable"] == sys.executable and out["prefix"] == sys.prefix
    assert not any(ln.startswith(PIP_LOG_PREFIX) for ln in lines)
    assert not cache.exists()
    assert requirements_digest(src, sys.executable) is None


def test_concurrent_runs_build_the_venv_once_and_sweep_a_killed_build(tmp_path: Path):
    cache = tmp_path / "venvs"
    src = source(tmp_path, reqs("0.1"))
    key = requirements_digest(src, sys.executable)
    assert key is not None
    # what a build killed half-way leaves: a partial build directory, never the venv's name
    cache.mkdir()
    (cache / f"{key[:16]}.venv-killed" / "lib").mkdir(parents=True)
    notes: list[str] = []
    venvs: list[Path] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            venvs.append(ensure_venv(cache, src, sys.executable, dict(os.environ), 120, notes.append))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert venvs == [cache / key[:16]] * 2
    assert sum("-m pip install" in n for n in notes) == 1
    assert sum("built by a concurrent run" in n for n in notes) == 1
    assert not (cache / f"{key[:16]}.venv-killed").exists()


def test_cli_train_with_a_failing_requirements_txt_records_a_failed_run(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # where the default cache goes
    (project.path / "requirements.txt").write_text("--no-index\nmlopsci-no-such-package-4e1f\n")
    project.commit("needs a package that does not exist")
    code, _, err = project.cli("train")
    assert code == 6
    last = err.strip().splitlines()[-1]
    assert last.startswith("mlops-ci: error: training failed: requirements.txt: pip install -r requirements.txt")
    runs = json.loads(project.ok("runs", "--json"))
    assert [r["status"] for r in runs] == ["failed"]
    assert "mlopsci-no-such-package-4e1f" in runs[0]["failure"]
