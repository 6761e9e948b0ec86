"""What `config check` can know before anything runs, beyond the schema: configured paths that
do not exist, gate rules and metric goals naming a metric no definition produces, thresholds
that read one way and mean another, endpoints that could never start.

Errors make `config check` exit 2; warnings are printed and let it pass (a metric may come from
metrics.json, a channel may be made by an earlier step of the workflow). `train` checks for
itself, at the commit it trains and before any compute is spent, that the entry point and the
serving files exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import _yamlload
from .config import Config

_Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Finding:
    level: str  # "error" or "warning"
    where: str  # file:line:col
    key: str  # dotted key path, e.g. gate.rules.1.metric
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.key}: {self.message}"


def _close(word: str, options: list[str]) -> str:
    import difflib  # only when there is something to suggest

    match = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    match = match or [o for o in options if len(o) > 1 and (word.startswith(o) or o.startswith(word))][:1]
    return f" (did you mean '{match[0]}'?)" if match else ""


class _Checker:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.root = Path(cfg.root)
        text = (self.root / Path(cfg.file).name).read_text(encoding="utf-8")
        self.loaded = _yamlload.load(text, cfg.file)
        self.found: list[Finding] = []

    def add(self, level: str, path: _Path, message: str) -> None:
        from ._untrusted import inline  # a hostile key is shown, escaped, on one line

        key = ".".join(inline(p) for p in path)
        self.found.append(Finding(level, self.loaded.where(path), key, message))


def findings(cfg: Config) -> list[Finding]:
    """Every problem `config check` reports for `cfg`, in file order of the checks below."""
    c = _Checker(cfg)
    _paths(c)
    _metric_names(c)
    _thresholds(c)
    _serving(c)
    _backends(c)
    return c.found


def _paths(c: _Checker) -> None:
    t = c.cfg.training
    source = c.root / t.source_dir
    if not source.is_dir():
        c.add("error", ("training", "source_dir"), f"directory '{t.source_dir}' does not exist; fix the path")
        return
    if not (source / t.entry_point).is_file():
        where = f" under {t.source_dir}" if t.source_dir not in (".", "") else ""
        py = sorted(p.name for p in source.glob("*.py"))
        c.add(
            "error",
            ("training", "entry_point"),
            f"file '{t.entry_point}'{where} does not exist{_close(t.entry_point, py)}; fix the path or add the script",
        )
    for name, uri in t.channels.items():
        if "://" in uri:
            continue  # S3 channels: read by SageMaker, not checkable here without credentials
        if not Path(uri).is_absolute() and not (c.root / uri).resolve().is_relative_to(c.root.resolve()):
            c.add(
                "error",
                ("training", "channels", name),
                f"'{uri}' leaves the directory of {c.cfg.file}, which training refuses; use a path inside it, or an "
                "absolute path for data kept elsewhere on this machine",
            )
            continue
        if not (c.root / uri).exists():
            c.add(
                "warning",
                ("training", "channels", name),
                f"'{uri}' does not exist here; training fails unless an earlier step creates it",
            )
    s = c.cfg.serving
    for i, rel in enumerate(([s.entry_point] if s.entry_point else []) + list(s.include)):
        key: _Path = (
            ("serving", "entry_point")
            if (s.entry_point and i == 0)
            else ("serving", "include", i - bool(s.entry_point))
        )
        if not (source / rel).exists():
            c.add(
                "error",
                key,
                f"'{rel}' does not exist under training.source_dir ({t.source_dir}); the model is packed with it "
                "after training, so fix the path now",
            )


def _metric_names(c: _Checker) -> None:
    from .diff_metrics import is_diff_metric

    for i, rule in enumerate(_rules_in_file(c)):
        if isinstance(rule, str) and is_diff_metric(rule):
            _diff_rule(c, i, rule)
    defined = [d.name for d in c.cfg.training.metric_definitions]
    if not defined:
        return  # every metric comes from the script's metrics.json: nothing to check against
    goals = list(c.cfg.metrics)
    known = sorted(set(defined) | set(goals))
    said: set[str] = set()
    for i, rule in enumerate(_rules_in_file(c)):
        if rule in known or rule in said or (isinstance(rule, str) and is_diff_metric(rule)):
            continue
        said.add(rule)
        c.add(
            "warning",
            ("gate", "rules", i, "metric"),
            f"'{rule}' is not a metric of training.metric_definitions{_close(rule, known)}; unless the script "
            "writes it to metrics.json, this rule fails every run as if the model had regressed",
        )
    for name in goals:
        if name not in defined and name not in said:
            c.add(
                "warning",
                ("metrics", name),
                f"'{name}' is not a metric of training.metric_definitions{_close(name, defined)}; unless the script "
                "writes it to metrics.json, this goal is never used",
            )


def _diff_rule(c: _Checker, i: int, rule: str) -> None:
    """A rule on a model-diff quantity: it has a value only when the review makes a diff."""
    where = ("gate", "rules", i, "metric")
    review = c.cfg.review
    why = None
    if not review.model_diff:
        why = "review.model_diff is false"
    elif not c.cfg.serving.entry_point:
        why = "serving.entry_point is not set (the diff loads the models through it)"
    elif review.eval_channel not in c.cfg.training.channels:
        why = f"review.eval_channel '{review.eval_channel}' is not one of training.channels"
    if why:
        c.add("warning", where, f"'{rule}' comes from the model diff, and {why}: this rule fails every run")
        return
    if "@" in rule:
        column = rule.split("@", 1)[1].split("=", 1)[0]
        if column != c.cfg.review.slice_column:
            have = f"'{c.cfg.review.slice_column}'" if c.cfg.review.slice_column else "not set"
            c.add(
                "warning",
                where,
                f"'{rule}' names the slice column '{column}', but review.slice_column is "
                f"{have}: this rule fails every run",
            )


def _rules_in_file(c: _Checker) -> list[str]:
    gate = c.loaded.data.get("gate") if isinstance(c.loaded.data, dict) else None
    rules = gate.get("rules") if isinstance(gate, dict) else None
    return [r.get("metric", "") if isinstance(r, dict) else "" for r in rules or ()]


def _thresholds(c: _Checker) -> None:
    gate = c.loaded.data.get("gate") if isinstance(c.loaded.data, dict) else None
    for i, raw in enumerate((gate.get("rules") if isinstance(gate, dict) else None) or ()):
        value = raw.get("max_regression") if isinstance(raw, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
            continue  # a percentage string, or an absolute limit below 1 (a drop of 0.02 in accuracy)
        shown = f"{value:g}"
        c.add(
            "warning",
            ("gate", "rules", i, "max_regression"),
            f"{shown} is an absolute change of {shown} in {raw.get('metric')}'s own units (a metric in [0, 1] "
            f"could never fail it); for a relative limit write '{shown}%'",
        )


def _backends(c: _Checker) -> None:
    """What the chosen backends' own settings parsers advise (config.Settings.advice)."""
    from .config import chosen_settings

    for parser in chosen_settings(c.cfg):
        for level, path, message in parser.advice(c.cfg) if parser.advice else ():
            c.add(level, path, message)


def _serving(c: _Checker) -> None:
    s = c.cfg.serving
    if c.cfg.endpoints and not s.entry_point:
        from .serving.contract import no_entry_point_message

        c.add(
            "warning",
            ("serving",),
            f"endpoints are declared but {no_entry_point_message()} (training and the gate work without it)",
        )
        return
    if not s.entry_point:
        return
    script = c.root / c.cfg.training.source_dir / s.entry_point
    try:
        text = script.read_text(encoding="utf-8-sig")  # a BOM is what Python itself accepts
    except (OSError, UnicodeDecodeError):
        return  # missing: reported by _paths; undecodable: left to Python to say at serve time
    import ast

    try:
        tree = ast.parse(text, filename=str(script))
    except SyntaxError as exc:
        c.add("error", ("serving", "entry_point"), f"'{s.entry_point}' line {exc.lineno}: {exc.msg}")
        return
    if not _may_bind(tree, "model_fn"):
        from .serving.contract import no_model_fn_message

        c.add("error", ("serving", "entry_point"), no_model_fn_message(s.entry_point))


def _may_bind(tree: object, name: str) -> bool:
    """Whether the module could have an attribute `name` once imported (the model server looks it
    up with getattr): a def, an assignment or an import of it anywhere in the module (under
    try/if included), a star import, or module-level dynamics (globals(), exec, setattr) that no
    reading of the text can rule out. Only a module with none of these surely lacks it."""
    import ast

    assert isinstance(tree, ast.Module)
    for n in ast.walk(tree):
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and n.name == name:
            return True
        if isinstance(n, ast.Name) and (
            (n.id == name and isinstance(n.ctx, ast.Store)) or n.id in ("globals", "exec", "setattr", "vars")
        ):
            return True
        if isinstance(n, ast.Import | ast.ImportFrom) and any(
            (a.asname or a.name.split(".")[0]) == name or a.name == "*" for a in n.names
        ):
            return True
    return False
