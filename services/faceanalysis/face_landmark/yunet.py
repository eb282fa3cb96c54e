"""YuNet (face_detection_yunet_2023mar.onnx) on ONNX Runtime.

The same network, pre- and post-processing as OpenCV's cv2.FaceDetectorYN, run on ONNX Runtime
instead of OpenCV's DNN module: on this 2-core machine ORT ran a 640x480 pass in 7.3 ms where
FaceDetectorYN took 17-21 ms, both on one thread. tests/unit/test_yunet.py holds the two to the
same faces, boxes and scores on every shared photo.

What FaceDetectorYN does, and this module does too:
- the BGR image, unscaled and unnormalised, padded with black on the right and bottom to a
  multiple of 32 (the coarsest stride), as one float32 NCHW blob;
- for each stride (8, 16, 32), one prediction per grid cell: class and objectness scores, each
  clipped to [0, 1], combined as their geometric mean; a box as the offset of its centre from the
  cell and the log of its size, both in strides; five points (eyes, nose tip, mouth corners) as
  offsets from the cell;
- non-maximum suppression over all strides (OpenCV's NMSBoxes, as FaceDetectorYN calls it).

Rows come back as FaceDetectorYN's do: x, y, width, height, the five points (x, y each; the eye
on the picture's left first), score.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

STRIDES = (8, 16, 32)
PAD_TO = STRIDES[-1]
NMS_IOU = 0.3  # what the service always gave FaceDetectorYN
TOP_K = 5000


class YuNetModel:
    """One ONNX Runtime session on the YuNet file, shared by every thread: InferenceSession.run
    may be called from several threads at once. Input sizes vary per image, so nothing is planned
    per shape; the arena is kept because the detector never gives YuNet more than a tile
    (YuNetDetector.TILE) a side, which bounds it (see runtime/onnx.py)."""

    def __init__(self, model_path: Path, threads: int):
        import onnxruntime as ort

        from faceanalysis.runtime import onnx

        self.session = ort.InferenceSession(str(model_path), sess_options=onnx.session_options(threads, arena=True),
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        names = [o.name for o in self.session.get_outputs()]
        expected = [f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES]
        if sorted(names) != sorted(expected):
            raise ValueError(f"{Path(model_path).name} is not a YuNet 2023mar model: its outputs are {names}, "
                             f"expected {expected}")
        self.output_names = expected

    def detect(self, bgr: np.ndarray, threshold: float) -> np.ndarray:
        """Faces scoring at least `threshold` in an H x W x 3 BGR uint8 image: an (N, 15) float32
        array of rows as FaceDetectorYN returns them, best first."""
        height, width = bgr.shape[:2]
        padded_h, padded_w = -(-height // PAD_TO) * PAD_TO, -(-width // PAD_TO) * PAD_TO
        blob = np.zeros((1, 3, padded_h, padded_w), np.float32)
        blob[0, :, :height, :width] = bgr.transpose(2, 0, 1)
        outputs = dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: blob})))
        rows = [self._decode(outputs, stride, padded_h // stride, padded_w // stride, threshold)
                for stride in STRIDES]
        faces = np.concatenate(rows)
        if not len(faces):
            return faces
        keep = cv2.dnn.NMSBoxes(faces[:, :4].tolist(), faces[:, 14].tolist(), threshold, NMS_IOU, top_k=TOP_K)
        return faces[np.asarray(keep, dtype=np.int64).reshape(-1)]

    @staticmethod
    def _decode(outputs: dict[str, np.ndarray], stride: int, rows: int, cols: int, threshold: float) -> np.ndarray:
        """The predictions of one stride that score at least `threshold`, as (N, 15) rows."""
        cls = np.clip(outputs[f"cls_{stride}"].reshape(-1), 0, 1)
        obj = np.clip(outputs[f"obj_{stride}"].reshape(-1), 0, 1)
        score = np.sqrt(cls * obj)
        cells = np.flatnonzero(score >= threshold)  # almost every cell is background: decode only the rest
        out = np.empty((len(cells), 15), np.float32)
        if not len(cells):
            return out
        col = (cells % cols).astype(np.float32)
        row = (cells // cols).astype(np.float32)
        box = outputs[f"bbox_{stride}"].reshape(-1, 4)[cells]
        kps = outputs[f"kps_{stride}"].reshape(-1, 10)[cells]
        w, h = np.exp(box[:, 2]) * stride, np.exp(box[:, 3]) * stride
        out[:, 0] = (col + box[:, 0]) * stride - w / 2
        out[:, 1] = (row + box[:, 1]) * stride - h / 2
        out[:, 2], out[:, 3] = w, h
        out[:, 4:14:2] = (kps[:, 0::2] + col[:, None]) * stride
        out[:, 5:14:2] = (kps[:, 1::2] + row[:, None]) * stride
        out[:, 14] = score[cells]
        return out
