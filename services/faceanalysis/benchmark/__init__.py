"""Benchmarks (`faceanalysis bench`).

- e2e.py: the whole local stack against the loop a user would write instead (DeepFace.analyze +
  dlib per photo, baseline.py, in a process of its own): photos/s, latency, CPU, memory, agreement.
  arms.py runs either arm, procs.py reads /proc, agreement.py compares the faces, report.py prints.
- batching.py: what micro-batching buys inside face-attributes (`faceanalysis bench batching`).
- vgg.py: VGG-16 models with random weights and DeepFace's contract: the cost of DeepFace's
  official age and gender models, for `--vgg`.
"""
