from __future__ import annotations

import json

from mlops_ci.compare import compare
from mlops_ci.config import MetricGoal
from mlops_ci.gate import GateOutcome
from mlops_ci.records import RuleResult, Run
from mlops_ci.report import GITHUB_COMMENT_LIMIT, esc, marker, render_json, render_markdown


def run(run_id: str, sha: str, metrics: dict[str, float], params=None, branch=None) -> Run:
    return Run(
        run_id=run_id,
        project="p",
        sha=sha,
        branch=branch,
        config_digest="d",
        status="completed",
        backend="local",
        started=0,
        finished=1,
        params=params or {},
        metrics=metrics,
        artifact_sha256="f" * 64,
        links={"log": "/tmp/x.log", "tracking": "https://example.com/exp/1"},
    )


def failed_rule(metric: str = "acc") -> RuleResult:
    return RuleResult(metric, f"{metric} >= 0.9", "min", "fail", False, 0.8, None, "0.8 < 0.9", 12)


def test_verdict_first_then_table_chart_and_marker():
    head = run("h1", "a" * 40, {"acc": 0.8, "loss": 0.3}, {"lr": 0.2}, branch="feature")
    base = run("b1", "b" * 40, {"acc": 0.85, "loss": 0.4}, {"lr": 0.1}, branch="main")
    goals = {"acc": MetricGoal("acc", "maximize"), "loss": MetricGoal("loss", "minimize")}
    c = compare("p", head, base, "", goals, {"loss": [1.0, 0.5, 0.3]}, {"loss": [1.0, 0.6, 0.4]})
    md = render_markdown(c, [failed_rule()], False, head_ref="feature", base_ref="main")
    lines = md.splitlines()
    assert lines[0] == marker("p") == "<!-- mlops-ci:report project=p -->"
    assert "`aaaaaaaa` vs `bbbbbbbb`" in lines[1]
    assert lines[3].startswith("❌ **Gate failed**")
    assert md.index("Gate failed") < md.index("### Metrics")
    assert "| acc | 0.85 | 0.8 | -0.05 (-5.88%) | 🔴 worse |" in md
    assert "| loss | 0.4 | 0.3 | -0.1 (-25.00%) | 🟢 better |" in md
    assert "<details><summary>Hyperparameters changed (1)</summary>" in md
    assert "| lr | 0.1 | 0.2 |" in md
    assert "```mermaid\nxychart-beta" in md
    assert "line [1, 0.6, 0.4]" in md and "line [1, 0.5, 0.3]" in md
    assert "[tracking](<https://example.com/exp/1>)" in md
    assert "/tmp/x.log" not in md  # a path on the training machine means nothing in a PR comment


def test_series_of_different_lengths_get_separate_charts():
    head = run("h", "a" * 40, {"loss": 0.1})
    base = run("b", "b" * 40, {"loss": 0.2})
    c = compare("p", head, base, "", {}, {"loss": [3.0, 2.0, 1.0, 0.1]}, {"loss": [3.0, 0.2]})
    md = render_markdown(c, [], True)
    assert md.count("```mermaid") == 2
    assert "x-axis 1 --> 4" in md and "x-axis 1 --> 2" in md


HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "`$(rm -rf ~)`",
    "[click](https://evil.example)",
    "@security-team",
    "a|b|c",
    "**bold** _it_ ~~s~~ # h",
]


def test_escape_rules():
    assert esc("a<b>&c") == "a&lt;b&gt;&amp;c"
    assert esc("x_y*z") == "x\\_y\\*z"
    assert esc("line1\nline2") == "line1 line2"


def test_huge_report_fits_githubs_limit_with_a_note():
    names = [f"metric_{i:04d}" for i in range(1000)]
    head = run("h", "a" * 40, {n: i * 1.0 for i, n in enumerate(names)}, {f"p{i}": i for i in range(1000)})
    base = run("b", "b" * 40, {n: i * 0.9 for i, n in enumerate(names)}, {f"p{i}": i + 1 for i in range(1000)})
    series = {n: [float(j) for j in range(10_000)] for n in names}
    c = compare("p", head, base, "", {}, series, series)
    md = render_markdown(c, [failed_rule("metric_0001")], False)
    assert len(md) <= GITHUB_COMMENT_LIMIT
    assert "_Truncated:_" in md and "more metric(s) not shown" in md
    assert "metric\\_0001" in md.split("### Metrics")[1].splitlines()[4]  # gated metric listed first
    data = json.loads(render_json(c, [failed_rule("metric_0001")], False))
    assert len(data["comparison"]["metrics"]) == 1000  # JSON keeps everything


def test_json_carries_the_same_facts():
    head = run("h", "a" * 40, {"acc": 0.8}, {"lr": 0.2})
    base = run("b", "b" * 40, {"acc": 0.9}, {"lr": 0.1})
    c = compare("p", head, base, "", {"acc": MetricGoal("acc", "maximize")})
    data = json.loads(render_json(c, [failed_rule()], False))
    assert data["marker"] == marker("p")
    assert data["gate"]["passed"] is False
    assert data["comparison"]["baseline"]["sha"] == "b" * 40
    (m,) = data["comparison"]["metrics"]
    assert (m["name"], m["direction"]) == ("acc", "worse")
    assert data["comparison"]["params"] == [{"change": "changed", "name": "lr", "new": 0.2, "old": 0.1}]


def test_non_finite_values_stay_valid_json():
    head = run("h", "a" * 40, {"acc": float("nan")})
    c = compare("p", head, None, "none", {})
    data = json.loads(render_json(c, [], GateOutcome(True, ()).passed))
    assert data["comparison"]["metrics"][0]["new"] == "nan"


def test_a_link_with_line_breaks_or_angle_brackets_stays_one_inert_link():
    """A link's text comes from records someone else may have written (a fork's report artifact,
    a compare_url template): nothing in it may end the link or start markdown on a new line."""
    from mlops_ci.report import _links

    hostile = "https://x/a\n\n# Approved by @acme/security-team\r\n<b>hi</b> x\ty"
    out = _links({"comet": hostile, "log": "/home/me/train.log"})
    assert "\n" not in out and "\r" not in out and "\t" not in out and "<b>" not in out
    assert out == "[comet](<https://x/a%0A%0A#%20Approved%20by%20@acme/security-team%0D%0A%3Cb%3Ehi%3C/b%3E%20x%09y>)"
    # one %XX per byte; a backslash would escape the next character or the closing >
    assert _links({"a": "https://x/p\u2028q\\"}) == "[a](<https://x/p%E2%80%A8q%5C>)"
    # what is already a link passes unchanged
    assert _links({"a": "https://x/p%20q?a=b&c=d#f"}) == "[a](<https://x/p%20q?a=b&c=d#f>)"
