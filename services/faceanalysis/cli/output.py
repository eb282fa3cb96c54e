"""What `faceanalysis analyze` writes per image, and the summary of a run.

- json: one file per image under --out (the result mapping of runtime.results.to_json), as always.
- jsonl: one JSON object per line on stdout. Per image: the result mapping plus "file"; an image
  that failed is {"file": ..., "error": {"code": ..., "message": ...}}. Per face: "file",
  "analysis_id", "face" (its index) and the face's own mapping (box, detection_score, landmarks,
  and age, gender, emotion when asked for); a failed image has no line there (stderr lists it).
- csv: a header, then one row per face (FACE_COLUMNS) or, per image, one row per image
  (IMAGE_COLUMNS, failed images included with their error). Cells of what was not asked for are
  empty; gender is "man"/"woman", floats are rounded to 4 decimals.
Every record is flushed at once, so a pipe (jq, a csv reader) sees it while the run goes on.
An image with no face has no per-face record at all.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import Counter
from pathlib import Path
from typing import TextIO

from faceanalysis.client import AnalysisError
from faceanalysis.client_types import Analysis, Face
from faceanalysis.runtime import results

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FACE_COLUMNS = ("file", "analysis_id", "face", "x", "y", "width", "height", "detection_score", "age", "age_low",
                "age_high", "gender", "gender_confidence", "emotion", "emotion_confidence",
                *(f"emotion_{e}" for e in EMOTIONS))
IMAGE_COLUMNS = ("file", "analysis_id", "faces", "width", "height", "error")
FORMATS = ("json", "jsonl", "csv")
PER = ("image", "face")


def _num(value: float | None) -> float | str:
    return "" if value is None else round(float(value), 4)


class JsonFiles:
    """<out>/<name>.json per image, written atomically (the default format)."""

    def __init__(self, out: Path):
        self.out = out

    def result(self, file: Path, name: str, analysis: Analysis) -> None:
        path = self.out / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(analysis.to_json(indent=2) + "\n")
        tmp.replace(path)

    def failure(self, file: Path, error: AnalysisError) -> None:
        pass  # listed on stderr at the end


class JsonLines:
    def __init__(self, stream: TextIO, per: str):
        self.stream, self.per = stream, per

    def _write(self, record: dict) -> None:
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()

    def result(self, file: Path, name: str, analysis: Analysis) -> None:
        mapping = results.to_dict(analysis.proto)
        if self.per == "image":
            self._write({"file": str(file), **mapping})
            return
        for index, face in enumerate(mapping["faces"]):
            self._write({"file": str(file), "analysis_id": analysis.analysis_id, "face": index, **face})

    def failure(self, file: Path, error: AnalysisError) -> None:
        if self.per == "image":
            self._write({"file": str(file), "error": {"code": error.code, "message": error.message}})


class CsvRows:
    def __init__(self, stream: TextIO, per: str):
        self.stream, self.per = stream, per
        self.writer = csv.writer(stream)
        self._row(FACE_COLUMNS if per == "face" else IMAGE_COLUMNS)

    def _row(self, row) -> None:
        self.writer.writerow(row)
        self.stream.flush()

    def result(self, file: Path, name: str, analysis: Analysis) -> None:
        if self.per == "image":
            self._row([file, analysis.analysis_id, len(analysis.faces), analysis.image.width, analysis.image.height,
                       ""])
            return
        for index, face in enumerate(analysis.faces):
            self._row([file, analysis.analysis_id, index, *self._face(face)])

    @staticmethod
    def _face(face: Face) -> list:
        age, gender, emotion = face.age, face.gender, face.emotion
        return [face.box.x, face.box.y, face.box.width, face.box.height, _num(face.detection_score),
                _num(age and age.years), _num(age and age.low), _num(age and age.high),
                gender.label if gender else "", _num(gender and gender.confidence),
                emotion.dominant if emotion else "", _num(emotion and emotion.confidence),
                *(_num(emotion.scores.get(e)) if emotion else "" for e in EMOTIONS)]

    def failure(self, file: Path, error: AnalysisError) -> None:
        if self.per == "image":
            self._row([file, "", "", "", "", f"{error.code}: {error.message}"])


def sink(fmt: str, per: str, out: Path | None, stream: TextIO):
    if fmt == "json":
        return JsonFiles(out)
    return JsonLines(stream, per) if fmt == "jsonl" else CsvRows(stream, per)


class Tally:
    """The end-of-run summary: images analyzed and failed, faces, genders, dominant emotions, ages."""

    def __init__(self):
        self.analyzed = self.failed = self.faces = 0
        self.genders: Counter[str] = Counter()
        self.emotions: Counter[str] = Counter()
        self.ages: list[float] = []

    def add(self, analysis: Analysis) -> None:
        self.analyzed += 1
        self.faces += len(analysis.faces)
        for face in analysis.faces:
            if face.gender:
                self.genders[face.gender.label] += 1
            if face.emotion:
                self.emotions[face.emotion.dominant] += 1
            if face.age:
                self.ages.append(face.age.years)

    def lines(self, total: int) -> list[str]:
        """E.g. "3 of 4 images analyzed, 9 faces, 1 failed", "genders: man 5, woman 4",
        "emotions: happy 6, neutral 3", "ages: 24.1-61.8, median 35.2" (n/a for what no face has)."""

        def counts(counter: Counter) -> str:
            return ", ".join(f"{k} {n}" for k, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))) or "n/a"

        ages = (f"{min(self.ages):.1f}-{max(self.ages):.1f}, median {statistics.median(self.ages):.1f}"
                if self.ages else "n/a")
        return [f"{self.analyzed} of {total} images analyzed, {self.faces} faces, {self.failed} failed",
                f"genders: {counts(self.genders)}", f"emotions: {counts(self.emotions)}", f"ages: {ages}"]
