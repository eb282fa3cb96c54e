"""Offline check tools shared by the deploy and docker tests.

checkov pins many dependencies of its own, so it lives in its own virtual environment
(.venv-tools, git-ignored), created on first use or by `make tools`. The docker tests can reuse
run_checkov() with framework="dockerfile" and their own skips file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TOOLS_VENV = Path(os.environ.get("TOOLS_VENV", ROOT / ".venv-tools"))
CHECKOV_VERSION = "3.3.30"


def checkov_bin() -> Path:
    """Path of checkov, installing it into TOOLS_VENV when it is missing (PyPI, once)."""
    exe = TOOLS_VENV / "bin" / "checkov"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TOOLS_VENV)], check=True)
        subprocess.run(
            [str(TOOLS_VENV / "bin" / "pip"), "install", "--quiet", f"checkov=={CHECKOV_VERSION}"],
            check=True,
        )
    return exe


def load_skips(skips_file: Path, framework: str) -> list[dict]:
    """Skipped checks of one framework: [{id, check, reason}]; each must give a reason."""
    entries = (yaml.safe_load(skips_file.read_text()) or {}).get(framework) or []
    for entry in entries:
        if not str(entry.get("reason", "")).strip():
            raise ValueError(f"{skips_file}: skip {entry.get('id')} has no reason")
    return entries


def run_checkov(framework: str, directory: Path, skips_file: Path) -> dict:
    """Run checkov offline on every file under `directory`; returns its JSON report (one framework).

    Raises AssertionError listing the failed checks, so a test can just call it.
    """
    skips = [entry["id"] for entry in load_skips(skips_file, framework)]
    cmd = [
        str(checkov_bin()),
        "--directory", str(directory),
        "--framework", framework,
        "--skip-download",          # no Bridgecrew/Prisma platform, no network
        "--output", "json",
        "--compact",
    ]
    if skips:
        cmd += ["--skip-check", ",".join(skips)]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if not proc.stdout.strip():
        raise AssertionError(f"checkov produced no report (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
    report = json.loads(proc.stdout)
    if isinstance(report, list):  # one entry per framework
        report = next(r for r in report if r.get("check_type") == framework)
    failed = report.get("results", {}).get("failed_checks", [])
    if failed:
        lines = [f"{f['check_id']} {f['check_name']} -- {f.get('resource')} ({f.get('file_path')})" for f in failed]
        raise AssertionError("checkov failed checks:\n" + "\n".join(lines))
    return report
