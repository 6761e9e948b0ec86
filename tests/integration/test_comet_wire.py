"""The fake Comet (tests/fakes/comet.py) against what the real comet_ml client sends over the wire:
the `comet upload` CLI with an offline archive, and an online experiment from `comet_ml.start()`,
each in its own process, pointed at the fake with COMET_URL_OVERRIDE. The in-process shortcut
`FakeComet.upload()` that the other suites use must land the same experiment as the wire does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.comet import Experiment, FakeComet, serve

KEY = "comet-test-key-0123456789"
COMET_CLI = Path(sys.executable).with_name("comet")

OFFLINE = textwrap.dedent(
    """\
    import sys
    from pathlib import Path

    import comet_ml

    out = Path(sys.argv[1])
    (out / "model").mkdir(parents=True)
    (out / "model" / "weights.bin").write_bytes(bytes(range(256)))
    exp = comet_ml.OfflineExperiment(
        workspace="acme", project_name="wire", offline_directory=str(out), auto_output_logging=False,
        log_code=False, log_env_details=False, log_git_metadata=False, log_git_patch=False, display_summary_level=0,
    )
    for step in range(5):
        exp.log_metric("loss", round(1.0 / (step + 1), 6), step=step)
    exp.log_metric("accuracy", 0.93, step=4)
    exp.log_parameters({"lr": 0.01, "batch_size": 32, "optimizer": "adam"})
    exp.log_other("git_sha", "deadbeef")
    exp.add_tags(["nightly", "spot"])
    exp.log_model("classifier", str(out / "model"))
    exp.end()
    print(exp.get_key())
    """
)

ONLINE = textwrap.dedent(
    """\
    import os
    import sys

    import comet_ml

    key, run, model_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    exp = comet_ml.start(
        api_key=os.environ["COMET_API_KEY"], workspace="acme", project_name="wire", experiment_key=key,
        mode="get_or_create", online=True,
        experiment_config=comet_ml.ExperimentConfig(
            auto_output_logging=False, log_code=False, log_env_details=False, log_git_metadata=False,
            log_git_patch=False, display_summary_level=0,
        ),
    )
    for step in range(3 * run, 3 * run + 3):  # a restarted spot job goes on where it stopped
        exp.log_metric("loss", round(1.0 / (step + 1), 6), step=step)
    exp.log_parameters({"lr": 0.01, "run": run})
    exp.log_other("git_sha", "deadbeef")
    exp.add_tags(["spot", f"run{run}"])
    exp.log_model("classifier", model_dir)
    exp.end()
    """
)


def comet_env(home: Path, url: str = "", key: str = KEY) -> dict[str, str]:
    """The environment of a comet_ml process: this one's without COMET_* settings, a HOME without a
    ~/.comet.config, and the fake as the server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMET_")}
    env.update(HOME=str(home), COMET_ERROR_TRACKING_ENABLE="false", COMET_HTTP_SESSION_RETRY_TOTAL="0")
    if url:
        env.update(COMET_API_KEY=key, COMET_URL_OVERRIDE=f"{url}/clientlib/", COMET_OFFLINE_DIRECTORY=str(home / "off"))
    return env


def upload(archive: Path, comet: FakeComet, *args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    env = comet_env(archive.parent, comet.url, key)
    cmd = [str(COMET_CLI), "upload", str(archive), *args]
    return subprocess.run(cmd, cwd=archive.parent, env=env, capture_output=True, text=True, timeout=60, check=False)


def summary(comet: FakeComet, key: str) -> dict[str, dict[str, Any]]:
    """GET experiment/metrics/summary, as comet_ml's APIExperiment.get_metrics_summary reads it."""
    req = urllib.request.Request(
        f"{comet.url}/api/rest/v2/experiment/metrics/summary?experimentKey={key}", headers={"Authorization": KEY}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return {v["name"]: v for v in json.load(resp)["values"]}


def logged(e: Experiment) -> dict[str, Any]:
    """What an experiment holds, the tags as a set (their order is that of a Python set in the client)."""
    return {"metrics": e.metrics, "params": e.params, "others": e.others, "tags": set(e.tags), "models": e.models}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An offline archive made by comet_ml.OfflineExperiment (experiment.json + messages.json + the model)."""
    out = tmp_path_factory.mktemp("offline")
    (out / "make.py").write_text(OFFLINE)
    proc = subprocess.run(
        [sys.executable, "make.py", str(out / "runs")],
        cwd=out,
        env=comet_env(out),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return out / "runs" / f"{proc.stdout.split()[-1]}.zip"


@pytest.fixture
def comet() -> Iterator[FakeComet]:
    fake = FakeComet(api_key=KEY)
    with serve(fake):
        yield fake


def test_the_comet_upload_cli_lands_what_the_in_process_upload_does(archive: Path, comet: FakeComet):
    proc = upload(archive, comet)
    assert proc.returncode == 0, proc.stderr
    assert comet.unhandled == []

    key = archive.stem
    assert list(comet.experiments) == [key]
    wire = comet.experiments[key]
    shortcut = FakeComet(api_key=KEY).upload(archive)
    assert (wire.key, wire.workspace, wire.project) == (shortcut.key, shortcut.workspace, shortcut.project)
    assert logged(wire) == logged(shortcut)
    assert (wire.start, wire.end) == (shortcut.start, shortcut.end)  # from status-report/offline-metadata

    # ... and it is what was logged
    assert [(s, v) for s, v, _ in wire.metrics["loss"]] == [(s, round(1.0 / (s + 1), 6)) for s in range(5)]
    assert [(s, v) for s, v, _ in wire.metrics["accuracy"]] == [(4, 0.93)]
    assert all(ts > 0 for pts in wire.metrics.values() for _, _, ts in pts)
    expected = {"lr": 0.01, "batch_size": 32, "optimizer": "adam"}
    assert {k: wire.params[k] for k in expected} == expected
    assert wire.others == {"git_sha": "deadbeef", "offline_experiment": True}  # the uploader's own log_other
    assert set(wire.tags) == {"nightly", "spot"}
    assert wire.models == {"classifier"}
    assert (wire.workspace, wire.project) == ("acme", "wire")
    loss = summary(comet, key)["loss"]
    assert (loss["valueMax"], loss["stepMax"], loss["valueMin"], loss["stepMin"]) == ("1.0", 0, "0.2", 4)
    assert (loss["valueCurrent"], loss["stepCurrent"]) == ("0.2", 4)

    # The wire route it took: gzip batches, a multipart model upload, the archive's times last.
    paths = [p for _, p, _ in comet.requests]
    clientlib = {p.removeprefix("/clientlib/") for p in paths}
    assert clientlib >= {
        "logger/add/run",
        "tags/add-tags-to-experiment",
        "status-report/update",
        "batch/logger/experiment/metric",
        "batch/logger/experiment/parameter",
        "asset/upload",
        "status-report/offline-metadata",
    }
    assert "/api/rest/v2/write/experiment/log-other" in paths
    assert all(status == 200 for _, status, _ in comet.answers)


def test_a_second_upload_is_refused_and_force_upload_makes_a_new_experiment(archive: Path, comet: FakeComet):
    assert upload(archive, comet).returncode == 0
    key = archive.stem

    again = upload(archive, comet)
    assert again.returncode == 1
    assert "already uploaded" in again.stdout + again.stderr
    assert ("/clientlib/logger/add/run", 400, 90999) in comet.answers
    assert list(comet.experiments) == [key]

    forced = upload(archive, comet, "--force-upload")
    assert forced.returncode == 0, forced.stderr
    assert comet.unhandled == []
    assert len(comet.experiments) == 2
    (new_key,) = set(comet.experiments) - {key}
    assert new_key != key
    assert f"/acme/wire/{new_key}" in forced.stdout + forced.stderr  # the URL the CLI prints
    original, copy = comet.experiments[key], comet.experiments[new_key]
    assert logged(copy) == logged(original)
    assert (copy.workspace, copy.project) == ("acme", "wire")
    assert copy.models == {"classifier"}
    assert [s for s, _, _ in copy.metrics["loss"]] == [0, 1, 2, 3, 4]


def test_a_wrong_api_key_fails_the_upload(archive: Path, comet: FakeComet):
    proc = upload(archive, comet, key="not-the-key-0123456789abc")
    assert proc.returncode == 1
    assert comet.experiments == {}
    assert [(m, p) for m, p, _ in comet.requests] == [("POST", "/clientlib/logger/add/run")]  # nothing more sent
    assert "invalid Comet API key" in proc.stderr  # 400 + 90212 is InvalidAPIKey (scripts/comet_upload.py:71-76)


def test_an_online_experiment_lands_and_a_restart_resumes_it(tmp_path: Path, comet: FakeComet):
    (tmp_path / "train.py").write_text(ONLINE)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(b"\0" * 64)
    key = "0123456789abcdef" * 2 + "01234567"  # 40 characters, as comet_ml.get_experiment_key makes them
    runs = []
    for run in (0, 1):  # the second is the spot job restarted with the same key
        start = len(comet.requests)
        proc = subprocess.run(
            [sys.executable, "train.py", key, str(run), str(tmp_path / "model")],
            cwd=tmp_path,
            env=comet_env(tmp_path, comet.url),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert "COMET ERROR" not in proc.stdout + proc.stderr
        assert "Could not send live data" not in proc.stdout + proc.stderr  # no fallback to an offline archive
        runs.append([p for _, p, _ in comet.requests[start:]])
    assert comet.unhandled == []

    # get_or_create probes with add/run (getOrCreateEnabled false): new → add/run again with true;
    # existing → 90999, then get/run resumes it (comet_start/experiment_factory.py:43-114).
    assert [p for p in runs[0] if p.startswith("/clientlib/logger/")] == ["/clientlib/logger/add/run"] * 2
    assert [p for p in runs[1] if p.startswith("/clientlib/logger/")] == [
        "/clientlib/logger/add/run",
        "/clientlib/logger/get/run",
    ]
    assert ("/clientlib/logger/add/run", 400, 90999) in comet.answers

    assert list(comet.experiments) == [key]  # one experiment, both runs in it
    e = comet.experiments[key]
    assert (e.workspace, e.project) == ("acme", "wire")
    assert [(s, v) for s, v, _ in e.metrics["loss"]] == [(s, round(1.0 / (s + 1), 6)) for s in range(6)]
    assert e.params["lr"] == 0.01 and e.params["run"] == 1  # the last run's value
    assert e.others == {"git_sha": "deadbeef"}
    assert set(e.tags) == {"spot", "run0", "run1"}
    assert e.models == {"classifier"}
    assert 0 < e.start < e.end
    loss = summary(comet, key)["loss"]
    assert (loss["stepCurrent"], loss["valueCurrent"], loss["valueMax"]) == (5, repr(round(1 / 6, 6)), "1.0")
    assert len(comet.notifications) == 1  # the "finished" e-mail of the new Experiment; a resumed one sends none
