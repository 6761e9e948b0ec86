"""Runs a composite action's steps on this machine the way the GitHub runner does, for tests.

Why not `act`: act in host mode cannot fetch remote actions offline (actions/setup-python here),
so this harness runs every `run:` step with its `env:` and `working-directory:` through
`bash --noprofile --norc -eo pipefail`, as the runner does, and skips `uses:` steps (recorded).
Expressions are evaluated only for what our actions use (inputs.*, github.action_path,
github.token, steps.<id>.outputs.<name>, and `x == 'lit'` / `x != 'lit'` in `if:`); anything
else is an error, so the harness cannot silently pass over an expression it does not know.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
COMPARE = re.compile(r"^(.+?)\s*(==|!=)\s*'([^']*)'$")


@dataclass
class ActionResult:
    returncode: int
    outputs: dict[str, str]
    skipped_uses: list[str] = field(default_factory=list)
    log: str = ""


class Harness:
    def __init__(self, env: dict[str, str], workspace: Path, tmp: Path):
        self.env = env
        self.workspace = workspace
        self.tmp = tmp
        self.counter = 0

    def run(self, action_dir: Path, inputs: dict[str, str]) -> ActionResult:
        spec = yaml.safe_load((action_dir / "action.yml").read_text())
        declared = spec.get("inputs") or {}
        unknown = set(inputs) - set(declared)
        if unknown:
            raise ValueError(f"unknown inputs for {action_dir.name}: {sorted(unknown)}")
        ctx: dict[str, Any] = {
            "github": {"action_path": str(action_dir), "token": self.env.get("GITHUB_TOKEN", "")},
            "steps": {},
            "inputs": {},
        }
        values = {}
        for name, meta in declared.items():
            values[name] = self.render(str((meta or {}).get("default", "")), ctx)
        values.update(inputs)
        ctx["inputs"] = values
        result = ActionResult(0, {})
        for step in spec["runs"]["steps"]:
            if "if" in step and not self.truthy(step["if"], ctx):
                continue
            if "uses" in step:
                result.skipped_uses.append(step["uses"])
                continue
            script = step["run"]
            assert "${{" not in script, f"expression in a run block of {action_dir.name}"
            self.counter += 1
            out_file = self.tmp / f"output-{self.counter}"
            out_file.touch()
            script_file = self.tmp / f"step-{self.counter}.sh"
            script_file.write_text(script)
            env = dict(self.env)
            env.update({k: self.render(str(v), ctx) for k, v in (step.get("env") or {}).items()})
            env.update({"GITHUB_ACTION_PATH": str(action_dir), "GITHUB_OUTPUT": str(out_file)})
            cwd = self.workspace / self.render(str(step.get("working-directory", ".")), ctx)
            proc = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script_file)],
                cwd=cwd, env=env, capture_output=True, text=True, check=False,
            )  # fmt: skip
            result.log += proc.stdout + proc.stderr
            outputs = dict(line.split("=", 1) for line in out_file.read_text().splitlines() if "=" in line)
            if "id" in step:
                ctx["steps"][step["id"]] = {"outputs": outputs}
            if proc.returncode != 0:
                result.returncode = proc.returncode
                break
        for name, meta in (spec.get("outputs") or {}).items():
            result.outputs[name] = self.render(str(meta["value"]), ctx)
        return result

    def lookup(self, path: str, ctx: dict[str, Any]) -> str:
        node: Any = ctx
        for part in path.split("."):
            if node == "":  # like GitHub: outputs of a step that did not run are empty
                return ""
            if not isinstance(node, dict):
                raise ValueError(f"unsupported expression {path!r}")
            node = node.get(part, "")
        if isinstance(node, dict):
            raise ValueError(f"unsupported expression {path!r}")
        return str(node)

    def render(self, text: str, ctx: dict[str, Any]) -> str:
        return EXPR.sub(lambda m: self.evaluate(m.group(1), ctx), text)

    def evaluate(self, expr: str, ctx: dict[str, Any]) -> str:
        if not re.fullmatch(r"(inputs|github|steps)(\.[A-Za-z0-9_-]+)+", expr):
            raise ValueError(f"unsupported expression {expr!r}")
        return self.lookup(expr, ctx)

    def truthy(self, condition: str, ctx: dict[str, Any]) -> bool:
        m = COMPARE.match(condition.strip())
        if not m:
            raise ValueError(f"unsupported if: {condition!r}")
        left = self.evaluate(m.group(1).strip(), ctx)
        return (left == m.group(3)) if m.group(2) == "==" else (left != m.group(3))


def runner_env(extra: dict[str, str]) -> dict[str, str]:
    """A runner-like environment whose `python` and `mlops-ci` are this test environment's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "MLOPS_CI_"))}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["GITHUB_ACTIONS"] = "true"
    env.update(extra)
    return env
