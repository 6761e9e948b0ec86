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
import re
import shutil
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..compare import downsample
from ..config import Config, MetricGoal
from ..errors import BadCredentials, ConfigError, IntegrityError, MlopsCiError, NotFound, Refused, Transient
from ..records import ModelVersion, Run
from ..settings.comet import CometTrackingConfig
from . import Context

CLOUD = "https://www.comet.com"  # comet_ml's default server
SYSTEM_METRICS = ("sys.", "process duration")  # logged by comet_ml itself, not by the model
AUTO_PARAMS = ("curr_step", "curr_epoch")  # likewise
MAX_POINTS = 2000
REGISTRY_MODEL_NOT_FOUND = 42008  # Comet's sdk_error_code for a registry model that does not exist


@dataclass(frozen=True)
class Located:
    """A run's own experiment in Comet (the key mlops-ci gave it), or None, and warnings."""

    exp: Any  # comet_ml APIExperiment, or None
    key: str | None
    notes: tuple[str, ...]  # warnings for the user: other experiments that claim the run or its commit


@dataclass(frozen=True)
class Numbers:
    """A run's numbers as its Comet experiment (or offline archive) has them now; None: neither."""

    metrics: dict[str, float] | None
    params: dict[str, object] | None
    link: str | None  # the page of the run's own experiment, when Comet has it
    notes: tuple[str, ...]


def _status(exc: Exception) -> int | None:
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _detail(exc: Exception) -> str:
    body = getattr(getattr(exc, "response", None), "text", "") or ""
    try:
        return str(json.loads(body).get("msg") or body)
    except (ValueError, AttributeError):
        return str(body)


def _quiet_comet(env: Mapping[str, str]) -> None:
    # comet_ml would report its own errors to a third-party service: mlops-ci talks only to the
    # services the user configured.
    os.environ["COMET_ERROR_TRACKING_ENABLE"] = "false"
    if env.get("COMET_URL_OVERRIDE"):
        os.environ["COMET_URL_OVERRIDE"] = env["COMET_URL_OVERRIDE"]


class Comet:
    def __init__(self, cfg: Config, env: Mapping[str, str]):
        t = cfg.tracking
        assert isinstance(t, CometTrackingConfig), "made for tracking.backend: comet only"
        self.cfg, self.t, self.env = cfg, t, env
        assert t.workspace is not None
        self.workspace: str = t.workspace
        self.project: str = t.project_name or cfg.project
        self.api_key: str | None = env.get(t.api_key_env) or None
        if t.mode == "online" and not self.api_key:
            raise ConfigError(f"tracking.mode: online needs the Comet API key in ${t.api_key_env}; set it (a secret)")
        self.online = t.mode == "online" or (t.mode == "auto" and self.api_key is not None)
        self._resolved: tuple[str, str] | None = None  # (web root, clientlib URL), once comet_ml is asked
        self._api: object = None
        self._has_project = False
        self._found: dict[str, Located] = {}  # run id → where its experiment is, per invocation

    @classmethod
    def from_context(cls, ctx: Context) -> Comet:
        return cls(ctx.cfg, ctx.env)

    # -- linking a run ------------------------------------------------------------------------
    def experiment_key(self, job_name: str) -> str:
        """Known before the experiment exists: the job gets it, the run record keeps it."""
        return hashlib.sha256(f"{self.workspace}/{self.project}/{job_name}".encode()).hexdigest()[:32]

    def job_env(
        self,
        key: str,
        provenance: Mapping[str, str],
        offline_dir: str,
        *,
        name: str,
        others: Mapping[str, str],
        local: bool,
    ) -> dict[str, str]:
        """What the training job needs to create its experiment in the right place, as the
        trained commit, whatever the script calls: the helper, `comet_ml.start()` or
        `comet_ml.Experiment()`. `others` are logged on the experiment by comet_ml itself
        (COMET_LOG_OTHER_<NAME>, comet_ml env_logging.parse_log_other_instructions)."""
        env = {
            "COMET_WORKSPACE": self.workspace,
            "COMET_PROJECT_NAME": self.project,
            "MLOPS_CI_COMET_EXPERIMENT_KEY": key,
            "COMET_EXPERIMENT_KEY": key,  # comet_ml's own setting: a script's own experiment gets the key too
            "COMET_EXPERIMENT_NAME": name,
            "COMET_ERROR_TRACKING_ENABLE": "false",
            "COMET_OFFLINE_DIRECTORY": offline_dir,
            # comet_ml would read the git repository around the job's directory (locally: the work
            # tree's HEAD and a patch of its uncommitted edits), not the snapshot that was trained
            "COMET_AUTO_LOG_GIT_METADATA": "false",
            "COMET_AUTO_LOG_GIT_PATCH": "false",
            **{k: v for k, v in provenance.items() if v},
        }
        from ..tracking import PROVENANCE

        logged = {**{n: provenance[v] for n, v in PROVENANCE.items() if provenance.get(v)}, **others}
        # an environment variable's name: SageMaker allows [A-Za-z_][A-Za-z0-9_]* (a channel may be `my-data`)
        env.update({f"COMET_LOG_OTHER_{re.sub(r'[^A-Za-z0-9_]', '_', n).upper()}": v for n, v in logged.items() if v})
        if self.t.model_name:
            env["MLOPS_CI_COMET_MODEL_NAME"] = self.t.model_name
        if self.online:
            assert self.api_key is not None
            env["COMET_API_KEY"] = self.api_key
            if self.clientlib_url() != CLOUD + "/clientlib/":  # a self-hosted server: the job needs its URL
                env["COMET_URL_OVERRIDE"] = self.clientlib_url()
        else:
            env["COMET_MODE"] = "offline"
            env["COMET_START_ONLINE"] = "false"  # comet_ml.start() writes an offline archive
            if local:  # and comet_ml.Experiment(), which has no offline setting, becomes OfflineExperiment
                from .. import _offline_comet

                env["PYTHONPATH"] = str(Path(_offline_comet.__file__).parent)
                env["MLOPS_CI_COMET_OFFLINE"] = "1"
        return env

    @property
    def server(self) -> str:
        """Comet's web root as comet_ml resolves it: COMET_URL_OVERRIDE, COMET_CONFIG or
        ~/.comet.config, or the server a key embeds; else the public service."""
        return self._urls()[0]

    def clientlib_url(self) -> str:
        return self._urls()[1]

    def _urls(self) -> tuple[str, str]:
        if self._resolved is None:
            _quiet_comet(self.env)
            from comet_ml.config import get_api_key, get_comet_root_url, get_comet_url_override, get_config

            get_api_key(self.api_key, get_config())  # a key that embeds its server sets comet_ml's default URL
            config = get_config()
            self._resolved = (str(get_comet_root_url(config)).rstrip("/"), str(get_comet_url_override(config)))
        return self._resolved

    def url(self, key: str, exp: object = None) -> str:
        """The experiment's page: Comet's own link for an experiment it returned; for a key alone
        (a run just logged online), the page where comet_ml puts it; else Comet's redirect."""
        if exp is not None:
            own = getattr(exp, "url", None)
            return str(own) if own else self.redirect_url(key)
        return f"{self.server}/{self.workspace}/{self.project}/{key}"

    def redirect_url(self, key: str) -> str:
        """A link that works for any key, wherever the experiment lives (Comet resolves it)."""
        return f"{self.server}/api/experiment/redirect?experimentKey={key}"

    def project_url(self) -> str:
        return f"{self.server}/{self.workspace}/{self.project}"

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
    def api(self, *, need_project: bool = True) -> Any:
        """comet_ml's API client. With `need_project=False` a project Comet does not have yet
        (nothing was uploaded to it) is None instead of an error: readers fall back to archives."""
        if self._api is None:
            _quiet_comet(self.env)
            import comet_ml

            api = comet_ml.API(api_key=self.api_key, cache=True)
            try:
                project = api.get_project(self.workspace, self.project)
            except Exception as exc:  # noqa: BLE001 - comet_ml raises its own REST errors and requests' errors
                raise self._error(exc, f"open project {self.workspace}/{self.project}") from None
            self._api, self._has_project = api, project is not None
        if not self._has_project:
            if not need_project:
                return None
            raise ConfigError(
                f"Comet has no project '{self.project}' in workspace '{self.workspace}'; fix tracking.workspace "
                "/ tracking.project_name (or check the key's access to that workspace)"
            )
        return self._api

    def _error(self, exc: Exception, what: str) -> MlopsCiError:
        status = _status(exc)
        text = str(exc)
        if status in (401, 403) or "Invalid apiKey" in text or "api key" in text.lower():
            return BadCredentials(
                f"Comet rejected the API key in ${self.t.api_key_env} while trying to {what}; set a valid key"
            )
        if "backend version" in text:  # comet_ml's Model API checks the server's version first
            return Refused(
                f"Comet's server cannot {what}: comet_ml says {text[:200]!r}; its model registry needs a newer "
                "Comet server (or drop tracking.model_name)"
            )
        if isinstance(status, int) and 400 <= status < 500:
            detail = _detail(exc)
            if status == 404:
                return NotFound(f"Comet found nothing while trying to {what}: {detail[:300]}")
            return Refused(f"Comet refused to {what}: {detail[:300] or status}")
        return Transient(f"Comet did not answer while trying to {what} ({type(exc).__name__}); retry later")

    def locate(self, run: Run) -> Located:
        """The run's experiment in Comet: only the one under the key mlops-ci gave the job (and
        recorded), in the configured project. Any other experiment that claims the run or its
        commit (their ids are public: anyone who can log to the project can name them) is named in
        a warning, never linked or used."""
        key = run.links.get("comet_experiment_key", "")
        if run.run_id in self._found:
            return self._found[run.run_id]
        api = self.api(need_project=False)
        if api is None:
            note = (
                f"Comet has no project '{self.project}' in workspace '{self.workspace}' (nothing uploaded to it yet, "
                "a typo in tracking.workspace / project_name, or a key without access to it)"
            )
            first = not self._found  # said once per invocation, not once per run
            return self._found.setdefault(run.run_id, Located(None, None, (note,) if first else ()))
        from comet_ml.api import Other

        notes: list[str] = []
        try:
            exp = api.get_experiment_by_key(key) if key else None
            if exp is not None and self._ours(exp):
                return self._found.setdefault(run.run_id, Located(exp, key, ()))
            if exp is not None:
                notes.append(
                    f"experiment {key} is in {exp.workspace}/{exp.project_name}, not in "
                    f"{self.workspace}/{self.project}; not used"
                )
            claims = [e.id for e in api.query(self.workspace, self.project, Other("git_sha") == run.sha) or []]
        except Exception as exc:  # noqa: BLE001 - comet_ml raises its own REST errors and requests' errors
            raise self._error(exc, f"find the experiment of run {run.run_id}") from None
        if claims:
            notes.append(
                f"run {run.run_id}'s experiment ({key or 'no key recorded'}) is not in Comet, but experiment(s) "
                f"{', '.join(claims[:3])} claim commit {run.sha[:8]}: ignored (an archive uploaded with "
                "--force-upload gets a new key; upload it without, so it keeps the one mlops-ci gave it)"
            )
        return self._found.setdefault(run.run_id, Located(None, None, tuple(notes)))

    def _ours(self, exp: Any) -> bool:
        """In the configured workspace and project: a key alone can be read from elsewhere."""
        return bool((exp.workspace, exp.project_name) == (self.workspace, self.project))

    def numbers(self, run: Run, goals: Mapping[str, MetricGoal]) -> Numbers:
        """What the run's own experiment says now (for the report to compare with the numbers
        sealed at training), else what its offline archive says, else nothing."""
        found = self.locate(run) if self.online else Located(None, None, ())
        if found.exp is not None:
            metrics, _, params = self._online_numbers(found.exp, run.run_id, goals, run.params, curves=False)
            return Numbers(metrics, params, self.url(found.key or "", found.exp), found.notes)
        archive = run.links.get("comet_archive")
        if archive and Path(archive).is_file():
            try:
                metrics, _, params = read_archive(Path(archive), goals, self.t.summary)
            except MlopsCiError as exc:
                return Numbers(None, None, None, (*found.notes, exc.message))
            return Numbers(metrics, _typed(params, run.params), None, found.notes)
        return Numbers(None, None, None, found.notes)

    def at_training(
        self, key: str, links: Mapping[str, str], goals: Mapping[str, MetricGoal], params: Mapping[str, object]
    ) -> tuple[dict[str, float], dict[str, Sequence[float]]] | None:
        """The job's numbers as its experiment has them right after the job: its offline archive,
        or online the experiment under `key`. Read once, by the process that ran the job, and
        sealed into the run; later writes to the experiment change nothing that decides."""
        archive = links.get("comet_archive")
        if archive:
            metrics, series, _ = read_archive(Path(archive), goals, self.t.summary)
            return metrics, series
        if not self.online:
            return None
        api = self.api(need_project=False)
        try:
            exp = api.get_experiment_by_key(key) if api is not None else None
        except Exception as exc:  # noqa: BLE001 - as above
            raise self._error(exc, f"read experiment {key}") from None
        if exp is None or not self._ours(exp):
            return None  # an experiment under this key elsewhere is not the job's
        metrics, series, _ = self._online_numbers(exp, key, goals, params, curves=True)
        return metrics, series

    def _online_numbers(
        self, exp: Any, what: str, goals: Mapping[str, MetricGoal], recorded: Mapping[str, Any], *, curves: bool
    ) -> tuple[dict[str, float], dict[str, Sequence[float]], dict[str, object]]:
        try:
            summary = exp.get_metrics_summary() or []
            params = {
                p["name"]: p.get("valueCurrent")
                for p in exp.get_parameters_summary() or []
                if p["name"] not in AUTO_PARAMS
            }
            metrics: dict[str, float] = {}
            for m in summary:
                if not m["name"].startswith(SYSTEM_METRICS):
                    metrics[m["name"]] = _pick(m, goals.get(m["name"]), self.t.summary)
            series = self._series(exp, sorted(metrics)) if curves else {}
        except Exception as exc:  # noqa: BLE001 - as above
            raise self._error(exc, f"read the experiment of {what}") from None
        return metrics, series, _typed(params, recorded)

    def _series(self, exp: Any, names: Sequence[str]) -> dict[str, Sequence[float]]:
        """Every metric's curve in one request (Comet samples each to about 500 points unless
        asked for all; a PR comment's curve needs no more)."""
        if not names:
            return {}
        chart = self.api().get_metrics_for_chart([exp.id], list(names)) or {}
        entry = chart.get(exp.id) if isinstance(chart, dict) else None
        series: dict[str, Sequence[float]] = {}
        for m in (entry or {}).get("metrics") or []:
            values, steps = m.get("values") or [], m.get("steps") or []
            order = sorted(range(len(values)), key=lambda i: steps[i] if i < len(steps) and steps[i] is not None else i)
            curve = [_float(values[i]) for i in order]
            if len(curve) > 1:
                series[str(m.get("metricName"))] = downsample(curve, MAX_POINTS)
        return series

    def tag(self, run: Run, provenance: Mapping[str, str], tags: list[str]) -> None:
        """The zero-code path: a script that made its own experiment gets the commit afterwards."""
        found = self.locate(run)
        if found.exp is None:
            raise NotFound(f"no Comet experiment for run {run.run_id} (key {run.links.get('comet_experiment_key')})")
        exp = found.exp
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
            if _no_such_model(exc):
                return None
            raise self._error(exc, f"open registry model {self.t.model_name}") from None

    def statuses(self) -> list[str]:
        """The registry statuses this workspace allows (an organisation sets its own)."""
        try:
            return list(self.api().model_registry_allowed_status_values(self.workspace) or [])
        except Exception as exc:  # noqa: BLE001 - as above
            raise self._error(exc, f"read the registry statuses of workspace {self.workspace}") from None

    def status_problem(self) -> str | None:
        """Why a deploy's registry statuses would be refused by Comet, or None (also when Comet
        does not list its statuses: then there is nothing to check against)."""
        allowed = self.statuses()
        for key in ("deployed_status", "retired_status"):
            value = getattr(self.t, key)
            if allowed and value not in allowed:
                return (
                    f"tracking.{key} '{value}' is not a registry status of Comet workspace {self.workspace} "
                    f"(allowed: {', '.join(allowed)}); fix it in mlops-ci.yaml"
                )
        return None

    def register(self, mv: ModelVersion, run: Run, package: str | None = None) -> tuple[str, bool]:
        """Register the run's own experiment model as version N.0.0 of `tracking.model_name`, with
        the commit and the artifact digest. Idempotent: a version already registered from this
        run's experiment is done; one registered from any other experiment is a conflict, never
        taken for ours. Only called behind a passed gate."""
        name, version = str(self.t.model_name), self.registry_version(mv)
        key = run.links.get("comet_experiment_key", "")
        model = self._model()
        if model is not None:
            existing = self._details(model, version)
            if existing is not None:
                if existing.get("experimentKey") == key:
                    return f"{name} {version}", False
                raise Refused(
                    f"{name} {version} is already in Comet's registry, registered from experiment "
                    f"{existing.get('experimentKey')}, not from run {run.run_id}'s experiment {key}: Comet's "
                    f"registry and mlops-ci's disagree; delete that version in Comet or set tracking.model_name "
                    "to a new registry model, then promote again"
                )
        found = self.locate(run)
        if found.exp is None:
            hint = run.links.get("comet_archive")
            raise NotFound(
                f"run {run.run_id}'s experiment {key} is not in Comet, so there is nothing to register"
                + (f"; upload it (`comet upload {hint}`, without --force-upload) and promote again" if hint else "")
            )
        try:
            found.exp.register_model(
                name, version=version, registry_name=name, public=False,
                description=f"{self.cfg.project}, registered by mlops-ci behind its gate",
                comment=f"{self.cfg.project} v{mv.version} from commit {mv.sha}; artifact sha256 {mv.artifact_sha256}"
                + (f"; SageMaker model package {package}" if package else ""),
                tags=[mv.sha, f"sha256:{mv.artifact_sha256[:16]}"],
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - as above
            raise self._error(exc, f"register {name} {version}") from None
        return f"{name} {version}", True

    def _details(self, model: Any, version: str) -> dict[str, Any] | None:
        try:
            if version not in model.find_versions():
                return None
            return dict(model.get_details(version))
        except Exception as exc:  # noqa: BLE001 - as above
            raise self._error(exc, f"read {self.t.model_name} {version} in Comet's registry") from None

    def mark_deployed(self, mv: ModelVersion, endpoint: str) -> list[str]:
        """The deployed version gets `deployed_status` and the tag `deployed:<endpoint>`; the
        version that had the tag loses it and, deployed nowhere else, gets `retired_status`.
        Returns the versions demoted."""
        version, tag = self.registry_version(mv), f"deployed:{endpoint}"
        model = self._model()
        if model is None:
            raise NotFound(f"{self.t.model_name} is not in Comet's model registry")
        demoted = []
        try:
            model.set_status(version, self.t.deployed_status)
            if tag not in model.get_details(version).get("tags", []):
                model.add_tag(version, tag)
            for other in model.find_versions(tag=tag):
                if other != version:
                    model.delete_tag(other, tag)
            for other in model.find_versions(status=self.t.deployed_status):
                if other == version:
                    continue
                if not any(t.startswith("deployed:") for t in model.get_details(other).get("tags", [])):
                    model.set_status(other, self.t.retired_status)
                    demoted.append(other)
        except Exception as exc:  # noqa: BLE001 - as above
            raise self._error(exc, f"mark {self.t.model_name} {version} as deployed on {endpoint}") from None
        return demoted


def _no_such_model(exc: Exception) -> bool:
    """comet_ml has no case of its own for a registry model that does not exist: it raises the
    HTTP error. Comet's Java SDK reads sdk_error_code 42008 (registryModelNotFound) from a 400
    body as "no such model" (comet-ml/comet-java-sdk: SdkErrorCodes.java, CometApiImpl.
    getRegistryModelDetails, ConnectionUtils.checkResponseStatus); a 404 is taken the same way."""
    return getattr(exc, "sdk_error_code", None) == REGISTRY_MODEL_NOT_FOUND or _status(exc) == 404


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _typed(params: Mapping[str, object], recorded: Mapping[str, object]) -> dict[str, object]:
    """Comet's parameters as the run's hyperparameter table has them. Comet keeps every value as
    a string (an offline archive keeps what was logged): a value whose string is the recorded
    hyperparameter's is that hyperparameter (so 0.9 and "0.9" are one value, online and offline);
    any other value stays Comet's string, so "007" or "1.10" are never turned into numbers."""
    out: dict[str, object] = {}
    for name, value in params.items():
        text = value if isinstance(value, str) else json.dumps(value)
        known = name in recorded and text in {str(recorded[name]), json.dumps(recorded[name])}
        out[name] = recorded[name] if known else text
    return out


def _pick(m: Mapping[str, object], goal: MetricGoal | None, mode: str) -> float:
    if mode == "best" and goal is not None:
        return _float(m.get("valueMax") if goal.goal == "maximize" else m.get("valueMin"))
    return _float(m.get("valueCurrent"))


def read_archive(
    path: Path, goals: Mapping[str, MetricGoal], mode: str
) -> tuple[dict[str, float], dict[str, Sequence[float]], dict[str, object]]:
    """Metrics and parameters of a comet_ml offline archive (experiment.json + messages.json)."""
    try:
        with zipfile.ZipFile(path) as z:
            lines = z.read("messages.json").decode("utf-8").splitlines()
    except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise IntegrityError(f"cannot read the Comet offline archive {path} ({exc}); it is damaged") from None
    points: dict[str, list[tuple[float, float]]] = {}
    params: dict[str, object] = {}

    def obj(value: Any) -> dict[str, Any]:  # the job wrote the archive: any shape may be in it
        return value if isinstance(value, dict) else {}

    for n, line in enumerate(lines):
        try:
            msg = obj(json.loads(line))
        except ValueError:
            continue
        payload = obj(msg.get("payload"))
        if msg.get("type") == "metric_msg":
            m = obj(payload.get("metric"))
            name = m.get("metricName")
            if isinstance(name, str) and not name.startswith(SYSTEM_METRICS):
                step = m.get("step")
                order = float(step) if isinstance(step, int | float) else float(n)
                points.setdefault(name, []).append((order, _float(m.get("metricValue"))))
        elif msg.get("type") == "parameter_msg":
            # Auto-logged (framework) parameters too: Comet's parameter summary has them and does
            # not say which they are, so an offline table and an online one list the same names.
            p = obj(payload.get("param"))
            if isinstance(p.get("paramName"), str) and p["paramName"] not in AUTO_PARAMS:
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
