"""grpcurl for real: every grpcurl command in README.md, docs/*.md and the chart's NOTES.txt
(rendered by Helm for the default values, with the Ingress on, with API keys off and with TLS
on) runs as written with grpcurl 1.8.6 and a photo of more than 3 MB, and prints what its method
returns: the face count of the photo, the id just created, SERVING, the services, ...

How a document's commands are run:

- Shell code blocks (```sh, ```bash, ```console or unmarked) that mention grpcurl, whole
  commands quoted inline (`grpcurl ...`), and NOTES.txt's indented lines are cut into commands (a line ending in `\\` or `|` goes on). Commands that
  call grpcurl (directly or through a variable such as `G="grpcurl ..."`) run in one bash per
  block, in order (`set -o pipefail`), together with the block's other variable assignments
  (`ID=$(...)`, `G=...`). Everything else (kubectl, helm, make, faceanalysis) is not run.
- `ADDR=...` and `KEY=...` are the reader's own setup and need a cluster: the test sets ADDR to
  its edge and KEY to a valid API key instead. `export`s of the key for the CLI are skipped too.
- Addresses, the only text the test rewrites:
  `localhost:50050` (`make up`, or a port-forward) -> the test's local stack (plaintext, keys
  off; with TLS on in the chart: an image-input serving TLS, its certificate in `ca.crt`);
  `$ADDR`, `$ADDR:443`, `localhost:443` (kind's Gateway), `localhost:8443` (kind's
  ingress-nginx), `<...-address>:443` -> the edge: a real nginx (TLS with a self-signed
  certificate for faceanalysis.local, HTTP/2, set up as ingress-nginx runs the chart's Ingress:
  tests/integration/edge.py) in front of an image-input that checks API keys (or none, for a
  NOTES.txt rendered with keys off).
- Files in the working directory: `photo.jpg`, a 3+ MB photo of one face (obama.jpg upscaled),
  and `photos/` with obama.jpg, two_people.jpg and t1.jpg (1, 2 and 6 faces).

Every command must exit 0, and its output is checked by the method it calls (check_output);
a command calling something the test does not know fails until it learns it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.tools import grpcurl_bin
from tests.integration.edge import (Nginx, api_key_file, chart_ingress_settings, json_messages, large_photo,
                                    self_signed, spare_image_input)
from tests.support import ROOT, image

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# NOTES.txt as `helm install` prints it for these values.
NOTES_VARIANTS = {
    "notes-default": {},
    "notes-ingress": {"image-input": {"ingress": {"enabled": True}}},
    "notes-keys-off": {"image-input": {"auth": {"enabled": False}, "ingress": {"enabled": True}}},
    "notes-tls": {"global": {"tls": {"enabled": True}}},
}
THREE_MB = 3 * 1024 * 1024
PHOTOS = {"obama.jpg": ("face_recognition/obama.jpg", 1), "two_people.jpg": ("face_recognition/two_people.jpg", 2),
          "t1.jpg": ("misc/t1.jpg", 6)}
PHOTO_FACES = 1  # photo.jpg: obama.jpg upscaled
SETUP = {"ADDR", "KEY", "FACEANALYSIS_API_KEY"}  # the reader's own (cluster) setup, not run
CLUSTER_ONLY = re.compile(r"\b(kubectl|helm|minikube|kind|make|skaffold|docker)\b")
ASSIGNMENT = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=")
EDGE_ADDRESSES = [
    (re.compile(r"\$\{?ADDR\}?:443\b"), "$ADDR"),
    (re.compile(r"<[a-z-]*address>(:\d+)?"), "$ADDR"),
    (re.compile(r"\blocalhost:8?443\b"), "$ADDR"),
    (re.compile(r"\$\(minikube ip\)(:\d+)?"), "$ADDR"),
]
# grpcurl flags that take a value (the rest are booleans).
VALUE_FLAGS = {"-d", "-H", "-authority", "-cacert", "-cert", "-key", "-servername", "-rpc-header", "-reflect-header",
               "-import-path", "-proto", "-protoset", "-protoset-out", "-format", "-connect-timeout",
               "-keepalive-time", "-max-time", "-max-msg-sz", "-unix", "-user-agent", "-expand-headers"}


# ---------------------------------------------------------------------------------------------
# Extraction


@dataclass
class Block:
    source: str
    commands: list[str] = field(default_factory=list)


def shell_blocks(text: str) -> list[list[str]]:
    """The lines of every shell code block (```sh, bash, console, shell or no language) of a
    Markdown text."""
    blocks, current, language = [], None, ""
    for line in text.splitlines():
        fence = re.match(r"^\s*```\s*([\w+-]*)", line)
        if fence and current is None:
            current, language = [], fence.group(1)
        elif fence:
            if language in {"sh", "bash", "console", "shell", ""}:
                blocks.append(current)
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def logical_commands(lines: list[str]) -> list[str]:
    """Lines joined where a command goes on (a trailing `\\` or `|`); comment lines dropped."""
    out, current = [], ""
    for line in lines:
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.strip() if not current else "\n  " + line.strip()
        if not re.search(r"(\\|\|)\s*$", line.split(" #", 1)[0]):
            out.append(current)
            current = ""
    if current:
        out.append(current)
    return out


def runnable(commands: list[str]) -> list[str]:
    """The grpcurl commands and the variable assignments they may need, in order."""
    grpcurl_vars: set[str] = set()
    kept = []
    for command in commands:
        assignment = ASSIGNMENT.match(command)
        if assignment:
            name = assignment.group(1)
            if name in SETUP or CLUSTER_ONLY.search(command):
                continue
            if "grpcurl" in command:
                grpcurl_vars.add(name)
            kept.append(command)
            continue
        uses_var = any(re.search(rf"\$\{{?{name}\b", command) for name in grpcurl_vars)
        if re.search(r"\bgrpcurl\b", command) or uses_var:
            kept.append(command)
    # Assignments only matter before a grpcurl command.
    while kept and ASSIGNMENT.match(kept[-1]):
        kept.pop()
    return kept


def inline_commands(text: str) -> list[str]:
    """Whole grpcurl commands quoted in prose: `grpcurl ...` outside code blocks."""
    prose = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.M | re.S)
    return re.findall(r"`(grpcurl\s[^`]+)`", prose)


def markdown_blocks(path: Path) -> list[Block]:
    text = path.read_text()
    blocks = [Block(f"{path.relative_to(ROOT)} (inline)", [command]) for command in inline_commands(text)]
    for lines in shell_blocks(text):
        if not any("grpcurl" in line for line in lines):
            continue
        commands = runnable(logical_commands(lines))
        if commands:
            blocks.append(Block(f"{path.relative_to(ROOT)}", commands))
    return blocks


def notes_blocks(values: dict, name: str) -> list[Block]:
    from tests.deploy.chart import render

    notes = render(values).notes
    lines = [line for line in notes.splitlines() if line.startswith("  ")]
    commands = runnable([line.strip() for line in lines])
    return [Block(f"NOTES.txt ({name})", commands)] if commands else []


def substituted(command: str, local: str) -> str:
    command = command.replace("localhost:50050", local)
    for pattern, replacement in EDGE_ADDRESSES:
        command = pattern.sub(replacement, command)
    return command


# ---------------------------------------------------------------------------------------------
# Output checks


def grpcurl_call(command: str, grpcurl_vars: dict[str, str]) -> tuple[list[str], list[str]]:
    """(flags, positional arguments) of the grpcurl invocation in `command`."""
    for name, value in grpcurl_vars.items():
        command = re.sub(rf"\$\{{?{name}\}}?(?![A-Za-z0-9_])", lambda _: value, command)
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = list(lexer)
    start = tokens.index("grpcurl") + 1
    flags, positional, i = [], [], start
    while i < len(tokens) and tokens[i] not in {"|", "||", "&&", ";", ">", ">>", "&", ")"}:
        token = tokens[i]
        if token.startswith("-") and not positional:
            flags.append(token)
            if token in VALUE_FLAGS and "=" not in token:
                flags.append(tokens[i + 1])
                i += 1
        else:
            positional.append(token)
        i += 1
    return flags, positional


@dataclass
class Context:
    workdir: Path
    photo_sha256: str
    photo_size: tuple[int, int]


def check_output(command: str, out: str, grpcurl_vars: dict[str, str], ctx: Context) -> str:
    """Asserts that `out` is what the call in `command` returns; names the call."""
    flags, args = grpcurl_call(command, grpcurl_vars)
    assert args, f"no address in {command!r}"
    verb = args[1] if len(args) > 1 else "list"
    if verb == "list":
        if len(args) > 2:
            assert f"{args[2]}.AnalyzeImage" in out or "Check" in out, out
        else:
            assert {"faceanalysis.v1.FaceAnalysis", "grpc.health.v1.Health"} <= set(out.split()), out
        return "list"
    if verb == "describe":
        assert re.search(rf"{re.escape(args[2])} is a (service|message|method)", out), out
        if args[2] == "faceanalysis.v1.FaceAnalysis":
            assert "rpc AnalyzeImages ( stream .faceanalysis.v1.AnalyzeImageRequest )" in out, out
        return "describe"
    messages = json_messages(out)
    method = verb.rsplit("/", 1)[-1]
    if verb == "grpc.health.v1.Health/Check":
        assert messages == [{"status": "SERVING"}], out
    elif verb == "faceanalysis.v1.FaceAnalysis/AnalyzeImage":
        (message,) = messages
        result = message["result"]
        assert result["image"]["sha256"] == ctx.photo_sha256, "not photo.jpg"
        assert (result["image"]["width"], result["image"]["height"]) == ctx.photo_size
        assert len(result["faces"]) == PHOTO_FACES
        face = result["faces"][0]
        assert face["gender"]["label"] == "GENDER_MAN" and len(face["landmarks"]) == 68
        assert re.fullmatch(r"[0-9a-f]{32}", result["analysis_id"])
    elif verb == "faceanalysis.v1.FaceAnalysis/AnalyzeImages":
        assert len(messages) == len(PHOTOS), out[-2000:]
        assert sorted(m.get("index", 0) for m in messages) == list(range(len(PHOTOS)))
        for message in messages:
            assert "result" in message, message
            name = Path(message.get("client_ref", "")).name
            if name in PHOTOS:
                assert len(message["result"]["faces"]) == PHOTOS[name][1], name
    elif verb == "faceanalysis.v1.FaceAnalysis/GetAnalysis":
        (message,) = messages
        result = message["result"]
        saved = ctx.workdir / "result.json"
        if "$ID" in command and saved.exists():
            assert result["analysis_id"] == json.loads(saved.read_text())["result"]["analysis_id"]
        assert len(result["faces"]) == PHOTO_FACES and result["image"]["sha256"] == ctx.photo_sha256
    elif verb == "faceanalysis.v1.FaceAnalysis/ListAnalyses":
        (message,) = messages
        assert message["analyses"], out
        assert all(re.fullmatch(r"[0-9a-f]{32}", a["analysis_id"]) and len(a["image_sha256"]) == 64
                   for a in message["analyses"])
    elif verb == "faceanalysis.v1.FaceAnalysis/DeleteAnalysis":
        assert messages == [{"deleted": True}], out
    else:
        raise AssertionError(f"the docs call {verb}: teach tests/integration/test_grpcurl.py what it returns")
    return method


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def grpcurl():
    return grpcurl_bin()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """photo.jpg (3+ MB) and photos/."""
    folder = tmp_path_factory.mktemp("docs-files")
    photo = large_photo(image("face_recognition/obama.jpg"), folder / "photo.jpg", THREE_MB)
    (folder / "photos").mkdir()
    for name, (source, _) in PHOTOS.items():
        shutil.copy(image(source), folder / "photos" / name)
    from PIL import Image

    with Image.open(photo) as img:
        size = img.size
    return folder, hashlib.sha256(photo.read_bytes()).hexdigest(), size


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return self_signed(tmp_path_factory.mktemp("docs-edge-tls"))


@pytest.fixture(scope="module")
def keyed_input(local_stack, tmp_path_factory):
    """An image-input that checks API keys, as the chart runs it by default; and its key."""
    key, keys_file = api_key_file(tmp_path_factory.mktemp("docs-keys"))
    with spare_image_input(local_stack, tmp_path_factory.mktemp("docs-keyed-input"),
                           FACEANALYSIS_API_KEYS_FILE=str(keys_file)) as stack:
        yield stack, key


@pytest.fixture(scope="module")
def edges(local_stack, keyed_input, tls, tmp_path_factory):
    """The chart's edge in front of the keyed image-input, and one in front of the keyless stack."""
    settings = chart_ingress_settings()
    keyed, key = keyed_input
    with Nginx(tmp_path_factory.mktemp("docs-edge-keyed"), keyed.target("image-input"), settings, tls) as with_keys, \
         Nginx(tmp_path_factory.mktemp("docs-edge-open"), local_stack.target("image-input"), settings, tls) as open_:
        yield {"keys": (with_keys, key), "open": (open_, "")}


@pytest.fixture(scope="module")
def tls_input(local_stack, tmp_path_factory):
    """image-input serving TLS only, with a certificate for the name NOTES.txt tells grpcurl to
    expect (its Service's name); the same self-signed certificate is the `ca.crt` to trust."""
    from tests.deploy.chart import RELEASE

    cert, key = self_signed(tmp_path_factory.mktemp("docs-tls-input"), names=(f"{RELEASE}-image-input", "localhost"))
    with spare_image_input(local_stack, tmp_path_factory.mktemp("docs-tls-input-run"),
                           FACEANALYSIS_TLS_CERT_FILE=str(cert), FACEANALYSIS_TLS_KEY_FILE=str(key)) as stack:
        yield stack, cert


# ---------------------------------------------------------------------------------------------
# Running


def run_block(block: Block, *, grpcurl: Path, workdir: Path, local: str, edge: Nginx, key: str, ctx: Context):
    """Runs the block's commands in one bash; returns [(command, rc, stdout, stderr)]."""
    commands = [substituted(c, local) for c in block.commands]
    script = ["set -o pipefail"]
    for i, command in enumerate(commands):
        script += [command, f'echo "@@END {i} $?@@"; echo "@@END {i}@@" >&2']
    env = {**os.environ, "PATH": f"{grpcurl.parent}{os.pathsep}{os.environ['PATH']}", "ADDR": edge.address,
           "KEY": key}
    env.pop("FACEANALYSIS_API_KEY", None)
    proc = subprocess.run(["bash", "-c", "\n".join(script)], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)
    outs = re.split(r"@@END (\d+) (\d+)@@\n", proc.stdout)
    errs = re.split(r"@@END \d+@@\n", proc.stderr)
    results = []
    for i, command in enumerate(commands):
        assert 3 * i + 2 < len(outs), (f"{block.source}: stopped before {command!r}\nstdout: {proc.stdout[-2000:]}\n"
                                       f"stderr: {proc.stderr[-2000:]}")
        out, index, rc = outs[3 * i], outs[3 * i + 1], int(outs[3 * i + 2])
        assert int(index) == i
        results.append((command, rc, out, errs[i] if i < len(errs) else ""))
    return results


def grpcurl_vars_of(commands: list[str]) -> dict[str, str]:
    """Variables the block sets to a grpcurl command line (G="grpcurl -insecure ...")."""
    out = {}
    for command in commands:
        match = re.match(r'^([A-Za-z_][A-Za-z0-9_]*)=(["\']?)(grpcurl\b.*)\2$', command)
        if match:
            out[match.group(1)] = match.group(3)
    return out


def run_and_check(blocks: list[Block], *, grpcurl, files, local: str, edge: Nginx, key: str,
                  workdir: Path) -> list[str]:
    folder, sha, size = files
    shutil.copytree(folder, workdir, dirs_exist_ok=True)
    ctx = Context(workdir, sha, size)
    called = []
    for block in blocks:
        grpcurl_vars = grpcurl_vars_of(block.commands)
        for command, rc, out, err in run_block(block, grpcurl=grpcurl, workdir=workdir, local=local, edge=edge,
                                               key=key, ctx=ctx):
            if ASSIGNMENT.match(command):
                assert rc == 0, f"{block.source}: {command}\n{err}"
                continue
            assert rc == 0, f"{block.source}: {command}\nexit {rc}\n{err[-3000:]}\n{out[-1000:]}"
            try:
                called.append(check_output(command, out, grpcurl_vars, ctx))
            except AssertionError as failure:
                raise AssertionError(f"{block.source}: {command}\n{failure}") from None
    return called


# ---------------------------------------------------------------------------------------------
# Tests


def test_readme_commands_run_as_written(grpcurl, files, local_stack, edges, tmp_path):
    blocks = markdown_blocks(ROOT / "README.md")
    edge, key = edges["keys"]
    called = run_and_check(blocks, grpcurl=grpcurl, files=files, local=local_stack.target("image-input"), edge=edge,
                           key=key, workdir=tmp_path)
    # The README shows every method, and nothing was silently left out.
    assert {"list", "describe", "Check", "AnalyzeImage", "AnalyzeImages", "GetAnalysis", "ListAnalyses",
            "DeleteAnalysis"} <= set(called), called
    assert len(called) >= 13, called
    # Commands through the edge reached it, with the key (image-input answered them, not nginx).
    assert "POST /faceanalysis.v1.FaceAnalysis/AnalyzeImage " in edge.access_log


@pytest.mark.parametrize("doc", [d for d in DOCS[1:] if markdown_blocks(d)], ids=lambda d: d.name)
def test_docs_commands_run_as_written(doc, grpcurl, files, local_stack, edges, tmp_path):
    blocks = markdown_blocks(doc)
    edge, key = edges["keys"]
    called = run_and_check(blocks, grpcurl=grpcurl, files=files, local=local_stack.target("image-input"), edge=edge,
                           key=key, workdir=tmp_path)
    assert called


@pytest.mark.parametrize("variant", sorted(NOTES_VARIANTS))
def test_notes_commands_run_as_written(variant, grpcurl, files, local_stack, edges, tmp_path, request):
    values = NOTES_VARIANTS[variant]
    blocks = notes_blocks(values, variant)
    assert blocks, f"NOTES.txt ({variant}) shows no grpcurl command"
    keys_on = (values.get("image-input", {}).get("auth") or {}).get("enabled", True)
    edge, key = edges["keys" if keys_on else "open"]
    local = local_stack.target("image-input")
    if variant == "notes-tls":
        stack, cert = request.getfixturevalue("tls_input")
        local = stack.target("image-input")
        shutil.copy(cert, tmp_path / "ca.crt")
    called = run_and_check(blocks, grpcurl=grpcurl, files=files, local=local, edge=edge, key=key, workdir=tmp_path)
    assert "list" in called
    if variant != "notes-tls":
        assert {"Check", "AnalyzeImage"} <= set(called), called


def test_photo_on_the_command_line_hits_the_argument_limit(grpcurl, files, local_stack, tmp_path):
    """Why the docs use -d @: the old README form fails on a real photo before grpcurl starts."""
    folder, _, _ = files
    old = (f'{grpcurl} -plaintext -d "{{\\"image\\": \\"$(base64 -w0 photo.jpg)\\"}}" '
           f'{local_stack.target("image-input")} faceanalysis.v1.FaceAnalysis/AnalyzeImage')
    proc = subprocess.run(["bash", "-c", old], cwd=folder, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 126 and "Argument list too long" in proc.stderr, proc.stderr


def test_readme_result_example_is_real_output(grpcurl, local_stack, tmp_path):
    """README's result example is what AnalyzeImage prints for obama.jpg (values within what
    another CPU may change), trimmed but never changed."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Calling the API with grpcurl"):]
    example = json.loads(re.search(r"```json\n(.*?)```", section, flags=re.S).group(1))
    photo = tmp_path / "obama.jpg"
    shutil.copy(image("face_recognition/obama.jpg"), photo)
    command = (f"""{{ printf '{{"options": {{"skip_cache": true}}, "image": "'; base64 -w0 obama.jpg; printf '"}}'; }} """
               f"| {grpcurl} -plaintext -d @ {local_stack.target('image-input')} "
               "faceanalysis.v1.FaceAnalysis/AnalyzeImage")
    proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    real = json.loads(proc.stdout)

    def close(a, b, path):
        if isinstance(a, dict):
            assert isinstance(b, dict) and set(a) <= set(b), f"{path}: {sorted(a)} not in {sorted(b)}"
            for k in a:
                close(a[k], b[k], f"{path}.{k}")
        elif isinstance(a, list):
            assert isinstance(b, list) and len(a) <= len(b), path
            for i, item in enumerate(a):
                close(item, b[i], f"{path}[{i}]")
        elif isinstance(a, bool) or isinstance(a, str):
            assert a == b, f"{path}: {a!r} != {b!r}"
        else:
            tolerance = 2 if path.endswith((".x", ".y", ".width", ".height")) else 0.5 if ".age." in path else 0.01
            assert abs(a - b) <= tolerance, f"{path}: {a} vs {b}"

    result, real_result = example["result"], real["result"]
    volatile = {"analysis_id", "created_at", "timings", "models"}
    close({k: v for k, v in result.items() if k not in volatile}, real_result, "result")
    assert set(result) == set(real_result), "fields shown and fields printed differ"
    assert [t["stage"] for t in result["timings"]] == [t["stage"] for t in real_result["timings"]]
    assert all(m in real_result["models"] for m in result["models"])
    assert re.fullmatch(r"[0-9a-f]{32}", result["analysis_id"])


def test_the_edge_checks_keys(grpcurl, files, edges):
    """The docs' `-H "authorization: Bearer $KEY"` is tested for real: without it, the edge's
    image-input refuses the call."""
    folder, _, _ = files
    edge, key = edges["keys"]
    command = (f"""{{ printf '{{"image": "'; base64 -w0 photo.jpg; printf '"}}'; }} | {grpcurl} -insecure """
               f"-authority faceanalysis.local -d @ {edge.address} faceanalysis.v1.FaceAnalysis/AnalyzeImage")
    proc = subprocess.run(["bash", "-c", command], cwd=folder, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Code: Unauthenticated" in proc.stderr, proc.stderr
    assert key not in proc.stderr
