"""The monitor's statistics (mlops_ci/monitoring.py) against independent computations: numpy's
percentiles and histograms, scipy's two-sample Kolmogorov-Smirnov test and Kolmogorov
distribution; the capture records it reads; what it flags."""

from __future__ import annotations

import base64
import json
import math
import random

import numpy as np
import pytest
from scipy import stats

from mlops_ci import monitoring as mon


def _psi_numpy(baseline: np.ndarray, window: np.ndarray, edges: np.ndarray) -> float:
    """PSI written again here: numpy's histogram over the baseline deciles, open at both ends."""
    inner = np.unique(edges[1:-1])
    cuts = np.concatenate(([-np.inf], inner, [np.inf]))
    # numpy's bins are [a, b); the monitor's are (a, b]: count with searchsorted on the right side instead
    e = np.bincount(np.searchsorted(inner, baseline, side="left"), minlength=len(cuts) - 1) / len(baseline)
    a = np.bincount(np.searchsorted(inner, window, side="left"), minlength=len(cuts) - 1) / len(window)
    e, a = np.maximum(e, 1e-4), np.maximum(a, 1e-4)
    return float(np.sum((a - e) * np.log(a / e)))


@pytest.mark.parametrize(("n", "m", "shift"), [(1000, 200, 0.0), (1000, 500, 0.3), (300, 40, 1.0), (50, 50, 0.0)])
def test_ks_is_scipys(n: int, m: int, shift: float):
    rng = np.random.default_rng(n + m)
    a = np.round(rng.normal(0, 1, n), 2)  # rounded: ties, as real data has
    b = np.round(rng.normal(shift, 1, m), 2)
    d, p = mon.ks_2samp(a.tolist(), b.tolist())
    ref = stats.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(ref.statistic, abs=1e-12)
    # the limiting distribution at sqrt(n m / (n + m)) D (scipy's own uses the finite-n one)
    assert p == pytest.approx(stats.kstwobign.sf(math.sqrt(n * m / (n + m)) * ref.statistic), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("x", [0.05, 0.2, 0.29, 0.31, 0.5, 0.8, 1.0, 1.36, 2.0, 3.0])
def test_the_kolmogorov_distribution_is_scipys(x: float):
    assert mon.kolmogorov_sf(x) == pytest.approx(stats.kstwobign.sf(x), rel=1e-9, abs=1e-12)


def test_a_profile_is_numpys_percentiles_mean_and_std():
    rng = np.random.default_rng(3)
    xs = rng.gamma(2.0, 3.0, 5000)
    p = mon.profile_values([*xs.tolist(), None, ""])
    assert p["count"] == 5002 and p["missing"] == 2 and p["type"] == "number"
    assert p["deciles"] == pytest.approx(np.percentile(xs, np.arange(0, 101, 10)).tolist())
    assert p["mean"] == pytest.approx(xs.mean()) and p["std"] == pytest.approx(xs.std())
    assert len(p["sketch"]) == mon.SKETCH and p["sketch"][0] == xs.min() and p["sketch"][-1] == xs.max()  # type: ignore[arg-type,index]
    text = mon.profile_values(["a", "b", "a", "<b>x</b>", None])
    assert text["type"] == "text" and text["top"] == [["a", 2], ["b", 1], ["<b>x</b>", 1]] and text["other"] == 0


@pytest.mark.parametrize("shift", [0.0, 0.5, 2.0])
def test_psi_is_the_independent_computation(shift: float):
    rng = np.random.default_rng(11)
    base = rng.normal(0, 1, 3000)
    win = rng.normal(shift, 1, 800)
    prof = mon.profile_values(base.tolist())
    sketch = np.array(prof["sketch"])
    ours = mon.numeric_psi(prof, win.tolist())
    assert ours == pytest.approx(_psi_numpy(sketch, win, np.array(prof["deciles"])), rel=1e-9)
    if shift == 0.0:
        assert ours < 0.1
    if shift == 2.0:
        assert ours > 1.0


def _record(inp: str, out: str, itype: str = "application/json", status: int = 200, encoding: str = "JSON",
            latency: float = 2.0) -> dict[str, object]:  # fmt: skip
    data = base64.b64encode(inp.encode()).decode() if encoding == "BASE64" else inp
    return {"captureData": {"endpointInput": {"observedContentType": itype, "mode": "INPUT", "data": data,
                                              "encoding": encoding},
                            "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                                               "data": out, "encoding": "JSON"}},
            "eventMetadata": {"eventId": "x", "inferenceTime": "2026-12-06T05:00:00.000Z"}, "eventVersion": "0",
            "mlopsCi": {"status": status, "latencyMs": latency, "version": "1"}}  # fmt: skip


def test_the_window_reads_json_csv_base64_and_named_fields():
    cols = ["a", "b"]
    w = mon.window([
        _record("[[1, 2], [3, 4]]", "[0.1, 0.2]"),
        _record("5,6\n7,8", "[1, 0]", itype="text/csv", encoding="BASE64"),
        _record('{"instances": [{"a": 9, "b": 10}, {"a": 11, "c": 1}]}', "[[0.2, 0.8], [0.9, 0.1]]"),
        _record("[[1, 2, 3]]", "[0]"),  # another width
        _record("not json", "[0]"),
        _record("[[0, 0]]", '{"error": "x"}', status=500),
    ], cols)  # fmt: skip
    assert w.rows == [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, None]]
    assert w.predictions == [0.1, 0.2, 1, 0, [0.2, 0.8], [0.9, 0.1]]
    assert w.wrong_width == 1 and w.unreadable == 1
    assert w.missing_fields == {"b": 1} and w.extra_fields == {"c": 1}
    assert w.statuses == {200: 5, 500: 1}
    assert [mon.prediction_value(p) for p in w.predictions[-2:]] == ["1", "0"]


def _baseline(n: int = 2000, seed: int = 1) -> dict[str, object]:
    rng = random.Random(seed)
    rows = [[rng.gauss(0, 1), rng.gauss(5, 2), rng.choice(["x", "y", "z"])] for _ in range(n)]
    preds = [r[0] + r[1] / 5 for r in rows]
    return mon.profile(["f0", "f1", "kind"], rows, preds)  # type: ignore[arg-type]


def _traffic(n: int, shift: float, seed: int = 2, kind: str = "") -> list[dict[str, object]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        row = [rng.gauss(shift, 1), rng.gauss(5, 2), kind or rng.choice(["x", "y", "z"])]
        out.append(_record(json.dumps([row]), json.dumps([row[0] + row[1] / 5])))
    return out


def test_unchanged_traffic_raises_nothing_and_a_shift_is_flagged():
    base = _baseline()
    t = mon.Thresholds()
    same = mon.compare(base, mon.window(_traffic(400, 0.0), ["f0", "f1", "kind"]), t)
    assert same["alerts"] == [], same["alerts"]
    moved = mon.compare(base, mon.window(_traffic(400, 1.5, kind="z"), ["f0", "f1", "kind"]), t)
    flagged = {n for n, f in moved["features"].items() if f["drift"]}  # type: ignore[union-attr]
    assert flagged == {"f0", "kind"}
    assert any(a.startswith("the predictions drifted") for a in moved["alerts"])  # type: ignore[union-attr]


def test_too_few_records_flag_no_drift_and_errors_and_latency_are_counted():
    base = _baseline()
    few = _traffic(10, 3.0)
    few += [_record('[[0, 0, "x"]]', '{"error": "boom"}', status=503, latency=900.0)] * 40
    got = mon.compare(base, mon.window(few, ["f0", "f1", "kind"]), mon.Thresholds(max_p99_ms=500))
    assert not got["enough"] and not any(f["drift"] for f in got["features"].values())  # type: ignore[union-attr]
    assert got["errors"]["server_errors"] == 40 and got["errors"]["rate"] == pytest.approx(0.8)  # type: ignore[index]
    assert any(a.startswith("error rate 80.0%") for a in got["alerts"])  # type: ignore[union-attr]
    assert any(a.startswith("latency p99") for a in got["alerts"])  # type: ignore[union-attr]


def test_text_where_numbers_were_is_a_schema_violation():
    base = _baseline()
    recs = _traffic(100, 0.0) + [_record('[["n/a", 5, "x"]]', "[1.0]")] * 10
    got = mon.compare(base, mon.window(recs, ["f0", "f1", "kind"]), mon.Thresholds())
    assert got["schema"]["type_changes"] == {"f0": 10}  # type: ignore[index]
    assert any("schema violations" in a for a in got["alerts"])  # type: ignore[union-attr]
    assert math.isfinite(got["features"]["f0"]["psi"])  # type: ignore[index]


def _report(records: list[dict[str, object]]) -> dict[str, object]:
    """What `monitor` reports (its fields beside the comparison, as verbs/monitor.py adds them)."""
    got = mon.compare(_baseline(), mon.window(records, ["f0", "f1", "kind"]), mon.Thresholds())
    return {"endpoint": "prod", "version": 3, "sha": "a" * 40, "run_id": "aaaaaaaa-000000", "links": {},
            "window": {"since": 0, "until": 1, "seconds": 3600.0}, "baseline": {"channel": "train", "rows": 2000},
            "thresholds": {"min_records": 30}, **got}  # fmt: skip


def test_names_the_traffic_chose_are_capped_and_inert_in_the_issue():
    from mlops_ci.verbs.monitor import MAX_BODY, _issue_body, issue_marker

    hostile = ["https://evil.example/login", "www.evil.example", "@octocat", "<img src=x onerror=alert(1)>",
               "##[error]x", "a|b", "`tick`"]  # fmt: skip
    records = []
    for i in range(1500):  # a client sends a field of a new long name with every request (the hostile ones twice)
        extra = {hostile[i % len(hostile)] if i < 2 * len(hostile) else f"k{i}-" + "x" * 200: 1}
        records.append(_record(json.dumps({"instances": [{"f0": 0.1, "f1": 5.0, "kind": "x", **extra}]}), "[1.0]"))
    report = _report(records)
    schema = report["schema"]
    assert len(schema["extra_fields"]) == mon.MAX_FIELDS and schema["extra_field_names"] == 1493  # type: ignore[index]
    mark = issue_marker("p", "prod")
    body = _issue_body(report, mark, [], "https://github.example/acme/models/actions/runs/1")
    assert len(body) < 20_000 and "and 1473 more" in body
    line = next(x for x in body.splitlines() if x.startswith("- schema:"))
    # each name is inside a code span: no link, mention, HTML or workflow command is made of it
    for name in ("https://evil.example/login", "www.evil.example", "@octocat", "<img src=x onerror=alert(1)>"):
        assert f"`{name}` ×2" in line
    assert "`a|b` ×2" in line and "`` `tick` `` ×2" in line  # a list item: a pipe is shown as it is
    assert not any(x.startswith(("::", "##[")) for x in body.splitlines())

    # a report too long for an issue keeps its verdict and its alerts, and no heading is made of a sentence
    wide = {f"f{i}-" + "y" * 80: {"type": "number", "drift": True, "psi": 1.0} for i in range(1000)}
    many = dict(report, features=wide, alerts=[f"feature f{i} drifted" for i in range(60)])
    short = _issue_body(many, mark, [], None)
    assert len(short) <= MAX_BODY and short.startswith(mark + "\n") and "🚨 **Alert**" in short
    assert "- feature f0 drifted" in short and "- feature f49 drifted" in short
    lines = short.splitlines()
    assert lines[lines.index("---") - 1] == ""  # `text` + `---` would be a heading


def test_a_retraining_mark_no_clock_reads_counts_as_old():
    from mlops_ci.verbs.monitor import _age, _now_utc

    assert _age("2026-13-45T00:00:00Z") == math.inf  # an edit of the issue cannot stop the monitor
    assert 0 <= _age(_now_utc()) < 5
