"""The ONNX Runtime session every timing and deployment opens.

Kept free of torch and of the rest of :mod:`hwnas.hardware` (numpy-free, even), like
:mod:`hwnas.hardware.openvino`: the peak-memory probe (:mod:`hwnas.quantize.memprobe`)
loads both files on their own in a fresh process, so what it measures is the runtime
and the model, not torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def ort_session(path: str | Path, threads: int = 1, device: str = "cpu") -> Any:
    """An ONNX Runtime session on the file ``path``: ``threads`` intra-op threads,
    sequential execution, every graph optimisation on (fusions included)."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError(
                "onnxruntime has no CUDAExecutionProvider here; install onnxruntime-gpu "
                "or use hardware.backend=torch"
            )
        providers = ["CUDAExecutionProvider"]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=providers)
