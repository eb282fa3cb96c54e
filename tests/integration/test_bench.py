"""`faceanalysis bench` runs: the end-to-end benchmark (local stack against the DeepFace + dlib loop)
and the batching micro-benchmark, on the stand-in models and two photos. These check that the
benchmarks work and report what they promise; they assert nothing about speed."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from tests.support import MIRROR, ROOT, image, model_margin

PHOTOS = {"face_recognition/obama.jpg": 1, "face_recognition/two_people.jpg": 2}


def bench(models_dir, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, FACEANALYSIS_MODELS_DIR=str(models_dir), FACEANALYSIS_MODEL_MIRROR=str(MIRROR))
    env.pop("FACEANALYSIS_INT8_MODELS", None)
    done = subprocess.run([sys.executable, "-m", "faceanalysis.cli.main", "bench", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_end_to_end_benchmark_runs_both_arms(models_dir, tmp_path):
    out = tmp_path / "bench.json"
    done = bench(models_dir, "--images", *(str(image(p)) for p in PHOTOS), "--rounds", "1", "--concurrency", "2",
                 "--json", str(out), "--workdir", str(tmp_path / "work"))
    report = json.loads(out.read_text())

    arms = report["arms"]
    assert set(arms) == {"loop", "stack c=1", "stack c=2"}
    for name, arm in arms.items():
        assert arm["analysed"] == [len(PHOTOS)], name
        assert arm["failures"] == [], name
        assert arm["faces"] == [sum(PHOTOS.values())], name
        for figure in ("images_per_s", "faces_per_s", "cpu_s_per_image"):
            assert positive(arm[figure]["median"]), (name, figure, arm[figure])
        for q in ("p50", "p90", "p99"):
            assert positive(arm["latency_ms"][q]["median"]), (name, q)

    # The same faces, and the same genders on them, from DeepFace's loop and from the stack.
    agreement = report["agreement"]["stack"]
    counts = {row["image"].split("/")[-1]: (row["loop_faces"], row["stack_faces"]) for row in agreement["per_image"]}
    assert counts == {p.split("/")[-1]: (n, n) for p, n in PHOTOS.items()}
    assert agreement["matched_faces"] == sum(PHOTOS.values())
    assert agreement["same_gender"] == sum(PHOTOS.values())
    assert agreement["disagreements"] == []

    ratios = [s["median"] for group in report["ratios"].values() for s in group.values()]
    assert set(report["ratios"]["images_per_s"]) == {"stack c=1 / loop", "stack c=2 / loop"}
    assert "stack c=2" in report["ratios"]["p99_over_p50"]
    assert ratios and all(positive(r) for r in ratios), report["ratios"]

    # Where a stack's CPU goes: every process of it, adding up to the arm's figure (each round's
    # medians may come from different rounds; with one round they are the same pass).
    for name in ("stack c=1", "stack c=2"):
        by_process = {p: s["median"] for p, s in arms[name]["cpu_s_per_image_by_process"].items()}
        assert set(by_process) == {"image-input", "face-landmark", "face-attributes", "data-storage", "redis"}
        assert positive(by_process["face-landmark"]) and positive(by_process["face-attributes"]), by_process
        assert abs(sum(by_process.values()) - arms[name]["cpu_s_per_image"]["median"]) < 1e-6, by_process
    assert "| CPU s/photo by process " in done.stdout

    rss = report["peak_rss_mib"]
    assert positive(rss["loop"]["baseline"])
    for process in ("image-input", "face-landmark", "face-attributes", "data-storage", "redis"):
        assert positive(rss["stack"][process]), process

    assert report["baseline_runtime"]["backend"] == "onnx"
    assert report["baseline_runtime"]["tensorflow_imported"] is False
    # Both arms cut faces at the models' own margin, read from their metadata (0.4 for the stand-ins).
    assert report["config"]["face_margin"] == model_margin(models_dir) == 0.4
    assert report["config"]["face_margins"] == {"age": 0.4, "gender": 0.4, "emotion": 0.4}
    assert report["config"]["expand_percentage"] == round(100 * model_margin(models_dir))
    assert "stand-ins from the mirror" in report["models"]
    assert report["machine"]["cpu"]
    # The printed report is markdown tables.
    assert "| arm " in done.stdout and "| ratio " in done.stdout and "peak RSS MiB" in done.stdout


def test_batching_benchmark_runs_on_the_stand_ins(models_dir):
    done = bench(models_dir, "batching", "--faces", "4", "--batch", "2", "--repeats", "1", timeout=120)
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert set(report["results"]) == {"age", "gender", "emotion"}
    for name, result in report["results"].items():
        assert positive(result["one_by_one_ms_per_face"]) and positive(result["speedup"]), name
