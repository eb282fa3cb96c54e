"""Did the loop and the stack find the same faces and genders? Faces are matched by box."""

from __future__ import annotations

from faceanalysis.benchmark.arms import PassResult
from faceanalysis.benchmark.report import plural
from faceanalysis.face_landmark.detectors import box_iou

IOU_MATCH = 0.5


def match(loop_faces: list[dict], stack_faces: list[dict]) -> list[tuple[int, int, float]]:
    """Pairs (loop index, stack index, IoU) with IoU >= IOU_MATCH, best first, each face used once."""
    pairs = sorted(((box_iou(a["box"], b["box"]), i, j) for i, a in enumerate(loop_faces)
                    for j, b in enumerate(stack_faces)), reverse=True)
    used_a, used_b, out = set(), set(), []
    for score, i, j in pairs:
        if score < IOU_MATCH:
            break
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            out.append((i, j, score))
    return out


def agreement(names: list[str], loop: PassResult, stack: PassResult) -> dict:
    """Per photo: the same number of faces? Faces matched by box; the same gender on each match?
    The table names what differs; the boxes (x, y, w, h) are in the JSON."""
    same_count = matched = same_gender = 0
    disagreements, per_image = [], []
    for k, name in enumerate(names):
        a, b = loop.faces[k], stack.faces[k]
        per_image.append({"image": name, "loop_faces": None if a is None else len(a),
                          "stack_faces": None if b is None else len(b)})
        if a is None or b is None:
            disagreements.append({"image": name, "problem": "not analysed by " +
                                  " and ".join(n for n, r in (("the loop", a), ("the stack", b)) if r is None)})
            continue
        pairs = match(a, b)
        same_count += len(a) == len(b)
        matched += len(pairs)
        only_loop = [a[i]["box"] for i in range(len(a)) if i not in {p[0] for p in pairs}]
        only_stack = [b[j]["box"] for j in range(len(b)) if j not in {p[1] for p in pairs}]
        genders = [{"loop_box": a[i]["box"], "stack_box": b[j]["box"], "loop": a[i]["gender"], "stack": b[j]["gender"]}
                   for i, j, _ in pairs if a[i]["gender"] != b[j]["gender"]]
        same_gender += len(pairs) - len(genders)
        problems = []
        if len(a) != len(b):
            problems.append(f"{plural(len(a), 'face')} in the loop, {len(b)} in the stack")
        if only_loop:
            problems.append(f"{len(only_loop)} found only by the loop")
        if only_stack:
            problems.append(f"{len(only_stack)} found only by the stack")
        if genders:
            problems.append("gender differs on " + ", ".join(
                f"the face at x={g['stack_box'][0]} (loop {g['loop']}, stack {g['stack'] or '?'})" for g in genders))
        if problems:
            disagreements.append({"image": name, "loop_faces": len(a), "stack_faces": len(b),
                                  "problem": "; ".join(problems), "only_loop": only_loop, "only_stack": only_stack,
                                  "gender_differs": genders})
    return {"images": len(names), "same_face_count": same_count, "loop_faces": loop.face_count,
            "stack_faces": stack.face_count, "matched_faces": matched, "same_gender": same_gender,
            "disagreements": disagreements, "per_image": per_image, "iou_match": IOU_MATCH}
