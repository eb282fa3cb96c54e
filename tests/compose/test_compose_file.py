"""Offline checks of docker/compose.yaml (no Docker engine needed).

Every expectation is derived from faceanalysis.runtime.services (ports, gRPC service names),
faceanalysis.runtime.config.Settings (environment variables) and the Helm chart's files
(dashboards, Prometheus rules); nothing here keeps a second list of services.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from faceanalysis.runtime.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "docker"
COMPOSE_YAML = DOCKER_DIR / "compose.yaml"
SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"
CHART_FILES = ROOT / "charts" / "faceanalysis" / "files"
CHART_RULES = CHART_FILES / "prometheus-rules.yaml"
CHART_DASHBOARDS = CHART_FILES / "dashboards"
PROMETHEUS_YML = DOCKER_DIR / "prometheus" / "prometheus.yml"
ENV_EXAMPLE = DOCKER_DIR / ".env.example"
COMPOSE_MK = ROOT / "mk" / "compose.mk"

ENV_PREFIX = Settings.model_config["env_prefix"]
UID = "10001:10001"
LOOPBACK = "127.0.0.1"


# --- helpers -------------------------------------------------------------------------------------


def env_of(service: dict) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict((item.split("=", 1) + [None])[:2] for item in env)
    return dict(env)


def mounts(service: dict) -> list[dict]:
    """Volumes in long form: type, source, target, read_only."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            out.append({"read_only": False, **v})
            continue
        parts = v.split(":")
        source, target = parts[0], parts[1]
        mode = parts[2] if len(parts) > 2 else ""
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        out.append({"type": kind, "source": source, "target": target, "read_only": "ro" in mode.split(",")})
    return out


def bind_source(mount: dict) -> Path:
    """Bind-mount sources are relative to the compose file's directory."""
    return (DOCKER_DIR / mount["source"]).resolve()


def ports_of(service: dict) -> list[dict]:
    """Ports in long form: target, published, host_ip."""
    out = []
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            out.append(p)
            continue
        p = str(p).split("/")[0]
        parts = p.rsplit(":", 2)
        if len(parts) == 1:
            out.append({"target": int(parts[0]), "published": None, "host_ip": None})
        elif len(parts) == 2:
            out.append({"target": int(parts[1]), "published": parts[0], "host_ip": None})
        else:
            out.append({"target": int(parts[2]), "published": parts[1], "host_ip": parts[0]})
    return out


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {name: (d or {}).get("condition", "service_started") for name, d in deps.items()}


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    total = 0.0
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration):
        total += float(value) * units[unit]
    return total


def faceanalysis_services(compose: dict) -> dict[str, dict]:
    """Services that run a faceanalysis image: those built from docker/*.Dockerfile."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if isinstance(svc.get("build"), dict) and svc["build"].get("dockerfile", "").startswith("docker/")
    }


def models_dir_field() -> str:
    assert "models_dir" in Settings.model_fields
    return ENV_PREFIX + "MODELS_DIR"


# --- schema ----------------------------------------------------------------------------------------


def test_compose_file_matches_compose_spec():
    assert SCHEMA.is_file(), f"{SCHEMA} is missing: clone the shared/ directory beside the repository"
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--schemafile", str(SCHEMA), str(COMPOSE_YAML)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the four services -----------------------------------------------------------------------------


def test_every_registered_service_is_in_compose(compose, specs):
    for name in specs:
        assert name in compose["services"], f"service {name} is missing from {COMPOSE_YAML.name}"
    serving = {n for n, s in faceanalysis_services(compose).items() if (s.get("command") or [None])[0] == "serve"}
    assert serving == set(specs)


def test_images_build_from_their_dockerfile(compose, specs):
    for name in specs:
        build = compose["services"][name]["build"]
        assert build["context"] == "..", name
        assert build["dockerfile"] == f"docker/{name}.Dockerfile", name


def test_serve_command(compose, specs):
    for name in specs:
        svc = compose["services"][name]
        assert svc["entrypoint"] == ["faceanalysis"], name
        assert svc["command"] == ["serve", name], name


def test_exposed_ports_match_registry(compose, specs):
    for name, spec in specs.items():
        exposed = {int(p) for p in compose["services"][name].get("expose", [])}
        assert exposed == spec.ports, name


def test_healthcheck_uses_faceanalysis_health(compose, specs):
    for name, spec in specs.items():
        hc = compose["services"][name]["healthcheck"]
        assert hc["test"] == [
            "CMD",
            "faceanalysis",
            "health",
            "--target",
            f"localhost:{spec.grpc_port}",
            "--service",
            spec.grpc_service,
        ], name
        assert not hc.get("disable"), name


def test_environment_names_are_settings_fields(compose):
    for name, svc in faceanalysis_services(compose).items():
        for var in env_of(svc):
            if var.startswith(ENV_PREFIX):
                field = var[len(ENV_PREFIX) :].lower()
                assert field in Settings.model_fields, f"{name}: {var} is not a field of Settings"


def test_peer_targets_point_at_the_right_ports(compose, specs):
    """Every dns:/// target names a service and its registered gRPC port, and image-input
    gets a value for every *_target setting."""
    target_fields = [f for f in Settings.model_fields if f.endswith("_target")]
    assert target_fields
    image_input_env = env_of(compose["services"]["image-input"])
    for field in target_fields:
        assert ENV_PREFIX + field.upper() in image_input_env, f"image-input lacks {ENV_PREFIX}{field.upper()}"
    seen = set()
    for name, svc in faceanalysis_services(compose).items():
        for var, value in env_of(svc).items():
            if var.startswith(ENV_PREFIX) and var[len(ENV_PREFIX) :].lower() in target_fields:
                m = re.fullmatch(r"dns:///([\w.-]+):(\d+)", value or "")
                assert m, f"{name}: {var}={value!r} is not dns:///host:port"
                host, port = m.group(1), int(m.group(2))
                assert host in specs, f"{name}: {var} names unknown service {host}"
                assert port == specs[host].grpc_port, f"{name}: {var} uses port {port}, {host} serves {specs[host].grpc_port}"
                seen.add(host)
    assert seen == set(specs) - {"image-input"}


def test_start_up_order_waits_for_health(compose, specs):
    for name in specs:
        for dep, condition in depends_on(compose["services"][name]).items():
            dep_svc = compose["services"][dep]
            if "healthcheck" in dep_svc:
                assert condition == "service_healthy", f"{name} -> {dep}"
            else:
                assert condition == "service_completed_successfully", f"{name} -> {dep}"
    # image-input orchestrates the other three, so it starts after them.
    assert set(depends_on(compose["services"]["image-input"])) >= set(specs) - {"image-input"}


def test_stop_grace_period_covers_shutdown_grace(compose, specs):
    grace = Settings.model_fields["shutdown_grace_seconds"].default
    for name in specs:
        period = compose["services"][name].get("stop_grace_period", "10s")
        assert seconds(period) > grace, f"{name}: stop_grace_period {period} <= shutdown grace {grace}s"


# --- models ----------------------------------------------------------------------------------------


def test_models_job_pulls_into_shared_volume(compose):
    models = compose["services"]["models"]
    assert models["entrypoint"] == ["faceanalysis"]
    assert models["command"][:2] == ["models", "pull"]
    assert models.get("restart", "no") == "no"
    models_dir = env_of(models)[models_dir_field()]
    (mount,) = [m for m in mounts(models) if m["target"] == models_dir]
    assert mount["type"] == "volume" and mount["source"] in compose["volumes"]
    assert not mount["read_only"]


def test_model_consumers_mount_models_read_only_and_wait_for_pull(compose):
    volume = next(m["source"] for m in mounts(compose["services"]["models"]) if m["type"] == "volume")
    consumers = 0
    for name, svc in faceanalysis_services(compose).items():
        if name == "models" or models_dir_field() not in env_of(svc):
            continue
        consumers += 1
        models_dir = env_of(svc)[models_dir_field()]
        (mount,) = [m for m in mounts(svc) if m["target"] == models_dir]
        assert mount["source"] == volume and mount["read_only"], name
        assert depends_on(svc).get("models") == "service_completed_successfully", name
    assert consumers >= 2  # face-landmark and face-attributes


def test_deepface_home_is_the_models_dir(compose):
    """DeepFace reads $DEEPFACE_HOME/.deepface/weights; Settings.deepface_home is models_dir."""
    assert "DEEPFACE_HOME" in env_of(compose["services"]["models"])
    for name, svc in faceanalysis_services(compose).items():
        env = env_of(svc)
        if "DEEPFACE_HOME" in env:
            assert env["DEEPFACE_HOME"] == env[models_dir_field()], name


def test_serving_services_cannot_reach_the_internet(compose, specs):
    """Models are provisioned, never fetched while serving: only image-input (published) and
    the models job sit on a network with a route out."""
    networks = compose["networks"]
    for name in specs:
        if name == "image-input":
            continue
        for net in compose["services"][name]["networks"]:
            assert networks[net].get("internal"), f"{name} is on non-internal network {net}"


# --- publishing ------------------------------------------------------------------------------------


def test_only_image_input_grpc_and_http_are_published(compose, specs):
    spec = specs["image-input"]
    for name, svc in compose["services"].items():
        ports = ports_of(svc)
        if name == "image-input":
            assert [p["target"] for p in ports] == [spec.grpc_port, spec.http_port]
            assert [str(p["published"]) for p in ports] == [str(spec.grpc_port), str(spec.http_port)]
            assert all(p["host_ip"] == LOOPBACK for p in ports)
        elif svc.get("profiles"):
            # Observability UIs (Grafana) may publish, but only on loopback.
            for p in ports:
                assert p["host_ip"] == LOOPBACK, f"{name} publishes {p} beyond loopback"
        else:
            assert ports == [], f"{name} publishes {ports}"
    published = [n for n, s in compose["services"].items() if ports_of(s) and not s.get("profiles")]
    assert published == ["image-input"]


# --- hardening -------------------------------------------------------------------------------------


def assert_hardened(name: str, svc: dict) -> None:
    assert svc.get("read_only") is True, f"{name}: read_only"
    assert any(str(t).split(":")[0] == "/tmp" for t in svc.get("tmpfs", [])), f"{name}: tmpfs /tmp"
    assert svc.get("cap_drop") == ["ALL"], f"{name}: cap_drop"
    assert not svc.get("cap_add"), f"{name}: cap_add"
    assert not svc.get("privileged"), f"{name}: privileged"
    assert "no-new-privileges:true" in svc.get("security_opt", []), f"{name}: no-new-privileges"


def test_faceanalysis_services_are_hardened(compose, specs):
    hardened = faceanalysis_services(compose)
    assert set(specs) | {"models"} <= set(hardened)
    for name, svc in hardened.items():
        assert svc.get("user") == UID, f"{name}: user"
        assert_hardened(name, svc)


def test_third_party_services_are_hardened_and_pinned(compose):
    for name, svc in compose["services"].items():
        if name in faceanalysis_services(compose):
            continue
        assert_hardened(name, svc)
        image = svc["image"]
        tag = image.rsplit(":", 1)[-1] if ":" in image.split("/")[-1] else ""
        assert re.search(r"\d+\.\d+", tag), f"{name}: image {image} is not pinned to a version"


# --- Redis -----------------------------------------------------------------------------------------


def test_redis_persists_with_aof_and_requires_a_password(compose):
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"]) if isinstance(redis["command"], list) else redis["command"]
    assert "--appendonly yes" in command
    (data,) = [m for m in mounts(redis) if m["target"] == "/data"]
    assert data["type"] == "volume" and data["source"] in compose["volumes"]
    assert env_of(redis)["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    assert "requirepass" in command

    storage_env = env_of(compose["services"]["data-storage"])
    assert storage_env[ENV_PREFIX + "REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    url = storage_env[ENV_PREFIX + "REDIS_URL"]
    assert "@" not in url, "the password belongs in FACEANALYSIS_REDIS_PASSWORD, not in the URL"
    assert re.fullmatch(r"redis://redis:6379(/\d+)?", url), url
    assert redis.get("user") not in (None, "root", "0", "0:0"), "redis runs as root"
    assert depends_on(compose["services"]["data-storage"]).get("redis") == "service_healthy"


def test_required_variables_are_in_env_example_without_values():
    text = COMPOSE_YAML.read_text()
    required = set(re.findall(r"\$\{(\w+):?\?", text))
    assert {"REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= required
    example = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            example[key.strip()] = value.strip()
    for var in required:
        assert var in example, f"{var} is required by compose.yaml but not in {ENV_EXAMPLE.name}"
        assert example[var] == "", f"{ENV_EXAMPLE.name} must not ship a value for {var}"


def test_real_env_file_is_git_ignored():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=ROOT)
    assert result.returncode == 0, "docker/.env must be git-ignored"


# --- observability -----------------------------------------------------------------------------------


def test_observability_services_are_profiled(compose):
    for name in ("prometheus", "grafana"):
        assert compose["services"][name]["profiles"] == ["observability"]


def test_prometheus_scrapes_every_metrics_port(specs):
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    targets = {}
    for job in config["scrape_configs"]:
        for sc in job.get("static_configs", []):
            for t in sc["targets"]:
                host = t.rsplit(":", 1)[0]
                if host in specs:
                    targets[job["job_name"]] = t
    assert targets == {s.name: f"{s.name}:{s.metrics_port}" for s in specs.values()}


def test_prometheus_mounts_config_and_the_charts_rules(compose):
    prom = compose["services"]["prometheus"]
    binds = [m for m in mounts(prom) if m["type"] == "bind"]
    assert all(m["read_only"] for m in binds)
    config_file = next(a.split("=", 1)[1] for a in prom["command"] if a.startswith("--config.file="))
    (config_mount,) = [m for m in binds if m["target"] == config_file]
    assert bind_source(config_mount) == PROMETHEUS_YML

    rule_globs = yaml.safe_load(PROMETHEUS_YML.read_text())["rule_files"]
    rule_mounts = [m for m in binds if any(fnmatch.fnmatch(m["target"], g) for g in rule_globs)]
    assert rule_mounts, "no mounted file matches prometheus.yml rule_files"
    for m in rule_mounts:
        assert bind_source(m) == CHART_RULES.resolve()
    assert CHART_RULES.is_file(), f"{CHART_RULES.relative_to(ROOT)} does not exist (the Helm chart provides it)"


def test_prometheus_config_and_rules_pass_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    assert CHART_RULES.is_file(), f"{CHART_RULES.relative_to(ROOT)} does not exist (the Helm chart provides it)"
    # Same config, with the rules path as seen from the host instead of inside the container.
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["rule_files"] = [str(CHART_RULES)]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))
    result = subprocess.run([promtool, "check", "config", str(checked)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_loads_the_charts_dashboards(compose):
    grafana = compose["services"]["grafana"]
    binds = [m for m in mounts(grafana) if m["type"] == "bind"]
    assert all(m["read_only"] for m in binds)
    (prov,) = [m for m in binds if m["target"] == "/etc/grafana/provisioning"]
    prov_dir = bind_source(prov)
    assert prov_dir == (DOCKER_DIR / "grafana" / "provisioning").resolve()

    provider_paths = []
    for f in sorted((prov_dir / "dashboards").glob("*.y*ml")):
        for p in yaml.safe_load(f.read_text())["providers"]:
            provider_paths.append(p["options"]["path"])
    assert provider_paths, "no dashboard provider"
    for path in provider_paths:
        (m,) = [m for m in binds if m["target"] == path]
        assert bind_source(m) == CHART_DASHBOARDS.resolve(), f"provider {path} is not the chart's dashboards"
    assert CHART_DASHBOARDS.is_dir(), f"{CHART_DASHBOARDS.relative_to(ROOT)} does not exist (the Helm chart provides it)"
    assert list(CHART_DASHBOARDS.glob("*.json")), f"no dashboards in {CHART_DASHBOARDS.relative_to(ROOT)}"


def test_grafana_datasource_is_prometheus_and_dashboards_can_use_it(compose):
    (ds,) = yaml.safe_load((DOCKER_DIR / "grafana/provisioning/datasources/prometheus.yaml").read_text())["datasources"]
    assert ds["type"] == "prometheus"
    host_port = ds["url"].split("//", 1)[1]
    assert host_port == "prometheus:9090" and "prometheus" in compose["services"]

    assert CHART_DASHBOARDS.is_dir(), f"{CHART_DASHBOARDS.relative_to(ROOT)} does not exist (the Helm chart provides it)"

    def refs(node):
        if isinstance(node, dict):
            if isinstance(node.get("datasource"), dict):
                yield node["datasource"]
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    for f in sorted(CHART_DASHBOARDS.glob("*.json")):
        for ref in refs(json.loads(f.read_text())):
            uid = str(ref.get("uid", ""))
            ok = uid in ("", ds["uid"]) or uid.startswith("$") or uid.startswith("-- ") or ref.get("type") != "prometheus"
            assert ok, f"{f.name}: datasource uid {uid!r} is neither {ds['uid']!r} nor a template variable"


def test_grafana_admin_password_comes_from_env_file(compose):
    env = env_of(compose["services"]["grafana"])
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")


# --- make targets --------------------------------------------------------------------------------------


def make(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    result = subprocess.run(["make", "--no-print-directory", "-f", str(COMPOSE_MK), *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_make_targets_drive_this_compose_file():
    up = make("-n", "compose-up", f"COMPOSE_ENV_FILE={ENV_EXAMPLE.relative_to(ROOT)}")
    assert f"--file {COMPOSE_YAML.relative_to(ROOT)}" in up and " up " in up
    down = make("-n", "compose-down", f"COMPOSE_ENV_FILE={ENV_EXAMPLE.relative_to(ROOT)}")
    assert " down " in down


def test_compose_down_knows_every_profile(compose):
    out = make("--eval", "print-profiles: ; @echo $(COMPOSE_ALL_PROFILES)", "print-profiles")
    profiles = {p for svc in compose["services"].values() for p in svc.get("profiles", [])}
    assert profiles <= set(out.replace(",", " ").split())
