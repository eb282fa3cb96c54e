"""ONNX Runtime sessions sized for a container: the one place their options are decided, for
face-attributes' models and face-landmark's YuNet alike. onnxruntime is imported only when a
session is built, so services without it (image-input, data-storage) can import the runtime."""

from __future__ import annotations


# Graph optimizers an int8 (QDQ) model's session runs without. NchwcTransformer rewrites fp32
# convolutions into ONNX Runtime's blocked NCHWc layout: the one fp32 convolution an int8 copy keeps
# (the first, models/quantize.py says why) then pays a reorder back for the quantized layers that
# follow. Without it, a VGG-16 int8 model on 2 threads at batch 4 took 33.7 instead of 37.3 ms a
# face, with outputs within 0.001. fp32 models keep it: there, going without took 110 -> 138 ms.
INT8_DISABLED_OPTIMIZERS = ("NchwcTransformer",)


def disabled_optimizers(int8: bool) -> list[str]:
    """What InferenceSession(disabled_optimizers=...) gets for an int8 or fp32 model."""
    return list(INT8_DISABLED_OPTIMIZERS) if int8 else []


def session_options(threads: int, arena: bool = False):
    """ONNX Runtime options for a container with `threads` CPUs: one pool of that size, no
    inter-op parallelism, no spin-waiting (idle threads sleep instead of burning the quota), and
    no arena that only grows unless `arena` says its growth is bounded."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # The arena keeps the peak of every input shape it has seen and never gives it back, and the
    # memory pattern caches a plan per shape: with batches of 1..N faces RSS creeps up for hours.
    # Without them each run allocates through malloc, which the service trims when idle. A caller
    # whose inputs have a largest size (YuNet's tiles) can keep the arena: its activations are
    # then reused instead of faulted in afresh on every run (YuNet at 640x480: 6.4 ms instead of
    # 9.8 ms, and a lower RSS after 60 shapes up to 1280x1280: 166 MiB instead of 224).
    options.enable_cpu_mem_arena = arena
    options.enable_mem_pattern = False
    options.log_severity_level = 3  # errors only, as DeepFace does
    return options
