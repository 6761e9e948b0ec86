"""The shape of the house (docs/architecture.md): backends are chosen through the tables in
mlops_ci/kinds.py only, imports go one way, and `Any` stays rare."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

import mlops_ci
from mlops_ci import config, kinds

PKG = Path(mlops_ci.__file__).parent
SOURCES = sorted(p for p in PKG.rglob("*.py") if "_offline_comet" not in p.parts)
NAMES = {name for table in kinds.TABLES.values() for name in table}


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _backend_checks(path: Path, shown: str) -> list[str]:
    """Comparisons that pick behaviour by a backend's name: `x.backend == ...`, or a name from the
    tables other than the default 'local' compared with anything."""
    found = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        strings: set[str] = set()
        for side in sides:
            elts = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
            strings |= {e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
        on_backend = any(isinstance(s, ast.Attribute) and s.attr == "backend" for s in sides)
        if on_backend or strings & (NAMES - {"local"}):
            found.append(f"{shown}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_backend_is_picked_by_its_name_outside_the_tables():
    offenders = [c for p in SOURCES if p.name != "kinds.py" for c in _backend_checks(p, str(p.relative_to(PKG)))]
    assert offenders == []


def test_the_backend_check_finds_what_it_is_for(tmp_path: Path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "if cfg.training.backend == 'local': pass\n"
        "if name in ('x', 'sagemaker'): pass\n"
        "if tracker != 'comet': pass\n"
        "if step == 'local': pass\n"
    )
    got = [line.split(": ", 1)[1] for line in _backend_checks(sample, "sample.py")]
    assert got == ["cfg.training.backend == 'local'", "name in ('x', 'sagemaker')", "tracker != 'comet'"]


@pytest.mark.parametrize("table", sorted(kinds.TABLES))
def test_every_entry_of_the_tables_loads(table: str):
    for name, kind in kinds.TABLES[table].items():
        assert kind.name == name
        if kind.impl:
            impl = kind.load()
            assert callable(impl), f"{table}.{name}: {kind.impl}"
        if kind.settings:
            parser = config.settings_of(kind)
            assert parser is not None, f"{table}.{name}: {kind.settings}"
            if parser.section is not None:  # what it parses: its section, with its own keys added
                core = {"training": config.TrainingConfig, "tracking": config.TrackingConfig,
                        "endpoints": config.EndpointConfig}[table]  # fmt: skip
                assert issubclass(parser.section, core) and parser.parse is not None
                assert set(parser.keys) <= set(parser.section.__dataclass_fields__) - set(core.__dataclass_fields__)


# -- the core config parser knows no backend's settings --------------------------------------
def _owned_keys() -> set[str]:
    """The keys the backends' own parsers add to their sections (training.sagemaker, tracking.workspace, ...)."""
    parsers = [config.settings_of(k) for table in kinds.TABLES.values() for k in table.values()]
    owned = {key for p in parsers if p is not None for key in p.keys}
    # a key every backend of one kind shares is the core's there, though a backend of another kind
    # has one of that name (training.instance_count, and a SageMaker endpoint's instance_count)
    core = {f.name for section in (config.TrainingConfig, config.TrackingConfig, config.EndpointConfig)
            for f in dataclasses.fields(section)}  # fmt: skip
    return owned - core


def _backend_words(path: Path, shown: str, owned: set[str]) -> list[str]:
    """Names and text in a module that belong to a backend: an identifier or string (docstrings,
    messages, f-string parts, module names) naming a backend the config chooses other than the
    default 'local', and a string that is a key a backend's own parser reads."""
    # the backends mlops-ci.yaml chooses (the forge is not one: `.github/` is any repository's)
    chosen = {n for table in ("training", "tracking", "registry", "endpoints") for n in kinds.TABLES[table]}
    names = sorted(n.lower() for n in chosen - {"local"})
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        words: list[str] = []
        if isinstance(node, ast.Name):
            words = [node.id]
        elif isinstance(node, ast.Attribute):
            words = [node.attr]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            words = [node.name]
        elif isinstance(node, ast.arg) or (isinstance(node, ast.keyword) and node.arg):
            words = [node.arg]
        elif isinstance(node, ast.ImportFrom):
            words = [node.module or "", *(a.name for a in node.names), *(a.asname or "" for a in node.names)]
        elif isinstance(node, ast.Import):
            words = [*(a.name for a in node.names), *(a.asname or "" for a in node.names)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in owned:
                found.append((node.lineno, f"{node.value!r} is a key a backend's own parser reads"))
            words = [node.value]
        for word in words:
            hit = next((n for n in names if n in word.lower()), None)
            if hit:
                found.append((getattr(node, "lineno", 0), f"{word[:60]!r} names {hit}"))
    return [f"{shown}:{line}: {what}" for line, what in sorted(found)]


def test_the_core_config_parser_knows_no_backend_by_its_settings():
    # SageMaker's and Comet's settings are parsed by their own parsers (mlops_ci/settings/),
    # which their table entries name; config.py reads only what every backend of a kind shares
    assert _backend_words(PKG / "config.py", "config.py", _owned_keys()) == []


def test_the_settings_check_finds_what_it_is_for(tmp_path: Path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Parses the SageMaker job."""\n'
        "from .settings.comet import X\n"
        "def parse_sagemaker(r, sm_settings): pass\n"
        "x = cfg.training.sagemaker\n"
        "y = m.get('instance_type')\n"
        "z = f'a {k} Comet'\n"
        "w = m.get('backend')\n"
    )
    got = [line.split(": ", 1)[1] for line in _backend_words(sample, "sample.py", _owned_keys())]
    assert got == [
        "'Parses the SageMaker job.' names sagemaker",
        "'settings.comet' names comet",
        "'parse_sagemaker' names sagemaker",
        "'sagemaker' names sagemaker",
        "'instance_type' is a key a backend's own parser reads",
        "' Comet' names comet",
    ]


def _imports(path: Path) -> set[str]:
    """Every mlops_ci module `path` imports, at any depth of the file (TYPE_CHECKING included)."""
    me = _module(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("mlops_ci")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            if not mod.startswith("mlops_ci"):
                continue
            names.add(mod)
            names |= {f"{mod}.{a.name}" for a in node.names}  # `from . import x` imports module x
    modules = {_module(p) for p in SOURCES}
    return {n for n in names if n in modules and n != me}


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in SOURCES}


def test_no_import_circle():
    graph = _graph()
    # a package's __init__ importing its own submodules is not a circle of the design
    edges = {
        m: {d for d in deps if not m.startswith(d + ".") and not d.startswith(m + ".")} for m, deps in graph.items()
    }
    circles = []
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                circles.append(" → ".join([*path[path.index(d) :], d]))
            elif d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert circles == []


# Lower layers never import higher ones (docs/architecture.md).
LAYERS = [
    ("CI environment", r"mlops_ci\.ci$"),
    (
        "records and rules",
        r"mlops_ci\.(records|errors|compare|gate|integrity|_files|_yamlload|progress|report|diff_report"
        r"|_markdown|diff_metrics|kinds|distribution|tuning|monitoring)$",
    ),
    ("backends", r"mlops_ci\.backends(\..*)?$"),
    ("workspace", r"mlops_ci\.(workspace|refs)$"),
    ("verbs", r"mlops_ci\.(verbs(\..*)?|lineage|storeops|doctor)$"),
    ("command line", r"mlops_ci\.cli(\..*)?$"),
]


def _layer(module: str) -> int | None:
    return next((i for i, (_, pattern) in enumerate(LAYERS) if re.match(pattern, module)), None)


def test_imports_go_down_the_layers_only():
    upward = []
    for m, deps in _graph().items():
        mine = _layer(m)
        for d in deps:
            theirs = _layer(d)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{m} ({LAYERS[mine][0]}) imports {d} ({LAYERS[theirs][0]})")
    assert sorted(upward) == []


def _ci_reads(path: Path, shown: str) -> list[str]:
    """Reads of a CI variable (GITHUB_*, RUNNER_*) from an environment: `env.get("GITHUB_X")`,
    `os.environ["RUNNER_X"]`, `os.getenv("GITHUB_X")`."""
    found = []

    def ci_name(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith(("GITHUB_", "RUNNER_"))
        )

    def environment(node: ast.AST) -> bool:
        text = ast.unparse(node)
        return "env" in text.rsplit(".", 1)[-1].lower() or text == "os"

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            if node.func.attr in ("get", "getenv") and ci_name(node.args[0]) and environment(node.func.value):
                found.append(f"{shown}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Subscript) and ci_name(node.slice) and environment(node.value):
            found.append(f"{shown}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_ci_environment_is_read_in_one_module():
    offenders = [r for p in SOURCES if p.name != "ci.py" for r in _ci_reads(p, str(p.relative_to(PKG)))]
    assert offenders == []


def test_the_ci_read_check_finds_what_it_is_for(tmp_path: Path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "a = env.get('GITHUB_REF')\n"
        "b = os.environ['RUNNER_TEMP']\n"
        "c = os.getenv('GITHUB_SHA')\n"
        "d = self.env.get('GITHUB_ACTIONS')\n"
        "e = identity.get('GITHUB_REPOSITORY')\n"
        "f = env.get('MLOPS_CI_STORE')\n"
    )
    got = [line.split(": ", 1)[1] for line in _ci_reads(sample, "sample.py")]
    assert got == [
        "env.get('GITHUB_REF')",
        "os.environ['RUNNER_TEMP']",
        "os.getenv('GITHUB_SHA')",
        "self.env.get('GITHUB_ACTIONS')",
    ]


def test_any_is_rare():
    lines = sum(len(p.read_text().splitlines()) for p in SOURCES)
    with_any = sum(1 for p in SOURCES for line in p.read_text().splitlines() if re.search(r"\bAny\b", line))
    assert with_any * 1000 <= 10 * lines, f"{with_any} lines of {lines} mention Any"
