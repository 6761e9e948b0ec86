"""Comet's REST API (the part `comet_ml.API` uses to read experiments), on 127.0.0.1.

comet_ml is pointed at it with Comet's own setting, COMET_URL_OVERRIDE=<url>/clientlib/. The
shapes follow Comet's v2 REST API as comet_ml parses it: values of metrics and parameters are
strings, a missing experiment is 404, a wrong API key is 401. Experiments get here the way they
get to Comet: over the wire, from the real `comet upload` CLI or an online comet_ml experiment (the
clientlib write routes below), or in process through `upload()`, which ingests a comet_ml offline
archive as `comet upload` does (tests/integration/test_comet_wire.py checks that the two agree).
Routes the fake does not know answer 404 and are listed in `unhandled`.
"""

from __future__ import annotations

import email.parser
import email.policy
import gzip
import json
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

BACKEND_VERSION = "4.20.500"
SAMPLED_POINTS = 500  # per series in a multi-metric chart unless fetchFull
REGISTRY_MODEL_NOT_FOUND = 42008
# comet_ml/exceptions.py:584-586, the sdk_error_codes comet_ml's handshake maps (connection_api.py:686-787)
API_KEY_NOT_REGISTERED = 90212
NO_WRITE_ACCESS_TO_EXPERIMENT = 90210
EXPERIMENT_ALREADY_EXISTS = 90999
DEFAULT_WORKSPACE = "fake-user"  # add/run without teamName: the key owner's default workspace
DEFAULT_PROJECT = "general"  # add/run without projectName


@dataclass
class Experiment:
    key: str
    workspace: str
    project: str
    metrics: dict[str, list[tuple[int, float, int]]] = field(default_factory=dict)  # name → (step, value, ms)
    params: dict[str, Any] = field(default_factory=dict)
    others: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    start: int = 0
    end: int = 0
    models: set[str] = field(default_factory=set)  # experiment models (log_model), registrable
    system: dict[str, Any] = field(default_factory=dict)  # system details an online client sent


class FakeComet:
    def __init__(self, api_key: str = "comet-test-key-0123456789"):
        self.api_key = api_key
        self.experiments: dict[str, Experiment] = {}
        self.projects: dict[tuple[str, str], str] = {}  # (workspace, project) → project id
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)
        self.answers: list[tuple[str, int, int]] = []  # (path, status, sdk_error_code) of routed requests
        self.notifications: list[dict[str, Any]] = []  # e-mails an online experiment asked Comet to send
        self.unhandled: list[tuple[str, str]] = []  # (method, path) of requests no route knows (answered 404)
        self.unhandled_bodies: list[Any] = []
        self.version = BACKEND_VERSION  # what /clientlib/isAlive/ver says (Model API needs >= 3.5.42)
        self.errors: list[dict[str, Any]] = []  # what comet_ml reported through write/experiment/update-status
        self.broken: set[str] = set()  # paths that answer 500, as an outage would
        self.lock = threading.Lock()
        self.url = ""
        self.registry: dict[tuple[str, str], dict[str, Any]] = {}  # (workspace, model) → id and versions
        self.statuses = ("None", "Development", "Staging", "Production")  # an organisation's allowed values

    # -- seeding -------------------------------------------------------------------------
    def project(self, workspace: str, project: str) -> str:
        return self.projects.setdefault((workspace, project), uuid.uuid4().hex)

    def upload(self, archive: Path) -> Experiment:
        """What `comet upload <archive>` does: the offline experiment appears in the project."""
        with zipfile.ZipFile(archive) as z:
            meta = json.loads(z.read("experiment.json"))
            lines = z.read("messages.json").decode().splitlines()
        exp = Experiment(meta["offline_id"], meta["workspace"], meta["project_name"], tags=list(meta.get("tags") or []),
                         start=meta.get("start_time", 0), end=meta.get("stop_time", 0))  # fmt: skip
        self.project(exp.workspace, exp.project)
        for line in lines:
            msg = json.loads(line)
            payload = msg.get("payload") or {}
            if msg["type"] == "metric_msg":
                m = payload["metric"]
                step = m.get("step") if m.get("step") is not None else len(exp.metrics.get(m["metricName"], []))
                exp.metrics.setdefault(m["metricName"], []).append(
                    (step, float(m["metricValue"]), payload.get("local_timestamp", 0))
                )
            elif msg["type"] == "parameter_msg":
                p = payload["param"]
                exp.params[p["paramName"]] = p["paramValue"]
            elif msg["type"] == "log_other":
                exp.others[payload["key"]] = payload["value"]
            elif msg["type"] == "file_upload" and payload.get("upload_type") == "model-element":
                exp.models.add(payload["additional_params"]["groupingName"])
        with self.lock:
            self.experiments[exp.key] = exp
        return exp

    def seed(
        self,
        workspace: str,
        project: str,
        key: str,
        *,
        others: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
    ) -> Experiment:
        """An experiment someone else logged (straight to Comet, not through mlops-ci)."""
        self.project(workspace, project)
        exp = Experiment(
            key,
            workspace,
            project,
            others=dict(others or {}),
            metrics={k: [(0, v, 0)] for k, v in (metrics or {}).items()},
        )
        with self.lock:
            self.experiments[key] = exp
        return exp

    def rekey(self, exp: Experiment, key: str) -> None:
        """The experiment under a new key, as `comet upload --force-upload` makes one."""
        with self.lock:
            del self.experiments[exp.key]
            exp.key = key
            self.experiments[key] = exp

    # -- HTTP ----------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, str], body: Any, auth: str | None) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path, auth))
        if path == "/clientlib/isAlive/ver":
            return 200, {"msg": "", "code": 200, "data": None, "sdk_error_code": 0, "version": self.version}
        if path in self.broken:
            return 500, {"msg": "Internal Server Error", "code": 500, "data": None, "sdk_error_code": 0}
        if path.startswith("/clientlib/"):
            # The clientlib routes carry the key as `apiKey` in the JSON body (connection_api.py:652-661,
            # 744-749, 562-570, 899-905); the batch and upload routes only in the Authorization header the
            # session sets (connection_api.py:1138, http_session.py:91-92). A key Comet does not know is a
            # 400 with 90212, which comet_ml raises as InvalidAPIKey (connection_api.py:686-687, 773-774).
            key = auth
            if isinstance(body, dict) and ("apiKey" in body or "api_key" in body):  # notification: api_key
                key = body.get("apiKey", body.get("api_key"))
            if key != self.api_key:
                return 400, {
                    "msg": "Invalid apiKey",
                    "code": 400,
                    "data": None,
                    "sdk_error_code": API_KEY_NOT_REGISTERED,
                }
            route = path.removeprefix("/")
        elif auth != self.api_key:
            return 401, {"msg": "Invalid apiKey", "code": 401, "data": None, "sdk_error_code": 90212}
        else:
            route = path.removeprefix("/api/rest/v2/")
        handler = getattr(self, "_" + route.replace("/", "_").replace("-", "_"), None)
        if handler is None:
            with self.lock:
                self.unhandled.append((method, path))
                self.unhandled_bodies.append(body)
            return 404, {"msg": f"no such endpoint {path}", "code": 404, "data": None, "sdk_error_code": 0}
        with self.lock:  # comet_ml sends from several threads at once
            result: tuple[int, Any] = handler(query, body)
            self.answers.append((path, result[0], (result[1] or {}).get("sdk_error_code") or 0))
        return result

    def _clientlib_rest_v2_write_experiment_system_details(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """The environment details comet_ml sends once an online experiment starts (with
        log_env_details on; SYSTEM_DETAILS_ENDPOINT, connection_url_helpers.py:16)."""
        e = self.experiments.get((body or {}).get("experimentKey", ""))
        if e is None:
            return self._missing()
        e.system = dict(body)
        return 200, {"msg": "OK", "code": 200, "data": None, "sdk_error_code": 0}

    def _write_experiment_update_status(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """Where comet_ml reports an experiment's own errors (connection_api.py:3712-3728):
        recorded, so a test can assert that the client reported none."""
        self.errors.append(dict(body or {}))
        return 200, {"msg": "OK", "code": 200, "data": None, "sdk_error_code": 0}

    def _experiment(self, query: dict[str, str]) -> Experiment | None:
        return self.experiments.get(query.get("experimentKey", ""))

    def _missing(self) -> tuple[int, Any]:
        return 404, {"msg": "Experiment not found", "code": 404, "data": None, "sdk_error_code": 90403}

    def _experiment_metadata(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        e = self._experiment(query)
        if e is None:
            # 400, not 404: comet-java-sdk's CometApiImpl.getExperimentMetadata takes a 400 for "no such
            # experiment"; comet_ml's API.get_experiment_by_key returns None for 400 and 404 alike.
            return 400, {"msg": "Experiment not found", "code": 400, "data": None, "sdk_error_code": 90211}
        return 200, {
            "archived": False, "durationMillis": e.end - e.start, "endTimeMillis": e.end, "experimentKey": e.key,
            "experimentName": None, "fileName": None, "filePath": None, "optimizationId": None,
            "projectId": self.project(e.workspace, e.project), "projectName": e.project, "running": False,
            "startTimeMillis": e.start, "throttle": False, "workspaceName": e.workspace,
        }  # fmt: skip

    def _experiment_metrics_summary(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        e = self._experiment(query)
        if e is None:
            return self._missing()
        values = []
        for name, pts in sorted(e.metrics.items()):
            hi = max(pts, key=lambda p: p[1])
            lo = min(pts, key=lambda p: p[1])
            cur = pts[-1]
            values.append({
                "name": name, "valueMax": repr(hi[1]), "valueMin": repr(lo[1]), "valueCurrent": repr(cur[1]),
                "timestampMax": hi[2], "timestampMin": lo[2], "timestampCurrent": cur[2],
                "stepMax": hi[0], "stepMin": lo[0], "stepCurrent": cur[0], "editable": False,
            })  # fmt: skip
        return 200, {"values": values}

    def _experiment_metrics_get_metric(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        e = self._experiment(query)
        if e is None:
            return self._missing()
        name = query.get("metricName", "")
        points = enumerate(e.metrics.get(name, []))
        rows = [{"metricName": name, "metricValue": repr(v), "timestamp": ts, "step": step, "epoch": None,
                 "runContext": None, "offset": i} for i, (step, v, ts) in points]  # fmt: skip
        return 200, {"experimentKey": e.key, "metrics": rows}

    def _experiment_parameters(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        e = self._experiment(query)
        if e is None:
            return self._missing()
        now = int(time.time() * 1000)
        values = [{"name": k, "valueMax": str(v), "valueMin": str(v), "valueCurrent": json.dumps(v)
                   if not isinstance(v, str) else v, "timestampMax": now, "timestampMin": now,
                   "timestampCurrent": now, "editable": False} for k, v in sorted(e.params.items())]  # fmt: skip
        return 200, {"values": values}

    def _project(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        ws, name = query.get("workspaceName", ""), query.get("projectName", "")
        pid = self.projects.get((ws, name))
        if pid is None:
            return 404, {"msg": "Project not found", "code": 404, "data": None, "sdk_error_code": 0}
        count = sum(1 for e in self.experiments.values() if (e.workspace, e.project) == (ws, name))
        return 200, {"projectId": pid, "projectName": name, "ownerUserName": ws, "projectDescription": "",
                     "workspaceName": ws, "isPublic": False, "numberOfExperiments": count,
                     "lastUpdated": int(time.time() * 1000)}  # fmt: skip

    def _project_column_names(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        key = (query.get("workspaceName", ""), query.get("projectName", ""))
        if key not in self.projects:
            return 404, {"msg": "Project not found", "code": 404, "data": None, "sdk_error_code": 0}
        others = sorted({k for e in self.experiments.values() if (e.workspace, e.project) == key for k in e.others})
        return 200, {"columns": [{"name": k, "source": "log_other", "type": "string"} for k in others]}

    def _project_query(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        ws, proj = body["workspaceName"], body["projectName"]
        keys = []
        for e in self.experiments.values():
            if (e.workspace, e.project) != (ws, proj):
                continue
            if all(_matches(e, pred) for pred in body["predicates"]):
                keys.append(e.key)
        return 200, {"experimentKeys": keys}

    def _write_experiment_log_other(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        e = self.experiments.get(body.get("experimentKey", ""))
        if e is None:
            return self._missing()
        e.others[body["key"]] = body["value"]
        return 200, {"msg": "OK", "code": 200, "data": None, "sdk_error_code": 0}

    def _write_experiment_tags(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        e = self.experiments.get(body.get("experimentKey", ""))
        if e is None:
            return self._missing()
        e.tags += [t for t in body.get("addedTags", []) if t not in e.tags]
        return 200, {"msg": "OK", "code": 200, "data": None, "sdk_error_code": 0}

    def _experiment_tags(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        e = self._experiment(query)
        if e is None:
            return self._missing()
        return 200, {"tags": list(e.tags)}

    def _experiments_multi_metric_chart(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """POST experiments/multi-metric-chart (API.get_metrics_for_chart). Comet samples each series
        to about 500 points unless fetchFull (then up to 15,000): the R SDK's get_multi_metric_chart
        docs; comet_ml sends fetchFull false by default."""
        limit = 15000 if body.get("fetchFull") else SAMPLED_POINTS
        out = {}
        for key in body.get("targetedExperiments") or []:
            e = self.experiments.get(key)
            if e is None:
                continue
            rows = []
            for name in body.get("metrics") or []:
                pts = sorted(e.metrics.get(name, []), key=lambda p: p[0])
                if len(pts) > limit:  # evenly spaced, first and last kept
                    pts = [pts[round(i * (len(pts) - 1) / (limit - 1))] for i in range(limit)]
                rows.append(
                    {
                        "metricName": name,
                        "values": [v for _, v, _ in pts],
                        "steps": [s for s, _, _ in pts],
                        "epochs": [None] * len(pts),
                        "timestamps": [t for _, _, t in pts],
                        "durations": [0] * len(pts),
                    }
                )
            out[key] = {"experiment_key": key, "steps": [], "epochs": [], "metrics": rows, "params": {}}
        return 200, {"experiments": out, "empty": not out}

    # -- clientlib: what the real `comet upload` and an online Experiment send -----------------
    # The request sequence is in comet_ml offline.py:1192-1320, 2620-2683 (OfflineSender.send, close) and
    # _online.py:294-400 (Experiment._setup_streamer);
    # each handler cites the comet_ml 3.58 function that sends it. Bodies arrive decoded by serve().
    def _ok(self) -> tuple[int, Any]:
        return 200, {"msg": "OK", "code": 200, "data": None, "sdk_error_code": 0}

    def _handshake(self, e: Experiment) -> dict[str, Any]:
        # The fields comet_ml reads (handshake.py:60-139); runId is the only required one.
        return {
            "runId": uuid.uuid4().hex,
            "project_id": self.project(e.workspace, e.project),
            "focusUrl": f"{self.url}/{e.workspace}/{e.project}/",
            "lastOffset": 0,
            "featureToggles": [],
            "name": None,
            "githubEnabled": False,
            "s3DirectAccessEnabled": False,
        }

    def _clientlib_logger_add_run(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """POST logger/add/run (connection_api.py:631-734): creates the experiment under the client's key
        in teamName/projectName. A key that exists is 400 + 90999 (ExperimentAlreadyUploaded, line 698)
        unless getOrCreateEnabled, then the existing one is handed back. comet_ml.start(mode=get_or_create)
        probes with getOrCreateEnabled false (comet_start/experiment_status.py:24-58) and resumes with
        get/run on 90999; `comet upload` fails on it, or with --force-upload retries with a new random key
        (offline.py:1450-1469)."""
        key = body["experimentKey"]
        e = self.experiments.get(key)
        if e is not None and not body.get("getOrCreateEnabled"):
            return self._bad(f"Experiment {key} already exists", EXPERIMENT_ALREADY_EXISTS)
        if e is None:
            ws, proj = body.get("teamName") or DEFAULT_WORKSPACE, body.get("projectName") or DEFAULT_PROJECT
            e = Experiment(key, ws, proj, start=body.get("local_timestamp") or int(time.time() * 1000))
            self.experiments[key] = e
        return 200, self._handshake(e)

    def _clientlib_logger_get_run(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """POST logger/get/run (connection_api.py:736-787): resume previousExperiment; an unknown key is
        400 + 90210, which comet_ml raises as ExperimentNotFound (line 775-776)."""
        e = self.experiments.get(body.get("previousExperiment", ""))
        if e is None:
            return self._bad("Experiment not found", NO_WRITE_ACCESS_TO_EXPERIMENT)
        return 200, self._handshake(e)

    def _clientlib_health_ping(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """GET health/ping (connection_api.py:553-555): an online Experiment's FallbackStreamer pings at
        start; anything but a 2xx makes it log offline only (streamer/fallback.py:223-229). Body unread."""
        return self._ok()

    def _clientlib_asset_3d_limits(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """POST asset/3d-limits {apiKey, experimentKey} (connection_api.py:789-803), sent at an online
        start; comet_ml indexes maxPoints and maxBoxes (experiment_loggers/points_3d/log.py:52-53). The
        values are comet_ml's own defaults (config/config_constants.py:21-26)."""
        return 200, {
            "maxPoints": 1000000,
            "maxPointsFileSizeInBytes": 0,
            "maxBoxes": 250000,
            "maxBoxesFileSizeInBytes": 0,
        }

    def _clientlib_notification_experiment(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """POST notification/experiment {api_key, title, status, experiment_key, ...}: the "finished" summary
        e-mail a new online Experiment sends at end() (experiment.py:885-898, connection_api.py:1027-1060);
        comet_ml takes 200 or 204 and ignores a 404. Kept so tests can see it was asked for."""
        self.notifications.append(body)
        return self._ok()

    def _clientlib_status_report_update(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """POST status-report/update, the heartbeat (connection_api.py:557-629): comet_ml raises
        ValueError unless the answer has is_alive_beat_duration_millis and gpu_monitor_interval_millis."""
        e = self.experiments.get(body.get("experimentKey", ""))
        if e is None:
            return self._missing()
        e.end = body.get("local_timestamp") or e.end  # Comet ends an experiment at its last beat
        beats = {"is_alive_beat_duration_millis": 60_000, "gpu_monitor_interval_millis": 60_000}
        return 200, {**beats, "cpu_monitor_interval_millis": 68_000, "pending_rpcs": False}

    def _clientlib_status_report_offline_metadata(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """POST status-report/offline-metadata (connection_api.py:894-917, offline.py:2631-2640): the
        archive's start and stop times; startTimestamp is null when the upload resumed an experiment."""
        e = self.experiments.get(body.get("experimentKey", ""))
        if e is None:
            return self._missing()
        if body.get("startTimestamp") is not None:
            e.start = body["startTimestamp"]
        if body.get("endTimestamp") is not None:
            e.end = body["endTimestamp"]
        return self._ok()

    def _clientlib_tags_add_tags_to_experiment(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """POST tags/add-tags-to-experiment {experimentKey, addedTags} (connection_api.py:919-937)."""
        return self._write_experiment_tags(query, body)

    def _clientlib_batch_logger_experiment_metric(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """POST batch/logger/experiment/metric, gzip JSON {experimentKey, values: [{metricName, metricValue,
        step, epoch, context, timestamp}]} (connection_api.py:1078-1154, messages.py:717-721)."""
        e = self.experiments.get(body.get("experimentKey", ""))
        if e is None:
            return self._missing()
        for m in body["values"]:
            series = e.metrics.setdefault(m["metricName"], [])
            step = m["step"] if m.get("step") is not None else len(series)  # as upload() numbers them
            series.append((step, float(m["metricValue"]), m.get("timestamp") or 0))
        return self._ok()

    def _clientlib_batch_logger_experiment_parameter(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """POST batch/logger/experiment/parameter, gzip JSON {experimentKey, values: [{parameterName,
        parameterValue, step, source, context, timestamp}]} (connection_api.py:1062-1076, messages.py:633-644)."""
        e = self.experiments.get(body.get("experimentKey", ""))
        if e is None:
            return self._missing()
        for p in body["values"]:
            e.params[p["parameterName"]] = p["parameterValue"]
        return self._ok()

    def _clientlib_asset_upload(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """POST asset/upload, multipart with the file in part `file`; the rest is in the query:
        experimentId, projectId, fileName, type, groupingName (the model's name for type=model-element,
        what log_model sends), ... (offline.py:1896-1946, connection_url_helpers.py:114-136)."""
        e = self.experiments.get(query.get("experimentId", ""))
        if e is None:
            return self._missing()
        if "file" not in (body or {}):
            return self._bad("Missing file part")
        if query.get("type") == "model-element":
            e.models.add(query["groupingName"])
        asset_id = query.get("assetId") or uuid.uuid4().hex
        return 200, {"assetId": asset_id, "web": f"{self.url}/asset/{asset_id}", "api": f"{self.url}/asset/{asset_id}"}

    # -- model registry (the backend API comet_ml uses from 4.x on) ---------------------------
    def _bad(self, msg: str, code: int = 0) -> tuple[int, Any]:
        return 400, {"msg": msg, "code": 400, "data": None, "sdk_error_code": code}

    def _not_found(self, msg: str) -> tuple[int, Any]:
        return 404, {"msg": msg, "code": 404, "data": None, "sdk_error_code": 0}

    def _no_model(self) -> tuple[int, Any]:
        # A registry model that does not exist: 400 with sdk_error_code 42008, which comet-java-sdk
        # names registryModelNotFound (SdkErrorCodes.java) and reads from 400 bodies only
        # (ConnectionUtils.checkResponseStatus). comet_ml raises it as CometRestApiException.
        return self._bad("Registry model not found", REGISTRY_MODEL_NOT_FOUND)

    def _reg(self, query: dict[str, str]) -> dict[str, Any] | None:
        return self.registry.get((query.get("workspaceName", ""), query.get("modelName", "")))

    def _registry_model_compact_details(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        reg = self._reg(query)
        return (200, {"registryModelId": reg["id"]}) if reg else self._no_model()

    def _registry_model_items(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """GET registry-model/items: comet_ml's Model.find_versions filters by tag, status and
        version prefix here, on the server."""
        reg = self._reg(query)
        if reg is None:
            return self._no_model()
        items = sorted(reg["versions"].values(), key=lambda v: [int(x) for x in v["version"].split(".")], reverse=True)
        if query.get("tag"):
            items = [i for i in items if query["tag"] in i["tags"]]
        if query.get("status"):
            items = [i for i in items if i["status"] == query["status"]]
        items = [i for i in items if i["version"].startswith(query.get("versionPrefix", ""))]
        return 200, {"items": items}

    def _registry_model_details(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        reg = self._reg(query)
        if reg is None:
            return self._no_model()
        return 200, {
            "registryModelId": reg["id"],
            "modelName": query["modelName"],
            "versions": list(reg["versions"].values()),
        }

    def _registry_model_item_details(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        reg = self._reg(query)
        if reg is None:
            return self._no_model()
        item = reg["versions"].get(query.get("version", ""))
        return (200, item) if item else self._not_found("Registry model version not found")

    def _registry_model_allowed_status_values(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """API.model_registry_allowed_status_values reads `allowedStatus` (comet_ml api.py)."""
        return 200, {"allowedStatus": list(self.statuses)}

    def _write_registry_model_item_create(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        e = self.experiments.get(body.get("experimentKey", ""))
        if e is None:
            return self._bad("Experiment not found", 90211)
        if body["experimentModelName"] not in e.models:
            return self._bad(f"Experiment {e.key} has no model named {body['experimentModelName']}")
        if body.get("status") not in (None, *self.statuses):
            return self._bad(f"Status {body['status']} is not allowed")
        reg = self.registry.setdefault(
            (e.workspace, body["registryModelName"]), {"id": uuid.uuid4().hex, "versions": {}}
        )
        if body["version"] in reg["versions"]:
            return self._bad(f"Version {body['version']} already exists")
        item = {"registryModelItemId": uuid.uuid4().hex, "version": body["version"], "experimentKey": e.key,
                "experimentModelName": body["experimentModelName"], "comment": body.get("versionComment"),
                "tags": list(body.get("tags") or []), "status": body.get("status") or "None",
                "createdAt": int(time.time() * 1000)}  # fmt: skip
        reg["versions"][body["version"]] = item
        return 200, {"registryModelId": reg["id"], "registryModelItemId": item["registryModelItemId"]}

    def _item(self, item_id: str) -> dict[str, Any] | None:
        for reg in self.registry.values():
            for item in reg["versions"].values():
                if item["registryModelItemId"] == item_id:
                    return item  # type: ignore[no-any-return]
        return None

    def _write_registry_model_item_status(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        item = self._item(body.get("modelItemId", ""))
        if item is None:
            return self._not_found("Registry model version not found")
        if body["status"] not in self.statuses:
            return self._bad(f"Status {body['status']} is not allowed; allowed: {', '.join(self.statuses)}")
        item["status"] = body["status"]
        return 200, {}

    def _write_registry_model_item_stage(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        # A write over GET, as comet_ml's add_registry_model_version_stage sends it.
        item = self._item(query.get("modelItemId", ""))
        if item is None:
            return self._not_found("Registry model version not found")
        if query["stage"] not in item["tags"]:
            item["tags"].append(query["stage"])
        return 200, {}

    def _write_registry_model_item_stage_delete(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        item = self._item(query.get("modelItemId", ""))
        if item is None:
            return self._not_found("Registry model version not found")
        if query["stage"] in item["tags"]:
            item["tags"].remove(query["stage"])
        return 200, {}


def _matches(e: Experiment, pred: dict[str, Any]) -> bool:
    q = pred["query"]
    results = []
    for rule in q["rules"]:
        if "rules" in rule:
            results.append(_matches(e, {"source": pred["source"], "query": rule}))
            continue
        source = rule.get("source", pred["source"])
        values = {"log_other": e.others, "params": e.params}.get(source, {})
        actual = values.get(rule["field"])
        if rule["operator"] == "equal":
            results.append(actual is not None and str(actual) == str(rule["value"]))
        else:
            raise NotImplementedError(f"operator {rule['operator']} is not faked")
    return all(results) if q.get("condition", "AND") == "AND" else any(results)


def _multipart(ctype: str, raw: bytes) -> dict[str, Any]:
    """A multipart/form-data body as {part name: bytes of a file part, str of a field} (asset uploads)."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw
    )
    parts: dict[str, Any] = {}
    for part in msg.iter_parts():
        data = part.get_payload(decode=True)
        name = part.get_param("name", header="content-disposition")
        parts[str(name)] = data if part.get_filename() else data.decode()
    return parts


@contextmanager
def serve(fake: FakeComet) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def _do(self) -> None:
            u = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(u.query).items()}
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            if self.headers.get("Content-Encoding") == "gzip":  # the batch routes (connection_api.py:1136-1145)
                raw = gzip.decompress(raw)
            ctype = self.headers.get("Content-Type") or ""
            body = _multipart(ctype, raw) if ctype.startswith("multipart/") else json.loads(raw) if raw else None
            status, payload = fake.handle(self.command, u.path, query, body, self.headers.get("Authorization"))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _do

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield fake.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
