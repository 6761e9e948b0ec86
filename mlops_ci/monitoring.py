"""What a live model receives and answers, against what it was trained on.

`profile` describes a table (the training channel at train time, with the model's predictions on
it): per feature its count, missing, and for a number min/max/mean/std, deciles and a sketch of
its distribution (SKETCH evenly spaced order statistics), for text its top values. `compare`
sets a window of captured traffic (mlops_ci/serving/capture.py's records) against it:

- per feature, the population stability index over the baseline's deciles (categories for text)
  and, for a number, the two-sample Kolmogorov-Smirnov statistic against the sketch with its
  asymptotic p-value from the limiting Kolmogorov distribution at sqrt(n m / (n + m)) D (scipy's
  `kstwobign`; scipy's `ks_2samp` uses the finite-n distribution at round(n m / (n + m)), which
  gives slightly smaller p-values for small windows);
- schema violations: rows of another width, named fields missing or extra, text where the
  baseline had numbers;
- the predictions' distribution, the same way;
- error rate and latency, from the local capture's own fields (SageMaker's records have none).

Pure functions over plain data: the verb (mlops_ci/verbs/monitor.py) reads the records and the
baseline, this module decides.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
from collections import Counter
from dataclasses import dataclass

SCHEMA = "mlops-ci/statistics/v1"
STATISTICS = "mlops-ci:statistics"  # a run's link: where its baseline statistics are
STATISTICS_SHA256 = "mlops-ci:statistics-sha256"  # and their digest, sealed with the run
SKETCH = 1000  # order statistics kept per numeric feature: the KS reference
TOP = 20  # top values kept per text feature
EPS = 1e-4  # a bin's share when it is empty (PSI is undefined at 0)


@dataclass(frozen=True)
class Thresholds:
    psi: float = 0.2
    ks_pvalue: float = 0.01
    ks_statistic: float = 0.1  # KS flags a feature when p < ks_pvalue AND D >= this (a large window finds any D)
    prediction_psi: float = 0.2
    max_error_rate: float = 0.05
    max_p99_ms: float | None = None
    max_violation_rate: float = 0.01
    min_records: int = 30


# -- values ------------------------------------------------------------------------------------
def _is_missing(v: object) -> bool:
    return v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and math.isnan(v))


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def cell(text: str) -> object:
    """A CSV cell as the model gets it: a number where it is one."""
    s = text.strip()
    try:
        return int(s)
    except ValueError:
        pass
    try:
        x = float(s)
    except ValueError:
        return text
    return x if math.isfinite(x) else text


def prediction_value(p: object) -> object:
    """One prediction as a value to profile: a number, a label, or the argmax of a score list."""
    if isinstance(p, list) and len(p) == 1:
        p = p[0]
    if isinstance(p, list) and p and all(_is_number(x) for x in p):
        return str(max(range(len(p)), key=lambda i: p[i]))  # type: ignore[index]
    if isinstance(p, dict):
        for key in ("label", "predicted_label", "prediction", "score"):
            if key in p:
                return prediction_value(p[key])
    return p if _is_number(p) or isinstance(p, str) else json.dumps(p, sort_keys=True)


# -- profiles ---------------------------------------------------------------------------------
def _sketch(ordered: list[float], n: int = SKETCH) -> list[float]:
    if len(ordered) <= n:
        return ordered
    return [ordered[round(i * (len(ordered) - 1) / (n - 1))] for i in range(n)]


def _quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def profile_values(values: list[object]) -> dict[str, object]:
    present = [v for v in values if not _is_missing(v)]
    out: dict[str, object] = {"count": len(values), "missing": len(values) - len(present)}
    if present and all(_is_number(v) for v in present):
        xs = sorted(float(v) for v in present)  # type: ignore[arg-type]
        mean = sum(xs) / len(xs)
        out.update(type="number", min=xs[0], max=xs[-1], mean=mean,
                   std=math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs)),
                   deciles=[_quantile(xs, i / 10) for i in range(11)], sketch=_sketch(xs))  # fmt: skip
        return out
    counts = Counter(str(v) for v in present)
    top = counts.most_common(TOP)
    out.update(type="text", distinct=len(counts), top=[[k, n] for k, n in top],
               other=len(present) - sum(n for _, n in top))  # fmt: skip
    return out


def profile(columns: list[str], rows: list[list[object]], predictions: list[object]) -> dict[str, object]:
    """The statistics of a table and of the model's predictions on it."""
    features = {name: profile_values([r[j] if j < len(r) else None for r in rows]) for j, name in enumerate(columns)}
    return {"schema": SCHEMA, "rows": len(rows), "columns": list(columns), "features": features,
            "predictions": profile_values([prediction_value(p) for p in predictions])}  # fmt: skip


# -- the statistics ---------------------------------------------------------------------------
def psi(expected: list[float], actual: list[float]) -> float:
    """Population stability index of two distributions over the same bins (shares)."""
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, EPS), max(a, EPS)
        total += (a - e) * math.log(a / e)
    return total


def _bins(edges: list[float], xs: list[float]) -> list[float]:
    """Shares of `xs` in the bins the inner edges cut: (-inf, e1], (e1, e2], ..., (ek, inf)."""
    inner = sorted(set(edges[1:-1]))
    counts = [0] * (len(inner) + 1)
    for x in xs:
        lo, hi = 0, len(inner)
        while lo < hi:  # the first edge >= x
            mid = (lo + hi) // 2
            if inner[mid] < x:
                lo = mid + 1
            else:
                hi = mid
        counts[lo] += 1
    return [c / len(xs) for c in counts] if xs else [0.0] * len(counts)


def numeric_psi(base: dict[str, object], xs: list[float]) -> float:
    deciles = base["deciles"]
    sketch = base["sketch"]
    assert isinstance(deciles, list) and isinstance(sketch, list)
    return psi(_bins(deciles, sketch), _bins(deciles, xs))


def text_psi(base: dict[str, object], values: list[str]) -> float:
    top = base["top"]
    assert isinstance(top, list)
    names = [str(k) for k, _ in top]
    present = int(base["count"]) - int(base["missing"])  # type: ignore[call-overload]
    expected = [int(n) / present for _, n in top] + [int(base["other"]) / present]  # type: ignore[call-overload]
    counts = Counter(values)
    known = set(names)
    others = sum(n for k, n in counts.items() if k not in known)
    actual = [counts[k] / len(values) for k in names] + [others / len(values)]
    return psi(expected, actual)


def ks_2samp(a: list[float], b: list[float]) -> tuple[float, float]:
    """(D, p): the two-sample Kolmogorov-Smirnov statistic and its asymptotic p-value."""
    a, b = sorted(a), sorted(b)
    n, m = len(a), len(b)
    i = j = 0
    d = 0.0
    while i < n and j < m:
        x = min(a[i], b[j])
        while i < n and a[i] <= x:
            i += 1
        while j < m and b[j] <= x:
            j += 1
        d = max(d, abs(i / n - j / m))
    return d, kolmogorov_sf(math.sqrt(n * m / (n + m)) * d)


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution: 2 * sum_k (-1)^(k-1) exp(-2 k^2 x^2)."""
    if x <= 0:
        return 1.0
    if x < 0.3:  # the alternating series converges slowly here; the complement's series is exact enough
        s = sum(math.exp(-((2 * k - 1) ** 2) * math.pi**2 / (8 * x * x)) for k in range(1, 30))
        return max(0.0, min(1.0, 1.0 - math.sqrt(2 * math.pi) / x * s))
    total = math.fsum((1.0 if k % 2 else -1.0) * math.exp(-2.0 * k * k * x * x) for k in range(1, 101))
    return max(0.0, min(1.0, 2.0 * total))


# -- captured traffic -------------------------------------------------------------------------
@dataclass
class Window:
    rows: list[list[object]]
    predictions: list[object]
    records: int = 0
    unreadable: int = 0  # records whose input or output could not be read
    wrong_width: int = 0
    missing_fields: Counter[str] | None = None
    extra_fields: Counter[str] | None = None
    statuses: Counter[int] | None = None
    latencies: list[float] | None = None


def _decode(side: dict[str, object]) -> str:
    data = str(side.get("data", ""))
    if side.get("encoding") == "BASE64":
        return base64.b64decode(data).decode("utf-8")
    return data


def media_type(content_type: str) -> str:
    """`text/csv; charset=utf-8` → `text/csv`."""
    return content_type.split(";", 1)[0].strip().lower()


def _unwrap(value: object, keys: tuple[str, ...]) -> object:
    """A JSON body's payload: the first of `keys` an object has (SageMaker containers' envelopes)."""
    if isinstance(value, dict):
        for key in keys:
            if key in value:
                return value[key]
    return value


def _rows(text: str, content_type: str, columns: list[str], w: Window) -> list[list[object]]:
    if media_type(content_type) == "text/csv":
        return [[cell(c) for c in r] for r in csv.reader(io.StringIO(text)) if r]
    value = _unwrap(json.loads(text), ("instances", "inputs", "data"))
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list) and value and not isinstance(value[0], list | dict):
        value = [value]  # one row
    out = []
    for row in value if isinstance(value, list) else []:
        if isinstance(row, dict):  # named fields: in the baseline's order
            missing = [c for c in columns if c not in row]
            extra = [k for k in row if k not in columns]
            assert w.missing_fields is not None and w.extra_fields is not None
            w.missing_fields.update(missing)
            w.extra_fields.update(str(k) for k in extra)
            out.append([row.get(c) for c in columns])
        else:
            out.append(list(row) if isinstance(row, list) else [row])
    return out


def _predictions(text: str, content_type: str) -> list[object]:
    if media_type(content_type) == "text/csv":
        rows = [r for r in csv.reader(io.StringIO(text)) if r]
        return [cell(r[0]) if len(r) == 1 else [cell(c) for c in r] for r in rows]
    value = _unwrap(json.loads(text), ("predictions", "outputs", "scores"))
    return value if isinstance(value, list) else [value]


def window(records: list[dict[str, object]], columns: list[str]) -> Window:
    """The rows and predictions of captured records (SageMaker's Data Capture format)."""
    w = Window(rows=[], predictions=[], missing_fields=Counter(), extra_fields=Counter(), statuses=Counter(),
               latencies=[])  # fmt: skip
    for rec in records:
        w.records += 1
        ours = rec.get("mlopsCi")
        if isinstance(ours, dict):
            assert w.statuses is not None and w.latencies is not None
            if isinstance(ours.get("status"), int):
                w.statuses[ours["status"]] += 1
            if _is_number(ours.get("latencyMs")):
                w.latencies.append(float(ours["latencyMs"]))
            if isinstance(ours.get("status"), int) and ours["status"] >= 400:
                continue  # a refused request: counted, its input is no traffic the model answered
        try:
            data = rec["captureData"]
            assert isinstance(data, dict)
            inp, outp = data["endpointInput"], data.get("endpointOutput")
            rows = _rows(_decode(inp), str(inp.get("observedContentType", "")), columns, w)
            preds = _predictions(_decode(outp), str(outp.get("observedContentType", ""))) if outp else []
        except (KeyError, TypeError, AssertionError, ValueError, UnicodeDecodeError, csv.Error, AttributeError):
            w.unreadable += 1
            continue
        paired = len(preds) == len(rows)  # an answer per row: the predictions are the rows'
        for i, r in enumerate(rows):
            if len(r) != len(columns):
                w.wrong_width += 1
                continue
            w.rows.append(r)
            if paired:
                w.predictions.append(preds[i])
    return w


# -- the comparison ---------------------------------------------------------------------------
def _percentile(xs: list[float], q: float) -> float | None:
    return _quantile(sorted(xs), q / 100) if xs else None


MAX_FIELDS = 50  # extra field names a report lists


def compare(baseline: dict[str, object], w: Window, t: Thresholds) -> dict[str, object]:
    """The monitor's findings: per feature, the predictions, schema, errors, latency; `alerts`
    lists what crossed a threshold (empty: nothing to act on)."""
    columns = baseline["columns"]
    features = baseline["features"]
    assert isinstance(columns, list) and isinstance(features, dict)
    alerts: list[str] = []
    out_features: dict[str, dict[str, object]] = {}
    type_changes: dict[str, int] = {}
    enough = len(w.rows) >= t.min_records
    for j, name in enumerate(columns):
        base = features[name]
        values = [r[j] for r in w.rows]
        present = [v for v in values if not _is_missing(v)]
        f: dict[str, object] = {"type": base["type"], "count": len(values), "missing": len(values) - len(present)}
        if base["type"] == "number":
            xs = [float(v) for v in present if _is_number(v)]  # type: ignore[arg-type]
            changed = len(present) - len(xs)
            if changed:
                type_changes[name] = changed
            if xs:
                mean = sum(xs) / len(xs)
                d, p = ks_2samp(list(base["sketch"]), xs)
                f.update(mean=mean, baseline_mean=base["mean"], psi=numeric_psi(base, xs), ks=d, ks_pvalue=p)
        elif present:
            f.update(psi=text_psi(base, [str(v) for v in present]))
        drifted = enough and (
            (isinstance(f.get("psi"), float) and f["psi"] >= t.psi)  # type: ignore[operator]
            or (isinstance(f.get("ks"), float) and f["ks"] >= t.ks_statistic and f["ks_pvalue"] < t.ks_pvalue)  # type: ignore[operator]
        )
        f["drift"] = bool(drifted)
        if drifted:
            alerts.append(f"feature {name} drifted (PSI {f.get('psi', 0):.3f}" + (
                f", KS {f['ks']:.3f}, p {f['ks_pvalue']:.2g})" if "ks" in f else ")"))  # fmt: skip
        out_features[name] = f
    preds = [prediction_value(p) for p in w.predictions]
    pbase = baseline["predictions"]
    assert isinstance(pbase, dict)
    prediction: dict[str, object] = {"count": len(preds), "type": pbase.get("type")}
    if preds and pbase.get("type") == "number" and all(_is_number(p) for p in preds):
        prediction["psi"] = numeric_psi(pbase, [float(p) for p in preds])  # type: ignore[arg-type]
    elif preds and pbase.get("type") == "text":
        prediction["psi"] = text_psi(pbase, [str(p) for p in preds])
    if enough and isinstance(prediction.get("psi"), float) and prediction["psi"] >= t.prediction_psi:  # type: ignore[operator]
        alerts.append(f"the predictions drifted (PSI {prediction['psi']:.3f})")
    statuses = w.statuses or Counter()
    answered = sum(statuses.values())
    errors = sum(n for s, n in statuses.items() if s >= 500)
    error_rate = errors / answered if answered else None
    if error_rate is not None and answered >= t.min_records and error_rate > t.max_error_rate:
        alerts.append(f"error rate {error_rate:.1%} > {t.max_error_rate:.1%}")
    p99 = _percentile(w.latencies or [], 99)
    if t.max_p99_ms is not None and p99 is not None and p99 > t.max_p99_ms:
        alerts.append(f"latency p99 {p99:.1f} ms > {t.max_p99_ms:g} ms")
    violations = w.wrong_width + sum(type_changes.values()) + sum((w.missing_fields or Counter()).values())
    rows_seen = len(w.rows) + w.wrong_width
    violation_rate = violations / rows_seen if rows_seen else 0.0
    if rows_seen and violation_rate > t.max_violation_rate:
        alerts.append(f"schema violations in {violation_rate:.1%} of the rows")
    return {
        "records": w.records,
        "rows": len(w.rows),
        "enough": enough,
        "features": out_features,
        "predictions": prediction,
        "schema": {
            "wrong_width": w.wrong_width, "expected_width": len(columns), "type_changes": type_changes,
            "missing_fields": dict(w.missing_fields or {}),
            # names the traffic chose: the 50 most frequent, each cut to 100 characters, and how many in all
            "extra_fields": {k[:100]: n for k, n in (w.extra_fields or Counter()).most_common(MAX_FIELDS)},
            "extra_field_names": len(w.extra_fields or {}),
            "unreadable": w.unreadable, "rate": violation_rate,
        },
        "errors": {"answered": answered, "server_errors": errors, "client_errors":
                   sum(n for s, n in statuses.items() if 400 <= s < 500), "rate": error_rate},
        "latency": {"p50_ms": _percentile(w.latencies or [], 50), "p99_ms": p99},
        "alerts": alerts,
    }  # fmt: skip
