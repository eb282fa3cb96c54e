"""The baseline of `faceanalysis bench`: the loop a user writes instead of running the stack.

For each photo: decode it, `DeepFace.analyze(img, actions=["age", "gender", "emotion"],
detector_backend="yunet", enforce_detection=False, expand_percentage=...)`, then dlib's 68-point
predictor on each face DeepFace returns. It runs in a process of its own, so that its memory and
CPU time are measured apart from the stack's and its DeepFace / ONNX Runtime setup (DeepFace's
default sessions: every core, spin-waiting threads) is what a user gets, untouched by ours.

    python -m faceanalysis.benchmark.baseline --deepface-home DIR --predictor FILE --expand-percentage 40

It is driven over stdin and stdout, one JSON object per line each way:

    {"cmd": "load", "files": [...]}  -> {"ok": true, "images": n}   read the photos into memory
    {"cmd": "info"}                  -> {"ok": true, ...}           versions; builds the models
    {"cmd": "pass"}                  -> {"i": k, "seconds": s, "faces": [...]} per photo, in order,
                                        then {"ok": true, "wall": s}
    {"cmd": "quit"}                  -> exits

A failure answers {"ok": false, "error": "..."}. DeepFace's logger prints to stdout, so the
protocol keeps a private copy of the real stdout and everything else printed goes to stderr.

Face context: the stack cuts each aligned face box plus each model's face margin (from its weights'
metadata; a fraction of the box: 0.4 is 40 % wider and taller, centred;
face_attributes.predictor.cut_face). DeepFace
grows its detected box by `expand_percentage` per cent the same way (w + int(w * p / 100),
centred; detection.extract_face), rotates a region around it until the eyes are level and cuts
a box of the grown size around the rotated centre. So margin m is expand_percentage = 100 m, and
both feed the models the same face context for the same detected box. (The boxes themselves
differ: DeepFace pads the photo with a black border half its size on every side and its YuNet
wrapper shrinks that to at most 640 px, so it sees the photo at no more than 320 px and misses
small faces that face-landmark, at 640 px or more, finds.) DeepFace reports the grown box as the
face's region; `face_box` shrinks it back to the detected box, which is what dlib is given and
what is compared with the stack's boxes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def face_box(region: dict, expand_percentage: int) -> tuple[int, int, int, int]:
    """DeepFace's region (the detected box grown by expand_percentage around its centre) back to
    the detected box, as (x, y, w, h). Exact up to DeepFace's rounding, except where the grown box
    was clipped at the image border."""
    x, y, w, h = (int(region[k]) for k in ("x", "y", "w", "h"))
    grow = 1 + expand_percentage / 100
    w0, h0 = w / grow, h / grow
    x0, y0 = x + (w - w0) / 2, y + (h - h0) / 2
    return int(round(x0)), int(round(y0)), max(1, int(round(w0))), max(1, int(round(h0)))


class Loop:
    def __init__(self, predictor_file: str, expand_percentage: int):
        import cv2
        import dlib
        import numpy as np
        from deepface import DeepFace

        self.cv2, self.dlib, self.np, self.DeepFace = cv2, dlib, np, DeepFace
        self.expand_percentage = expand_percentage
        self.predictor = dlib.shape_predictor(predictor_file)
        self.images: list[bytes] = []

    def analyze(self, data: bytes) -> list[dict]:
        """One photo, as the user's script does it."""
        cv2, dlib, np = self.cv2, self.dlib, self.np
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # applies EXIF orientation
        if bgr is None:
            raise ValueError("cannot decode the image")
        found = self.DeepFace.analyze(bgr, actions=["age", "gender", "emotion"], detector_backend="yunet",
                                      enforce_detection=False, expand_percentage=self.expand_percentage,
                                      silent=True)
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        faces = []
        for face in found:
            # With enforce_detection=False and no face found, DeepFace analyses the whole image and
            # says so with confidence 0 (YuNet keeps nothing below 0.9): not a face.
            if not face.get("face_confidence"):
                continue
            x, y, w, h = face_box(face["region"], self.expand_percentage)
            shape = self.predictor(gray, dlib.rectangle(x, y, x + w, y + h))
            landmarks = [(p.x, p.y) for p in shape.parts()]
            faces.append({"box": [x, y, w, h], "gender": face["dominant_gender"], "age": face["age"],
                          "emotion": face["dominant_emotion"], "landmarks": len(landmarks)})
        return faces

    def info(self) -> dict:
        import cv2
        import onnxruntime

        # What a first call would build anyway; here so that start-up is not in a warm-up pass.
        for name in ("Age", "Gender", "Emotion"):
            self.DeepFace.build_model(task="facial_attribute", model_name=name)
        self.DeepFace.build_model(task="face_detector", model_name="yunet")
        from deepface.commons import backend_utils

        return {"deepface": self.DeepFace.__version__, "onnxruntime": onnxruntime.__version__,
                "opencv": cv2.__version__, "dlib": self.dlib.__version__,
                "backend": backend_utils.get_backend_engine(),
                "tensorflow_imported": "tensorflow" in sys.modules, "torch_imported": "torch" in sys.modules}


def serve(loop: Loop, commands, send) -> None:
    for line in commands:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
            cmd = msg.get("cmd")
            if cmd == "quit":
                return
            if cmd == "load":
                loop.images = [Path(f).read_bytes() for f in msg["files"]]
                send({"ok": True, "images": len(loop.images)})
            elif cmd == "info":
                send({"ok": True, **loop.info()})
            elif cmd == "pass":
                start = time.perf_counter()
                for i, data in enumerate(loop.images):
                    t0 = time.perf_counter()
                    try:
                        faces, error = loop.analyze(data), None
                    except Exception as err:  # one bad photo must not end the benchmark
                        faces, error = [], f"{type(err).__name__}: {err}"
                    send({"i": i, "seconds": time.perf_counter() - t0, "faces": faces, "error": error})
                send({"ok": True, "wall": time.perf_counter() - start})
            else:
                send({"ok": False, "error": f"unknown command {cmd!r}"})
        except Exception as err:
            send({"ok": False, "error": f"{type(err).__name__}: {err}"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deepface-home", required=True, help="DEEPFACE_HOME: weights in <it>/.deepface/weights")
    parser.add_argument("--predictor", required=True, help="shape_predictor_68_face_landmarks.dat")
    parser.add_argument("--expand-percentage", type=int, default=0, help="DeepFace.analyze's expand_percentage")
    args = parser.parse_args(argv)

    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # DeepFace's logger prints: keep it off the protocol
    sys.stdout = sys.stderr

    def send(obj: dict) -> None:
        protocol.write(json.dumps(obj) + "\n")
        protocol.flush()

    # Set before deepface is imported: it picks its backend and weights folder from them once.
    os.environ["DEEPFACE_HOME"] = str(Path(args.deepface_home).resolve())
    os.environ["DEEPFACE_BACKEND_ENGINE"] = "onnx"
    os.environ.setdefault("DEEPFACE_LOG_LEVEL", "30")  # warnings and errors only
    try:
        loop = Loop(args.predictor, args.expand_percentage)
    except Exception as err:
        send({"ok": False, "error": f"{type(err).__name__}: {err}"})
        return 1
    send({"ok": True, "ready": True})
    serve(loop, sys.stdin, send)
    return 0


if __name__ == "__main__":
    sys.exit(main())
