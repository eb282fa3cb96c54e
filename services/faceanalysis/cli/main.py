"""faceanalysis: serve a service, run the local stack, analyze images, manage models."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from faceanalysis.cli import connect, keys_cmd
from faceanalysis.runtime import services


def _settings():
    from faceanalysis.runtime import config

    return config.load()


def cmd_serve(args) -> int:
    from faceanalysis.runtime.server import serve

    serve(args.service)
    return 0


def cmd_health(args) -> int:
    from faceanalysis.cli.stack import health_status

    status = health_status(connect.connection(args), args.service, args.timeout,
                           report=lambda why: print(f"error: {why}", file=sys.stderr))
    print(status)
    return 0 if status == "SERVING" else 1


def cmd_up(args) -> int:
    """Redis and the four services, kept running (any that exits is restarted) until Ctrl-C or SIGTERM."""
    import time

    from faceanalysis.cli.stack import LocalStack, Supervisor

    settings = _settings()
    stack = LocalStack(models_dir=settings.models_dir.resolve(), archive_dir=settings.archive_dir.resolve(),
                       workdir=Path(args.workdir).resolve(), random_ports=args.random_ports, process_group=True)
    supervisor = Supervisor(stack, state_file=Path(args.state_file) if args.state_file else None)
    stop_requested = []

    def request_stop(*_):
        # Only plain flags here: a signal handler must not take locks the main thread may hold.
        supervisor.halt()
        stop_requested.append(True)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    print(f"starting Redis and {len(services.SERVICES)} services (logs in {stack.log_dir}) ...", flush=True)
    try:
        stack.start(timeout=args.timeout, abort=lambda: bool(stop_requested))
    except (RuntimeError, SystemExit, OSError) as err:
        print("stopped before every service was SERVING" if stop_requested else f"error: {err}", file=sys.stderr)
        stack.stop()
        return 0 if stop_requested else 1
    supervisor.start()
    try:
        print(keys_cmd.local_stack_banner(settings.api_keys_file))
        print(f"redis            {stack.redis.url}")
        for name in services.START_ORDER:
            print(f"{name:16} grpc {stack.target(name):22} metrics {stack.metrics_urls[name]}")
        if stack.http_url:
            print(f"HTTP/JSON API and web page  {stack.http_url}/  (API description: {stack.http_url}/openapi.json)")
        if args.state_file:
            print(f"process ids and ports in {args.state_file}")
        print("ready; a process that exits is restarted; Ctrl-C stops everything", flush=True)
        if args.ready_file:
            Path(args.ready_file).write_text("ready\n")
        while not stop_requested:
            time.sleep(0.2)
    finally:
        print("stopping ...", flush=True)
        supervisor.stop()  # first, so nothing that is being stopped gets restarted
        stack.stop()
    return 0


def cmd_run(args) -> int:
    """The main job on one machine: local stack, analyze a folder, draw the results, stop."""
    from faceanalysis.cli.analyze import analyze, visualize
    from faceanalysis.cli.stack import LocalStack, Supervisor

    settings = _settings()
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        print(f"error: {', '.join(missing)} not found; put photos there or pass IMAGES=<folder>", file=sys.stderr)
        return 1
    stack = LocalStack(models_dir=settings.models_dir.resolve(), archive_dir=settings.archive_dir.resolve(),
                       workdir=Path(args.workdir).resolve(), random_ports=args.random_ports)
    print(f"starting the local stack (logs in {stack.log_dir}) ...", flush=True)
    print(keys_cmd.local_stack_banner(settings.api_keys_file), flush=True)
    try:
        with stack, Supervisor(stack):  # a service that exits during the run is restarted
            print(f"gRPC API {stack.target('image-input')}"
                  + (f", HTTP/JSON API and web page {stack.http_url}/" if stack.http_url else ""), flush=True)
            code = analyze(args.paths, stack.target("image-input"), Path(args.out), None, args.concurrency)
            if code == 0 or any(Path(args.out).glob("*.json")):
                code = visualize(Path(args.out), args.paths, Path(args.pictures)) or code
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return code


def cmd_analyze(args) -> int:
    from faceanalysis.cli.analyze import analyze

    if args.format == "json" and args.per:
        args.parser.error("argument --per: only with --format jsonl or csv (json writes one file per image)")
    if args.format != "json" and args.out:
        args.parser.error(f"argument --out: --format {args.format} writes to stdout; --out is for --format json")
    return analyze(args.paths, connect.connection(args), Path(args.out or "results"),
                   Path(args.visualize) if args.visualize else None,
                   args.concurrency, no_store=args.no_store, skip_cache=args.skip_cache,
                   retry_seconds=args.retry_seconds, actions=args.actions,
                   detection_threshold=args.detection_threshold, min_face=args.min_face, fmt=args.format,
                   per=args.per)


# argparse types for the AnalysisOptions flags: the client's own checks, so the CLI and the
# Python client refuse the same values; argparse names the flag in its error.
def _checked(**option):
    from faceanalysis.client import analysis_options

    try:
        analysis_options(**option)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return next(iter(option.values()))


def _actions(text: str) -> list[str]:
    return _checked(actions=[a.strip() for a in text.split(",") if a.strip()])


def _numeric(option: str, kind: type, noun: str):
    """An argparse type for one numeric option: parsed as `kind`, then the client's checks."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None
        return _checked(**{option: value})
    return parse


_detection_threshold = _numeric("detection_threshold", float, "a number")
_min_face = _numeric("min_face", int, "a whole number")


def cmd_visualize(args) -> int:
    from faceanalysis.cli.analyze import visualize

    return visualize(Path(args.results), args.images, Path(args.out))


def cmd_models(args) -> int:
    from faceanalysis.cli import models_cmd

    settings = _settings()
    models_dir = Path(args.dir) if args.dir else settings.models_dir
    if args.action == "list":
        return models_cmd.run_list(models_dir)
    if args.action == "quantize":
        return models_cmd.run_quantize(models_dir, Path(args.calibration), Path(args.eval) if args.eval else None,
                                       args.only, args.limit, progress=not args.quiet)
    allow_unverified = args.allow_unverified or settings.allow_unverified_models
    if args.action == "verify":
        return models_cmd.run_verify(models_dir, args.only, allow_unverified)
    mirror = args.mirror if args.mirror is not None else settings.model_mirror
    return models_cmd.run_pull(models_dir, args.only, mirror, args.force, progress=not args.quiet,
                               allow_unverified=allow_unverified)


def cmd_bench(args) -> int:
    if args.bench_command == "batching":
        from faceanalysis.benchmark import batching

        return batching.run(args)
    from faceanalysis.benchmark import e2e

    return e2e.run(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="faceanalysis", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run one service (configured by FACEANALYSIS_* variables)")
    s.add_argument("service", choices=list(services.SERVICES))
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("health", help="exit 0 when a service's gRPC health is SERVING")
    s.add_argument("--target", default=f"localhost:{services.IMAGE_INPUT.grpc_port}")
    s.add_argument("--service", default="", help="gRPC service name; empty means the whole server")
    s.add_argument("--timeout", type=float, default=3.0)
    connect.add_options(s)
    s.set_defaults(fn=cmd_health)

    s = sub.add_parser("up", help="run Redis and the four services on localhost, restarting any that exits, "
                                  "until Ctrl-C")
    s.add_argument("--workdir", default=".cache/stack", help="Redis data and service logs")
    s.add_argument("--timeout", type=float, default=300, help="seconds to wait for every service to be SERVING")
    s.add_argument("--ready-file", help="write this file once everything is SERVING")
    s.add_argument("--state-file", help="keep this JSON file up to date with every process's PID, ports and "
                                        "restart count (rewritten atomically whenever one starts)")
    s.add_argument("--random-ports", action="store_true", help="free ports instead of 50050-50053 (runs beside another stack)")
    s.set_defaults(fn=cmd_up)

    s = sub.add_parser("run", help="start the local stack, analyze images, draw them, stop (make run)")
    s.add_argument("paths", nargs="+")
    s.add_argument("--out", default="storage/results", help="folder for <image stem>.json")
    s.add_argument("--pictures", default="output", help="folder for annotated pictures")
    s.add_argument("--concurrency", type=int, default=2)
    s.add_argument("--workdir", default=".cache/stack", help="Redis data and service logs")
    s.add_argument("--random-ports", action="store_true", help="free ports instead of 50050-50053 (runs beside another stack)")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("analyze", help="analyze images or folders; writes one JSON per image, or JSON lines or CSV "
                                       "to stdout")
    s.add_argument("paths", nargs="+")
    s.add_argument("--target", default=f"localhost:{services.IMAGE_INPUT.grpc_port}", help="image-input address")
    s.add_argument("--out", help="folder for <image stem>.json (--format json; default: results)")
    s.add_argument("--format", choices=["json", "jsonl", "csv"], default="json",
                   help="json: one file per image under --out; jsonl: one JSON object per line on stdout; csv: a "
                        "header and rows on stdout. With jsonl and csv, the progress bar and summary go to stderr")
    s.add_argument("--per", choices=["image", "face"],
                   help="one record per image or per face (default: jsonl per image, csv per face); per-image "
                        "records include failed images with their error")
    s.add_argument("--actions", type=_actions, metavar="LIST",
                   help="comma-separated subset of age,gender,emotion,landmarks (default: all); boxes always come")
    s.add_argument("--detection-threshold", type=_detection_threshold, metavar="P",
                   help="minimum face detection score, between 0 and 1 (default: the server's)")
    s.add_argument("--min-face", type=_min_face, metavar="PX",
                   help="smallest face to report, shorter box side in pixels (default: the server's)")
    s.add_argument("--visualize", metavar="DIR", help="also draw annotated pictures into DIR")
    s.add_argument("--concurrency", type=int, default=2, help="parallel streams to image-input")
    s.add_argument("--retry-seconds", type=float, default=120,
                   help="give up (exit 2) when no image got an answer for this long; until then streams that "
                        "break and busy answers are retried")
    s.add_argument("--no-store", action="store_true", help="ask the server not to keep results")
    s.add_argument("--skip-cache", action="store_true", help="never answer from the result cache")
    connect.add_options(s)
    s.set_defaults(fn=cmd_analyze, parser=s)

    s = sub.add_parser("visualize", help="draw result JSON onto the images it came from")
    s.add_argument("results", help="folder of result JSON written by analyze")
    s.add_argument("images", nargs="+", help="the images or folders that were analyzed")
    s.add_argument("--out", default="output")
    s.set_defaults(fn=cmd_visualize)

    s = sub.add_parser("models", help="provision model files; int8 copies of the attribute models")
    s.set_defaults(fn=cmd_models)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", help="models directory (default: FACEANALYSIS_MODELS_DIR or models/)")
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    actions = s.add_subparsers(dest="action", required=True, metavar="{pull,list,verify,quantize}")
    unverified = argparse.ArgumentParser(add_help=False)
    unverified.add_argument("--only", choices=[n for n in services.SERVICES], help="only this service's models")
    unverified.add_argument("--allow-unverified", action="store_true",
                            help="accept files no known sha256 verifies "
                                 "(default: FACEANALYSIS_ALLOW_UNVERIFIED_MODELS)")
    a = actions.add_parser("pull", parents=[common, unverified], help="fetch and verify model files")
    a.add_argument("--mirror", help="directory or URL to pull from (default: FACEANALYSIS_MODEL_MIRROR)")
    a.add_argument("--force", action="store_true", help="fetch again even if present")
    actions.add_parser("list", parents=[common], help="model files and whether they are present")
    actions.add_parser("verify", parents=[common, unverified],
                       help="check a models directory: what each file is, its sha256 and preprocessing",
                       description="Hash every model file and say what it is (official, a known variant, described "
                                   "by the mirror it came from, an int8 copy, unknown), its sha256, what verified it "
                                   "and the preprocessing face-attributes applies. Exit status 1 when a file is "
                                   "missing, changed since the pull or contradicts a recorded hash, or is "
                                   "UNVERIFIED while unverified files are not allowed.")
    a = actions.add_parser(
        "quantize", parents=[common],
        help="write int8 copies of the age, gender and emotion models (served with FACEANALYSIS_INT8_MODELS)",
        description="Statically quantize the attribute models (QDQ, int8 weights per channel, uint8 "
                    "activations), calibrated on the faces face-landmark finds in your photos, cut with each "
                    "model's own face margin (FACEANALYSIS_FACE_MARGIN overrides it); then print how well int8 "
                    "agrees with fp32. Each int8 copy inherits its fp32 file's preprocessing.")
    a.add_argument("--calibration", required=True, metavar="DIR", help="photos with faces to calibrate on")
    a.add_argument("--eval", metavar="DIR", help="photos to compare fp32 and int8 on (default: --calibration)")
    a.add_argument("--only", default="age,gender,emotion", metavar="NAMES",
                   help="comma-separated subset of age,gender,emotion (default: all three)")
    a.add_argument("--limit", type=int, default=100, help="at most this many calibration faces (default 100)")

    keys_cmd.add_parser(sub)

    s = sub.add_parser("bench", help="the local stack against a DeepFace.analyze + dlib loop on the same photos "
                                     "(make bench); `bench batching`: face-attributes batching alone")
    s.add_argument("--images", nargs="+", metavar="DIR_OR_FILES", help="photos (default: ../shared/images)")
    s.add_argument("--rounds", type=int, default=5, help="timed rounds; each runs every arm once, order rotated")
    s.add_argument("--concurrency", type=int, default=16, help="client threads of the second stack arm (the first: 1)")
    s.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
    s.add_argument("--vgg", action="store_true", help="age and gender models with VGG-16 cost (random weights) "
                                                      "in a temporary models folder; implies --int8")
    s.add_argument("--int8", action=argparse.BooleanOptionalAction, default=None,
                   help="also a stack serving int8 age and gender models (default: on with --vgg)")
    s.add_argument("--calibration", metavar="DIR",
                   help="photos to calibrate int8 on (default: ../shared/eval/utkface-dev)")
    s.add_argument("--workdir", default=".cache/bench", help="the stacks' Redis data and logs, the loop's log")
    s.set_defaults(fn=cmd_bench, bench_command=None)
    bench_sub = s.add_subparsers(dest="bench_command", metavar="{batching}")
    b = bench_sub.add_parser("batching", help="face-attributes batching against one-by-one inference")
    b.add_argument("--faces", type=int, default=64)
    b.add_argument("--batch", type=int, default=16)
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--vgg", action="store_true", help="time VGG-Face-sized random-weight models (production cost)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.fn(args) or 0


if __name__ == "__main__":
    sys.exit(main())
