"""The local model server against the real serving code of SageMaker's scikit-learn container.

The oracle (../shared/oracles/sagemaker-sklearn-container: the container's Flask app and the
sagemaker-containers release it pins, run without Docker) and mlops_ci.serving.model_server get
the same model directories and the same requests; status, Content-Type and body must agree
(numeric bodies after parsing, as float32). Startup must fail in both where it fails in one.
The differences kept by design are listed in docs/sagemaker.md and asserted at the end.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlops_ci.serving.contract import ERROR_CONTENT_TYPE, ContractError
from mlops_ci.serving.model_server import Model, respond

ROOT = Path(__file__).resolve().parents[2]
ORACLE = ROOT.parent / "shared" / "oracles" / "sagemaker-sklearn-container"
EXAMPLE = ROOT / "examples" / "classifier"

ROW = [0.1, -0.5, 1.2, 0.3, -1.1, 0.4, 0.0, -0.7]
ROWS = [ROW, [1.08, -2.33, -0.8, 1.53, -3.4, 0.43, -1.98, -3.15], [-0.3, 0.7, 0.2, -1.5, 0.9, 0.1, 2.2, 0.05]]
JSON, CSV, NPY = "application/json", "text/csv", "application/x-npy"


def _j(value: Any) -> bytes:
    return json.dumps(value).encode()


def _csv(rows: list[list[float]]) -> bytes:
    return "".join(",".join(str(v) for v in row) + "\n" for row in rows).encode()


def _npy(value: Any) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(value), allow_pickle=False)
    return buf.getvalue()


# -- the model directories (an extracted model.tar.gz: model files + code/) -------------------
ECHO = """
def model_fn(model_dir):
    return "echo"


def predict_fn(data, model):
    return data  # the decoded input as the default input_fn made it: dtype and shape show
"""

SCRIPT = """
import json
import os

import numpy as np


def model_fn(model_dir):
    with open(os.path.join(model_dir, "weights.json")) as fh:
        return json.load(fh)


def input_fn(content, content_type):
    kind = type(content).__name__  # str for exactly application/json and text/csv, else bytes
    if content_type.startswith("application/json"):
        return kind, np.asarray(json.loads(content), dtype=float)
    if content_type == "text/csv":
        return kind, np.asarray([[float(x) for x in line.split(",")] for line in content.splitlines()])
    raise ValueError(f"cannot read {content_type}")


def predict_fn(data, model):
    kind, rows = data
    return kind, (np.atleast_2d(rows) @ np.asarray(model["w"])).tolist()


def output_fn(prediction, accept):
    kind, scores = prediction
    if accept == "application/json":
        return json.dumps({"input": kind, "scores": scores}), accept
    if accept == "text/csv":
        return "\\n".join(str(s) for s in scores)  # no content type: Flask's default
    if accept == "application/x-npy":
        import io

        buf = io.BytesIO()
        np.save(buf, np.asarray(scores))
        return buf.getvalue(), accept
    raise ValueError(f"cannot write {accept}")
"""

TRANSFORM = """
import json


def model_fn(model_dir):
    return 2.0


def transform_fn(model, content, content_type, accept):
    rows = json.loads(content)
    return json.dumps([sum(r) * model for r in rows]), "text/plain"
"""

NO_MODEL_FN = """
def predict_fn(data, model):
    return data
"""


@dataclass(frozen=True)
class Kind:
    """A model directory: its entry point (serving.entry_point), the files in it, its environment."""

    entry: str | None
    files: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    sklearn: bool = False  # model.joblib trained from the example
    starts: bool = True  # does SageMaker's container start with it


EXAMPLE_INFERENCE = (EXAMPLE / "inference.py").read_text()
KINDS = {
    "example": Kind("inference.py", (("code/inference.py", EXAMPLE_INFERENCE),), sklearn=True),
    "example-csv-default": Kind(
        "inference.py",
        (("code/inference.py", EXAMPLE_INFERENCE),),
        env=(("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", CSV),),
        sklearn=True,
    ),
    "echo": Kind("inference.py", (("code/inference.py", ECHO),)),
    "script": Kind("inference.py", (("code/inference.py", SCRIPT), ("weights.json", '{"w": [0.5, -1.0, 2.0]}'))),
    "transform": Kind("inference.py", (("code/inference.py", TRANSFORM),)),
    "no-model-fn": Kind("inference.py", (("code/inference.py", NO_MODEL_FN),), sklearn=True, starts=False),
    # file names of their own: a stray `inference` module in the oracle's venv cannot stand in
    "subdir-entry": Kind(
        "serving/subdir_entry.py", (("code/serving/subdir_entry.py", EXAMPLE_INFERENCE),), sklearn=True, starts=False
    ),
    "no-entry-point": Kind(None, sklearn=True, starts=False),
}


@dataclass(frozen=True)
class Case:
    kind: str
    body: bytes
    content_type: str | None = JSON
    accept: str | None = JSON


CASES: dict[str, Case] = {
    # shapes
    "json-many-rows": Case("example", _j(ROWS)),
    "json-single-row": Case("example", _j([ROW])),
    "json-1d-list": Case("example", _j(ROW)),
    "json-instances": Case("example", _j({"instances": ROWS})),
    "csv-many-rows": Case("example", _csv(ROWS), CSV),
    "csv-single-row": Case("example", _csv([ROW]), CSV),
    "csv-quoted-values": Case("example", b'"0.1",-0.5,1.2,0.3,-1.1,0.4,0.0,-0.7\n1,2,3,4,5,6,7,8\n', CSV),
    "npy-many-rows": Case("example", _npy(ROWS), NPY),
    # content types
    "no-content-type": Case("example", _j(ROWS), None),
    "json-charset-utf8": Case("example", _j(ROWS), "application/json; charset=utf-8"),
    "unsupported-content-type": Case("example", _j(ROWS), "image/png"),
    "content-type-upper-case": Case("example", _j(ROWS), "Application/JSON"),
    # accepts
    "accept-none": Case("example", _j(ROWS), JSON, None),
    "accept-any": Case("example", _j(ROWS), JSON, "*/*"),
    "accept-csv": Case("example", _j(ROWS), JSON, CSV),
    "accept-npy": Case("example", _j(ROWS), JSON, NPY),
    "accept-multi-value": Case("example", _j(ROWS), JSON, "application/json, text/csv"),
    "accept-with-quality": Case("example", _j(ROWS), JSON, "application/json;q=0.9"),
    "accept-unsupported": Case("example", _j(ROWS), JSON, "application/xml"),
    "csv-in-csv-out": Case("example", _csv(ROWS), CSV, CSV),
    # malformed bodies
    "json-malformed": Case("example", b"{not json"),
    "json-a-string": Case("example", b'"a string"'),
    "json-empty-body": Case("example", b""),
    "json-nested-100000-deep": Case("example", b"[" * 100_000 + b"]" * 100_000),
    "csv-non-numeric": Case("example", b"1,2,3,4,5,6,7,8\n1,2,3,x,5,6,7,8\n", CSV),
    "csv-ragged-rows": Case("example", b"1,2,3,4,5,6,7,8\n1,2\n", CSV),
    "csv-empty-body": Case("example", b"", CSV),
    "npy-garbage": Case("example", b"\x00\x01\x02", NPY),
    "wrong-feature-count": Case("example", _j([[1, 2, 3]])),
    # SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT
    "default-accept-csv-accept-none": Case("example-csv-default", _j(ROWS), JSON, None),
    "default-accept-csv-accept-any": Case("example-csv-default", _j(ROWS), JSON, "*/*"),
    "default-accept-csv-accept-json": Case("example-csv-default", _j(ROWS), JSON, JSON),
    # what the default input_fn makes of a body (float32 for JSON and CSV, NPY as sent)
    "float32-json": Case("echo", _j([[0.1, 1e-8, 3.3, 16777217]])),
    "float32-csv": Case("echo", b"0.1,1e-8,3.3,16777217\n0.2,0.3,0.4,0.5\n", CSV),
    "float32-csv-out": Case("echo", b"0.1,1e-8\n0.2,0.3\n", CSV, CSV),
    "npy-float64-kept": Case("echo", _npy([[0.1, 1e-8]]), NPY),
    "npy-out": Case("echo", _j([[0.1, 2.5]]), JSON, NPY),
    "json-booleans-and-ints": Case("echo", _j([[1, True, False, 7]])),
    "csv-one-column-squeezed": Case("echo", b"1\n2\n3\n", CSV),
    "csv-one-value-0d": Case("echo", b"5\n", CSV),
    "csv-one-value-0d-csv-out": Case("echo", b"5\n", CSV, CSV),
    "json-scalar": Case("echo", b"4.5"),
    # a script with all four hooks
    "script-json": Case("script", _j([[1, 2, 3], [0, 0, 1]])),
    "script-json-charset": Case("script", _j([[1, 2, 3]]), "application/json; charset=utf-8"),
    "script-csv-out-no-content-type": Case("script", b"1,2,3\n4,5,6", CSV, CSV),
    "script-npy-out": Case("script", _j([[1, 2, 3]]), JSON, NPY),
    "script-input-fn-raises": Case("script", b"\x89PNG", "image/png"),
    "script-output-fn-raises": Case("script", _j([[1, 2, 3]]), JSON, "application/xml"),
    "script-accept-any": Case("script", _j([[1, 2, 3]]), JSON, "*/*"),
    # transform_fn
    "transform-fn": Case("transform", _j([[1, 2], [3, 4]])),
    "transform-fn-raises": Case("transform", b"{not json"),
    # entry points the container cannot start with
    "no-model-fn": Case("no-model-fn", _j(ROWS)),
    "entry-point-in-subdirectory": Case("subdir-entry", _j(ROWS)),
    "no-entry-point": Case("no-entry-point", _j(ROWS)),
}


# -- building the model directories ------------------------------------------------------------
def _train_example(path: Path) -> None:
    """The example's own model (train.py's loader, model and joblib file), with fewer trees."""
    import joblib
    from sklearn.ensemble import GradientBoostingClassifier

    spec = importlib.util.spec_from_file_location("example_train", EXAMPLE / "train.py")
    assert spec and spec.loader
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    x, y = train.load(EXAMPLE / "data" / "train")
    model = GradientBoostingClassifier(n_estimators=5, max_depth=3, random_state=0).fit(x, y)
    joblib.dump(model, path)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("serving-oracle")
    joblib_file = base / "model.joblib"
    _train_example(joblib_file)
    dirs = {}
    for name, kind in KINDS.items():
        d = base / name / "model"  # its own parent: the oracle keeps its /opt/ml beside it
        (d / "code").mkdir(parents=True)
        if kind.sklearn:
            (d / "model.joblib").write_bytes(joblib_file.read_bytes())
        for rel, text in kind.files:
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_text(text)
        dirs[name] = d
    return dirs


# -- the oracle ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def oracle_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    if not (ORACLE / "setup").is_file():
        pytest.skip(f"the container oracle is not here ({ORACLE.relative_to(ROOT.parent)} beside the repository)")
    proc = subprocess.run([str(ORACLE / "setup")], capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(f"the oracle's setup failed ({proc.returncode}): {proc.stderr[-2000:]}")
    python = proc.stdout.strip().splitlines()[-1]
    # The container pip-installs code/ when the entry point is not importable; here that would
    # land in the shared venv, for the next model to import. A throw-away venv that sees the
    # oracle's packages (a .pth file) takes those installs instead.
    overlay = tmp_path_factory.mktemp("oracle-venv")
    subprocess.run([python, "-m", "venv", "--without-pip", str(overlay)], check=True, timeout=120)
    ask = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    theirs = subprocess.run([python, "-c", ask], capture_output=True, text=True, check=True).stdout.strip()
    ours = subprocess.run([str(overlay / "bin" / "python"), "-c", ask], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    (Path(ours) / "oracle.pth").write_text(theirs + "\n")
    return str(overlay / "bin" / "python")


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes


@pytest.fixture(scope="module")
def oracle(oracle_python: str, model_dirs: dict[str, Path]) -> dict[str, Answer | str]:
    """Every case's answer from the container's code: an Answer, or why it did not start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGEMAKER_", "SM_", "PYTHON", "PIP_"))}
    procs = {}
    for name, kind in KINDS.items():
        d = model_dirs[name]
        entry = kind.entry or "mlops_ci_no_entry_point.py"  # unset on SageMaker: nothing to import
        lines = [
            json.dumps(
                {"body_b64": base64.b64encode(c.body).decode(), "content_type": c.content_type, "accept": c.accept}
            )
            for c in CASES.values()
            if c.kind == name
        ]
        kind_env = {
            **env,
            **dict(kind.env),
            "SAGEMAKER_PROGRAM": Path(entry).name,  # as the SageMaker backend sets it
            # the entry point is imported from code/ without the container's pip install of
            # code/ (the same file; quicker); where it is not there, the install runs as there
            "PYTHONPATH": str(d / "code"),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }
        (d.parent / "requests.jsonl").write_text("\n".join(lines) + "\n")
        # files, not pipes: a traceback on stderr or a long answer never blocks the other side
        with open(d.parent / "requests.jsonl", "rb") as fin, open(d.parent / "answers.jsonl", "wb") as fout, \
                open(d.parent / "oracle.log", "wb") as ferr:  # fmt: skip
            procs[name] = subprocess.Popen(
                [oracle_python, str(ORACLE / "oracle.py"), str(d)], stdin=fin, stdout=fout, stderr=ferr,
                env=kind_env, cwd=d.parent,
            )  # fmt: skip
    answers: dict[str, Answer | str] = {}
    for name, proc in procs.items():
        proc.wait(timeout=120)
        d = model_dirs[name].parent
        out, err = (d / "answers.jsonl").read_bytes(), (d / "oracle.log").read_bytes()
        got = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
        ids = [cid for cid, c in CASES.items() if c.kind == name]
        if proc.returncode != 0 and not got:
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            answers.update(dict.fromkeys(ids, f"did not start: {tail[0]}"))
            continue
        assert proc.returncode == 0 and len(got) == len(ids), (name, proc.returncode, err.decode()[-3000:])
        for cid, g in zip(ids, got, strict=True):
            answers[cid] = Answer(g["status"], g["content_type"], base64.b64decode(g["body_b64"]))
    return answers


# -- the local model server, in process ------------------------------------------------------------
@pytest.fixture(scope="module")
def local_models(model_dirs: dict[str, Path]) -> dict[str, Model | str]:
    models: dict[str, Model | str] = {}
    for name, kind in KINDS.items():
        with pytest.MonkeyPatch.context() as mp:
            for k, v in kind.env:
                mp.setenv(k, v)
            try:
                models[name] = Model(model_dirs[name], kind.entry)
            except ContractError as exc:
                models[name] = f"did not start: {exc}"
    return models


def local_answer(models: dict[str, Model | str], case: Case, monkeypatch: pytest.MonkeyPatch) -> Answer | str:
    model = models[case.kind]
    if isinstance(model, str):
        return model
    for k, v in KINDS[case.kind].env:
        monkeypatch.setenv(k, v)
    if not KINDS[case.kind].env:
        monkeypatch.delenv("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", raising=False)
    return Answer(*respond(model, case.body, case.content_type, case.accept))


# -- comparing ------------------------------------------------------------------------------------
def _as_float32(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _as_float32(v) for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(v, (list, int, float)) for v in value):
        try:
            return np.asarray(value, dtype=np.float32).tolist()
        except ValueError:
            return [_as_float32(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(np.float32(value))
    return value


def parsed(answer: Answer) -> Any:
    """The body as data: numbers as float32, error pages by their title."""
    ctype = answer.content_type.split(";")[0]
    if answer.status >= 400:
        assert answer.content_type == ERROR_CONTENT_TYPE
        return "500 page" if b"<title>500 Internal Server Error</title>" in answer.body else answer.body
    if ctype == JSON:
        return _as_float32(json.loads(answer.body))
    if ctype == CSV:
        return [[float(np.float32(float(x))) for x in line.split(",")] for line in answer.body.decode().splitlines()]
    if ctype == NPY:
        arr = np.load(io.BytesIO(answer.body), allow_pickle=False)
        return (str(arr.dtype), arr.shape, arr.astype(np.float32).tolist())
    return answer.body


@pytest.mark.parametrize("case_id", list(CASES))
def test_the_local_server_answers_as_the_container(
    case_id: str, oracle: dict[str, Answer | str], local_models: dict[str, Model | str], monkeypatch: pytest.MonkeyPatch
):
    case = CASES[case_id]
    theirs, ours = oracle[case_id], local_answer(local_models, case, monkeypatch)
    if isinstance(theirs, str) or isinstance(ours, str):
        assert isinstance(theirs, str) and isinstance(ours, str), f"container: {theirs!r}; local: {ours!r}"
        assert not KINDS[case.kind].starts
        assert "SageMaker" in ours and "\n" not in ours  # one line that says why, and what to do
        return
    assert (ours.status, ours.content_type) == (theirs.status, theirs.content_type), (ours.body[:300], theirs.body)
    assert parsed(ours) == parsed(theirs)
    if ours.status == 200:
        assert ours.body == theirs.body  # byte for byte, not only the same numbers


def test_every_kind_of_model_is_exercised():
    assert {c.kind for c in CASES.values()} == set(KINDS)
    assert len(CASES) >= 40


# -- the same through the real server process (its documented startup) -------------------------
def _tar(model_dir: Path, dest: Path) -> str:
    with tarfile.open(dest, "w:gz") as tar:
        for f in sorted(model_dir.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                tar.add(f, arcname=f.relative_to(model_dir).as_posix())
    return hashlib.sha256(dest.read_bytes()).hexdigest()


def _server(tmp_path: Path, model_dir: Path, entry: str | None, env: dict[str, str]) -> subprocess.Popen[bytes]:
    artifact = tmp_path / "model.tar.gz"
    digest = _tar(model_dir, artifact)
    argv = [sys.executable, "-m", "mlops_ci.serving.model_server", "--artifact", str(artifact), "--sha256", digest,
            "--workdir", str(tmp_path / "work"), "--ready-file", str(tmp_path / "ready")]  # fmt: skip
    if entry:
        argv += ["--entry", entry]
    full_env = {**os.environ, "SAGEMAKER_MODEL_SERVER_WORKERS": "1", **env}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), full_env.get("PYTHONPATH", "")) if p)
    with open(tmp_path / "server.log", "wb") as log:
        return subprocess.Popen(argv, env=full_env, stdout=log, stderr=log)


@pytest.mark.parametrize("kind", ["example", "example-csv-default", "script"])
def test_the_server_process_answers_as_in_process(
    kind: str, tmp_path: Path, model_dirs: dict[str, Path], local_models: dict[str, Model | str],
    monkeypatch: pytest.MonkeyPatch,
):  # fmt: skip
    proc = _server(tmp_path, model_dirs[kind], KINDS[kind].entry, dict(KINDS[kind].env))
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "ready").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.05)
        port = json.loads((tmp_path / "ready").read_text())["port"]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for case_id, case in CASES.items():
            if case.kind != kind:
                continue
            headers = {k: v for k, v in (("Content-Type", case.content_type), ("Accept", case.accept)) if v}
            conn.request("POST", "/invocations", body=case.body, headers=headers)
            resp = conn.getresponse()
            got = Answer(resp.status, resp.getheader("Content-Type", ""), resp.read())
            want = local_answer(local_models, case, monkeypatch)
            assert isinstance(want, Answer)
            assert (got.status, got.content_type, got.body) == (want.status, want.content_type, want.body), case_id
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("kind", ["no-model-fn", "no-entry-point"])
def test_the_server_process_does_not_start_where_the_container_does_not(
    kind: str, tmp_path: Path, model_dirs: dict[str, Path]
):
    proc = _server(tmp_path, model_dirs[kind], KINDS[kind].entry, {})
    assert proc.wait(timeout=60) == 2
    lines = (tmp_path / "server.log").read_text().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("the model server cannot start: ") and "SageMaker" in lines[0]


def test_an_entry_point_in_a_subdirectory_is_refused_at_config_time(tmp_path: Path):
    from mlops_ci.config import parse
    from mlops_ci.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        parse("project: p\nserving:\n  entry_point: serving/inference.py\n", "mlops-ci.yaml", str(tmp_path))
    assert "SageMaker imports the entry point by file name from code/" in str(err.value)
    assert err.value.line == 3
