"""Comet's own settings: the keys of `tracking` beside `backend` when it is `comet` (the workspace
and project, where the API key is, how a logged series is summed up, the compare link, the model
registry). mlops_ci/kinds.py's `comet` entry names TRACKING."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from ..config import KeyPath, Settings, TrackingConfig, core_fields, opt_string

TYPE_CHECKING = False  # as in config.py: only the type checker needs `typing`
if TYPE_CHECKING:
    from ..config import _Reader


@dataclass(frozen=True)
class CometTrackingConfig(TrackingConfig):
    """`tracking` with `backend: comet`: every run becomes a Comet experiment tagged with its
    commit, and the PR report reads its numbers back from Comet."""

    workspace: str | None = None
    project_name: str | None = None  # default: the mlops-ci project
    api_key_env: str = "COMET_API_KEY"  # the environment variable that holds the key (never the key)
    mode: str = "auto"  # auto (online when the key is set) | online | offline
    summary: str = "last"  # which value of a logged series is compared: last | best (per the metric's goal)
    # Comet's experiment diff view, as the public links to it have it (docs/comet.md); override
    # it where a Comet server has another form. Placeholders: COMPARE_URL_FIELDS.
    compare_url: str = "{server}/{workspace}/{project}/{baseline}/{head}/compare"
    model_name: str | None = None  # set: promote registers versions in Comet's model registry under this name
    deployed_status: str = "Production"  # the registry status a deployed version gets
    retired_status: str = "None"  # what the version it replaced gets, once deployed nowhere


def _parse(r: _Reader, m: dict[str, object], p: KeyPath, core: TrackingConfig) -> CometTrackingConfig:
    d = CometTrackingConfig()
    if "workspace" not in m:
        raise r.fail(p, "Comet needs tracking.workspace (the Comet workspace the experiments go to)")
    key_env = r.string(m.get("api_key_env", d.api_key_env), (*p, "api_key_env"))
    if not re.match(r"^[A-Z_][A-Z0-9_]*$", key_env):
        raise r.fail((*p, "api_key_env"), "is the NAME of an environment variable (e.g. COMET_API_KEY), never the key")
    return CometTrackingConfig(
        **core_fields(core),
        workspace=r.string(m["workspace"], (*p, "workspace")),
        project_name=opt_string(r, m, "project_name", p),
        api_key_env=key_env,
        mode=r.string(m.get("mode", "auto"), (*p, "mode"), choices=("auto", "online", "offline")),
        summary=r.string(m.get("summary", "last"), (*p, "summary"), choices=("last", "best")),
        compare_url=_compare_url(r, m.get("compare_url", d.compare_url), (*p, "compare_url")),
        model_name=opt_string(r, m, "model_name", p),
        deployed_status=r.string(m.get("deployed_status", d.deployed_status), (*p, "deployed_status")),
        retired_status=r.string(m.get("retired_status", d.retired_status), (*p, "retired_status")),
    )


COMPARE_URL_FIELDS = ("server", "workspace", "project", "baseline", "head")


def _compare_url(r: _Reader, raw: object, path: KeyPath) -> str:
    """A template with only the known placeholders, each well formed (checked here, not when a
    report is rendered), that makes an http(s) link."""
    import string

    text = r.string(raw, path)
    try:
        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise r.fail(
            path, f"is not a valid template ({exc}); write placeholders as {{name}}, braces as {{{{ }}}}"
        ) from None
    if any(spec or conv for _, spec, conv in parsed):
        raise r.fail(path, "placeholders take no format spec or conversion: write {name}")
    names = [f for f, _, _ in parsed]
    unknown = sorted({f for f in names if f not in COMPARE_URL_FIELDS})
    if unknown:
        raise r.fail(
            path,
            f"has unknown placeholder {{{unknown[0]}}}; allowed: " + ", ".join(f"{{{f}}}" for f in COMPARE_URL_FIELDS),
        )
    if not {"baseline", "head"} <= set(names):
        raise r.fail(path, "must contain {baseline} and {head} (the two experiment keys)")
    if not re.match(r"^(\{server\}|https?://)", text):
        raise r.fail(path, "must start with {server} or http(s)://")
    if re.search(r"[\s<>\x00-\x1f\x7f]", text):
        raise r.fail(path, "must be one URL: no spaces, line breaks, control characters or < >")
    return text


_OWN = tuple(f.name for f in fields(CometTrackingConfig) if f.name not in TrackingConfig.__dataclass_fields__)
TRACKING = Settings(CometTrackingConfig, _OWN, _parse)
