"""Figures over rounds (median and spread), the ratios against the loop, and the report text."""

from __future__ import annotations

import math

import numpy as np

from faceanalysis.benchmark.arms import Arm, PassResult


def spread(values: list[float]) -> dict:
    values = [float(v) for v in values]
    return {"median": float(np.median(values)), "min": min(values), "max": max(values), "rounds": values}


def percentiles_ms(result: PassResult) -> dict[str, float]:
    ms = [1000 * s for s in result.latencies if s is not None]
    if not ms:
        return {"p50": math.nan, "p90": math.nan, "p99": math.nan}
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99)}


def summarize(arm: Arm, images: int) -> dict:
    passes = arm.passes
    pct = [percentiles_ms(p) for p in passes]
    out = {
        "kind": arm.kind, "concurrency": arm.concurrency, "images": images,
        "analysed": [p.analysed for p in passes],
        "faces": [p.face_count for p in passes],
        "images_per_s": spread([p.analysed / p.wall for p in passes]),
        "faces_per_s": spread([p.face_count / p.wall for p in passes]),
        "latency_ms": {q: spread([x[q] for x in pct]) for q in ("p50", "p90", "p99")},
        "cpu_s_per_image": spread([p.cpu / max(1, p.analysed) for p in passes]),
        "failures": sorted({f"{i}: {e}" for p in passes for i, e in p.errors.items()}),
    }
    if arm.kind == "stack":
        out["client_cpu_s_per_image"] = spread([p.client_cpu / max(1, p.analysed) for p in passes])
        out["cpu_s_per_image_by_process"] = {
            proc: spread([p.cpu_by_process[proc] / max(1, p.analysed) for p in passes])
            for proc in passes[0].cpu_by_process}
        out["shed_and_sent_again"] = sum(p.shed for p in passes)
    return out


def fmt(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_spread(s: dict, suffix: str = "") -> str:
    if s["min"] == s["max"]:
        return f"{fmt(s['median'])}{suffix}"
    return f"{fmt(s['median'])}{suffix} ({fmt(s['min'])}–{fmt(s['max'])})"


def table(headers: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """A markdown table, padded so that it also reads well in a terminal. `align` has one letter
    per column, l or r; by default the first column is left-aligned and the others right."""
    align = align or "l" + "r" * (len(headers) - 1)
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]

    def line(cells):
        return "| " + " | ".join(str(c).rjust(w) if a == "r" else str(c).ljust(w)
                                 for c, w, a in zip(cells, widths, align)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2)) for w, a in zip(widths, align)) + "|"
    return "\n".join([line(headers), rule] + [line(r) for r in rows])


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def ratios(arms: list[Arm]) -> dict:
    loop = next(a for a in arms if a.kind == "loop")
    stacks = [a for a in arms if a.kind == "stack"]
    out: dict = {"images_per_s": {}, "p99_over_p50": {}}
    for arm in stacks:
        out["images_per_s"][f"{arm.name} / loop"] = spread(
            [_div(s.analysed / s.wall, b.analysed / b.wall) for s, b in zip(arm.passes, loop.passes)])

    def tail(p: PassResult) -> float:
        q = percentiles_ms(p)
        return _div(q["p99"], q["p50"])

    loop_tail = [tail(p) for p in loop.passes]
    out["p99_over_p50"]["loop"] = spread(loop_tail)
    top = max(a.concurrency for a in stacks)
    for arm in stacks:
        if arm.concurrency == top:
            values = [tail(p) for p in arm.passes]
            out["p99_over_p50"][arm.name] = spread(values)
            out["p99_over_p50"][f"{arm.name} / loop"] = spread([_div(s, b) for s, b in zip(values, loop_tail)])
    return out


def _div(a: float, b: float) -> float:
    return a / b if b and math.isfinite(b) else math.nan


def report_text(result: dict) -> str:
    m = result["machine"]
    v = m["versions"]
    base = result.get("baseline_runtime", {})
    lines = [
        "## faceanalysis bench: the stack against the DeepFace loop",
        "",
        f"- machine: {m['cpu']} ({', '.join(m.get('cpu_flags') or ['no AVX2'])}), {m['logical_cpus']} logical CPUs "
        f"({m['cpus_available']} available to this run), "
        f"{m.get('memory_gib', '?')} GiB; load average {' '.join(m.get('load_average_at_start', []))} at the start, "
        f"{' '.join(m.get('load_average_at_end', []))} at the end",
        f"- software: Python {v.get('python')}, onnxruntime {v.get('onnxruntime')}, OpenCV {v.get('opencv')}, "
        f"DeepFace {v.get('deepface')}, dlib {v.get('dlib')}; the loop ran on DeepFace's {base.get('backend', '?')} "
        f"backend (TensorFlow imported: {'yes' if base.get('tensorflow_imported') else 'no'})",
        f"- models: {result['models']}",
        f"- photos: {result['config']['images']} ({result['config']['image_source']}), "
        f"{plural(result['config']['rounds'], 'round')} after one untimed pass per process (the loop, each stack), "
        f"arm order rotated each round; "
        f"face margin {result['config']['face_margin']:g}, the models' own from their metadata "
        f"(loop: expand_percentage={result['config']['expand_percentage']})",
        f"- figures: median over rounds (min–max); latency percentiles over the {result['config']['images']} photos "
        f"of a pass; CPU s/photo from /proc utime+stime (stack: its 4 services and Redis)",
        "",
    ]
    rows = []
    for name, arm in result["arms"].items():
        lat = arm["latency_ms"]
        rows.append([name, fmt_spread(arm["images_per_s"]), fmt_spread(arm["faces_per_s"]), fmt_spread(lat["p50"]),
                     fmt_spread(lat["p90"]), fmt_spread(lat["p99"]), fmt_spread(arm["cpu_s_per_image"])])
    lines += [table(["arm", "photos/s", "faces/s", "p50 ms", "p90 ms", "p99 ms", "CPU s/photo"], rows), ""]

    rrows = [[f"photos/s, {k}", fmt_spread(s, "x")] for k, s in result["ratios"]["images_per_s"].items()]
    rrows += [[f"p99/p50, {k}", fmt_spread(s, "x")] for k, s in result["ratios"]["p99_over_p50"].items()]
    lines += [table(["ratio", "median (min–max)"], rrows), ""]

    procs = [p for arm in result["arms"].values() for p in arm.get("cpu_s_per_image_by_process", {})]
    procs = list(dict.fromkeys(procs))
    crows = [[name] + [fmt(arm["cpu_s_per_image_by_process"][p]["median"]) for p in procs]
             + [fmt(arm["client_cpu_s_per_image"]["median"])]
             for name, arm in result["arms"].items() if arm["kind"] == "stack"]
    if crows:  # where a stack's CPU goes, per photo (median over rounds)
        lines += [table(["CPU s/photo by process", *procs, "client"], crows), ""]

    mrows = []
    for group, procs in result["peak_rss_mib"].items():
        for proc, mib in procs.items():
            mrows.append([group, proc, f"{mib:.0f}"])
    lines += [table(["arm", "process", "peak RSS MiB"], mrows, "llr"), ""]

    notes = []
    for name, arm in result["arms"].items():
        if arm["kind"] == "stack":
            notes.append(f"{name}: client (this process) {fmt(arm['client_cpu_s_per_image']['median'])} CPU s/photo; "
                         f"{arm['shed_and_sent_again']} calls shed (server busy) and sent again")
        missing = [a for a in arm["analysed"] if a != arm["images"]]
        if missing or arm["failures"]:
            notes.append(f"{name}: analysed {arm['analysed']} of {arm['images']} photos per round; "
                         f"failures: {'; '.join(arm['failures'][:5])}")
    lines += [f"- {n}" for n in notes] + [""]

    for name, ag in result["agreement"].items():
        lines.append(f"Agreement of {name} with the loop: same face count on {ag['same_face_count']} of "
                     f"{ag['images']} photos ({ag['loop_faces']} faces in the loop, {ag['stack_faces']} in the stack); "
                     f"{ag['matched_faces']} faces matched (box IoU >= {ag['iou_match']}), same gender on "
                     f"{ag['same_gender']} of them.")
        if ag["disagreements"]:
            rows = [[d["image"], d["problem"]] for d in ag["disagreements"]]
            lines += ["", table(["photo", "disagreement"], rows, "ll")]
            if ag["stack_faces"] > ag["loop_faces"]:
                lines += ["", "(DeepFace pads a photo with a black border half its size on every side and its "
                              "YuNet wrapper shrinks the result to 640 px: it sees the photo at 320 px at most and "
                              "misses small faces.)"]
        lines.append("")
    took = result.get("seconds", {})
    if took:
        parts = ", ".join(f"{k} {v:.0f} s" for k, v in took.items() if k != "total")
        lines.append(f"Took {took['total']:.0f} s ({parts}).")
    return "\n".join(lines)
