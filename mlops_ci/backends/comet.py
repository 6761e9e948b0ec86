"""Comet: every run is a Comet experiment tied to its commit; the PR report reads Comet's numbers.

Imported only with `tracking.backend: comet` (`pip install mlops-ci[comet]`). The API key is read
from the environment variable named by `tracking.api_key_env` and only ever passed on through
environments (comet_ml's client, the training job); it is never logged, recorded or rendered.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..compare import downsample
from ..config import Config, MetricGoal
from ..errors import BadCredentials, ConfigError, MlopsCiError, NotFound, Transient
from ..records import ModelVersion, Run

CLOUD = "https://www.comet.com"
SYSTEM_METRICS = ("sys.", "process duration")  # logged by comet_ml itself, not by the model
AUTO_PARAMS = ("curr_step", "curr_epoch")  # likewise
MAX_POINTS = 2000


def _quiet_comet(env: Mapping[str, str]) -> None:
    # comet_ml would report its own errors to a third-party service: mlops-ci talks only to the
    # services the user configured.
    os.environ["COMET_ERROR_TRACKING_ENABLE"] = "false"
    if env.get("COMET_URL_OVERRIDE"):
        os.environ["COMET_URL_OVERRIDE"] = env["COMET_URL_OVERRIDE"]


class Comet:
    def __init__(self, cfg: Config, env: Mapping[str, str]):
        t = cfg.tracking
        self.cfg, self.t, self.env = cfg, t, env
        assert t.workspace is not None
        self.workspace: str = t.workspace
        self.project: str = t.project_name or cfg.project
        self.api_key: str | None = env.get(t.api_key_env) or None
        if t.mode == "online" and not self.api_key:
            raise ConfigError(f"tracking.mode: online needs the Comet API key in ${t.api_key_env}; set it (a secret)")
        self.online = t.mode == "online" or (t.mode == "auto" and self.api_key is not None)
        override = env.get("COMET_URL_OVERRIDE", "")
        self.server = override.split("/clientlib")[0].rstrip("/") if override else CLOUD
        self._api: Any = None
        self._found: dict[tuple[str, str], Any] = {}  # (experiment key, sha) → APIExperiment, per invocation

    # -- linking a run ------------------------------------------------------------------------
    def experiment_key(self, job_name: str) -> str:
        """Known before the experiment exists: the job gets it, the run record keeps it."""
        return hashlib.sha256(f"{self.workspace}/{self.project}/{job_name}".encode()).hexdigest()[:32]

    def job_env(self, key: str, provenance: Mapping[str, str], offline_dir: str) -> dict[str, str]:
        """What the training job needs to create its experiment in the right place."""
        env = {
            "COMET_WORKSPACE": self.workspace,
            "COMET_PROJECT_NAME": self.project,
            "MLOPS_CI_COMET_EXPERIMENT_KEY": key,
            "COMET_EXPERIMENT_KEY": key,  # comet_ml's own setting: a script's own experiment gets the key too
            "COMET_ERROR_TRACKING_ENABLE": "false",
            "COMET_OFFLINE_DIRECTORY": offline_dir,
            **{k: v for k, v in provenance.items() if v},
        }
        if self.t.model_name:
            env["MLOPS_CI_COMET_MODEL_NAME"] = self.t.model_name
        if self.online:
            assert self.api_key is not None
            env["COMET_API_KEY"] = self.api_key
            if self.env.get("COMET_URL_OVERRIDE"):
                env["COMET_URL_OVERRIDE"] = self.env["COMET_URL_OVERRIDE"]
        else:
            env["COMET_MODE"] = "offline"
            env["COMET_START_ONLINE"] = "false"  # comet_ml.start() writes an offline archive
        return env

    def url(self, key: str) -> str:
        return f"{self.server}/{self.workspace}/{self.project}/{key}"

    def compare_url(self, baseline: str, head: str) -> str:
        return self.t.compare_url.format(
            server=self.server, workspace=self.workspace, project=self.project, baseline=baseline, head=head
        )

    def collect(self, key: str, output_dir: Path, keep: Path) -> dict[str, str]:
        """After a run: links for the record; an offline archive is kept under `keep`."""
        links = {"comet_experiment_key": key}
        # `<key>.zip`, or `<key>-<suffix>.zip` when comet_ml.start() named it
        found = sorted((output_dir / "data" / "comet").glob(f"{key}*.zip"), key=lambda p: p.stat().st_mtime)
        if found:
            archive = found[-1]
            keep.mkdir(parents=True, exist_ok=True)
            dest = keep / f"{key}.zip"
            shutil.copyfile(archive, dest)
            links["comet_archive"] = str(dest)
        if self.online:
            links["comet"] = self.url(key)
        return links

    # -- reading ------------------------------------------------------------------------------
    def api(self) -> Any:
        if self._api is None:
            _quiet_comet(self.env)
            import comet_ml

            api = comet_ml.API(api_key=self.api_key, cache=True)
            try:
                project = api.get_project(self.workspace, self.project)
            except Exception as exc:  # noqa: BLE001 - comet_ml raises its own REST errors and requests' errors
                raise self._error(exc, f"open project {self.workspace}/{self.project}") from None
            if project is None:
                raise ConfigError(
                    f"Comet has no project '{self.project}' in workspace '{self.workspace}'; fix tracking.workspace "
                    "/ tracking.project_name (or check the key's access to that workspace)"
                )
            self._api = api
        return self._api

    def _error(self, exc: Exception, what: str) -> MlopsCiError:
        status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
        text = str(exc)
        if status in (401, 403) or "Invalid apiKey" in text or "api key" in text.lower():
            return BadCredentials(
                f"Comet rejected the API key in ${self.t.api_key_env} while trying to {what}; set a valid key"
            )
        if isinstance(status, int) and 400 <= status < 500:
            body = getattr(getattr(exc, "response", None), "text", "") or ""
            try:
                detail = str(json.loads(body).get("msg") or body)
            except ValueError:
                detail = body
            if status == 404:
                return NotFound(f"Comet found nothing while trying to {what}: {detail[:300]}")
            return MlopsCiError(f"Comet refused to {what}: {detail[:300] or status}")
        return Transient(f"Comet did not answer while trying to {what} ({type(exc).__name__}); retry later")

    def find(self, run: Run) -> Any:
        """The run's experiment: by its recorded key, else by its commit (logged as git_sha)."""
        key = run.links.get("comet_experiment_key", "")
        cache = (key, run.sha)
        if cache in self._found:
            return self._found[cache]
        api = self.api()
        found = None
        try:
            if key:
                found = api.get_experiment_by_key(key)
            if found is None:
                from comet_ml.api import Other

                hits = api.query(self.workspace, self.project, Other("git_sha") == run.sha)
                found = hits[-1] if hits else None
        except Exception as exc:  # noqa: BLE001 - comet_ml raises its own REST errors and requests' errors
            raise self._error(exc, f"find the experiment of run {run.run_id}") from None
        self._found[cache] = found
        return found

    def numbers(
        self, run: Run, goals: Mapping[str, MetricGoal]
    ) -> tuple[dict[str, float], dict[str, Sequence[float]], dict[str, Any], str] | None:
        """(metrics, series, params, experiment URL) from Comet, or from the run's offline
        archive; None when neither has the run."""
        if self.online:
            exp = self.find(run)
            if exp is not None:
                return self._online_numbers(exp, run, goals)
        archive = run.links.get("comet_archive")
        if archive and Path(archive).is_file():
            return (*read_archive(Path(archive), goals, self.t.summary), f"offline archive {archive}")
        return None

    def _online_numbers(
        self, exp: Any, run: Run, goals: Mapping[str, MetricGoal]
    ) -> tuple[dict[str, float], dict[str, Sequence[float]], dict[str, Any], str]:
        try:
            summary = exp.get_metrics_summary() or []
            params = {
                p["name"]: _param(p.get("valueCurrent"))
                for p in exp.get_parameters_summary() or []
                if p["name"] not in AUTO_PARAMS
            }
            metrics: dict[str, float] = {}
            series: dict[str, Sequence[float]] = {}
            for m in summary:
                name = m["name"]
                if name.startswith(SYSTEM_METRICS):
                    continue
                metrics[name] = _pick(m, goals.get(name), self.t.summary)
                points = exp.get_metrics(name) or []
                values = [_float(p["metricValue"]) for p in sorted(points, key=lambda p: p.get("step") or 0)]
                if len(values) > 1:
                    series[name] = downsample(values, MAX_POINTS)
            url = str(exp.url)
        except Exception as exc:  # noqa: BLE001 - as above
            raise self._error(exc, f"read the experiment of run {run.run_id}") from None
        return metrics, series, params, url

    def tag(self, run: Run, provenance: Mapping[str, str], tags: list[str]) -> None:
        """The zero-code path: a script that made its own experiment gets the commit afterwards."""
        exp = self.find(run)
        if exp is None:
            raise NotFound(f"no Comet experiment for run {run.run_id} (key {run.links.get('comet_experiment_key')})")
        try:
            for k, v in provenance.items():
                exp.log_other(k, v)
            if tags:
                exp.add_tags(tags)
        except Exception as exc:  # noqa: BLE001 - as above
            raise self._error(exc, "tag the experiment") from None

    # -- model registry ---------------------------------------------------------------------
    @staticmethod
    def registry_version(mv: ModelVersion) -> str:
        return f"{mv.version}.0.0"

    def _model(self) -> Any:
        """The registry model, or None if it has no version yet."""
        self.api()
        from comet_ml.api_objects.model import Model

        try:
            return Model.from_registry(self.workspace, str(self.t.model_name), api_key=self.api_key)
        except Exception as exc:  # noqa: BLE001 - a model that does not exist yet is an error response too
            if getattr(getattr(exc, "response", None), "status_code", None) == 404:
                return None
            raise self._error(exc, f"open registry model {self.t.model_name}") from None

    def register(self, mv: ModelVersion, run: Run) -> tuple[str, bool]:
        """Register the run's experiment model as version N.0.0 of `tracking.model_name`, with the
        commit and the artifact digest; idempotent by version. Only called behind a passed gate."""
        name, version = str(self.t.model_name), self.registry_version(mv)
        model = self._model()
        try:
            if model is not None and version in model.find_versions():
                return f"{name} {version}", False
        except Exception as exc:  # noqa: BLE001 - as above
            raise self._error(exc, f"list the versions of {name}") from None
        exp = self.find(run)
        if exp is None:
            hint = run.links.get("comet_archive")
            raise NotFound(
                f"run {run.run_id} has no experiment in Comet to register"
                + (f"; upload it first (`comet upload {hint}`) and promote again" if hint else "")
            )
        try:
            exp.register_model(
                name, version=version, registry_name=name,
                description=f"{self.cfg.project}, registered by mlops-ci behind its gate",
                comment=f"{self.cfg.project} v{mv.version} from commit {mv.sha}; artifact sha256 {mv.artifact_sha256}",
                tags=[mv.sha, f"sha256:{mv.artifact_sha256[:16]}"],
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - as above
            raise self._error(exc, f"register {name} {version}") from None
        return f"{name} {version}", True

    def mark_deployed(self, mv: ModelVersion, endpoint: str) -> None:
        version = self.registry_version(mv)
        model = self._model()
        if model is None:
            raise NotFound(f"{self.t.model_name} is not in Comet's model registry")
        try:
            model.set_status(version, self.t.deployed_status)
            model.add_tag(version, f"deployed:{endpoint}")
        except Exception as exc:  # noqa: BLE001 - as above
            raise self._error(exc, f"mark {self.t.model_name} {version} as deployed") from None


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _param(v: Any) -> Any:
    """Comet returns parameter values as strings; give numbers back as numbers."""
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _pick(m: Mapping[str, Any], goal: MetricGoal | None, mode: str) -> float:
    if mode == "best" and goal is not None:
        return _float(m.get("valueMax") if goal.goal == "maximize" else m.get("valueMin"))
    return _float(m.get("valueCurrent"))


def read_archive(
    path: Path, goals: Mapping[str, MetricGoal], mode: str
) -> tuple[dict[str, float], dict[str, Sequence[float]], dict[str, Any]]:
    """Metrics and parameters of a comet_ml offline archive (experiment.json + messages.json)."""
    try:
        with zipfile.ZipFile(path) as z:
            lines = z.read("messages.json").decode("utf-8").splitlines()
    except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise MlopsCiError(f"cannot read the Comet offline archive {path}: {exc}") from None
    points: dict[str, list[tuple[float, float]]] = {}
    params: dict[str, Any] = {}
    for n, line in enumerate(lines):
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        payload = msg.get("payload") or {}
        if msg.get("type") == "metric_msg":
            m = payload.get("metric") or {}
            name = m.get("metricName")
            if isinstance(name, str) and not name.startswith(SYSTEM_METRICS):
                step = m.get("step")
                order = float(step) if isinstance(step, int | float) else float(n)
                points.setdefault(name, []).append((order, _float(m.get("metricValue"))))
        elif msg.get("type") == "parameter_msg":
            p = payload.get("param") or {}
            if (
                p.get("source") != "auto-logged"
                and isinstance(p.get("paramName"), str)
                and p["paramName"] not in AUTO_PARAMS
            ):
                params[p["paramName"]] = p.get("paramValue")
    metrics: dict[str, float] = {}
    series: dict[str, Sequence[float]] = {}
    for name, pts in points.items():
        values = [v for _, v in sorted(pts, key=lambda x: x[0])]
        goal = goals.get(name)
        if mode == "best" and goal is not None:
            metrics[name] = max(values) if goal.goal == "maximize" else min(values)
        else:
            metrics[name] = values[-1]
        if len(values) > 1:
            series[name] = downsample(values, MAX_POINTS)
    return metrics, series, params
