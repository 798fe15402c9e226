"""AutoQ-style mixed-precision quantization, deployed through ONNX Runtime.

Per-layer precision is a search space of the usual kind (:mod:`.space`); layers are
found in the module and in its ONNX export (:mod:`.layers`); sensitivity comes from
Hessian traces (:mod:`.hessian`) and from measuring one quantized layer at a time
(:mod:`.sensitivity`); candidates are quantized (static QDQ, per-channel INT8 weights,
calibrated activations; :mod:`.onnx_quant`), timed and sized with ONNX Runtime
(:mod:`.ort_runtime`). Quantization-aware code in PyTorch itself is not used.
"""

from hwnas.quantize.hessian import (
    TraceEstimate,
    exact_trace,
    fake_quantize_weight,
    hawq_sensitivity,
    hutchinson_trace,
    quantization_error,
    task_loss,
)
from hwnas.quantize.layers import Layer, layer_nodes_by_name, onnx_layer_nodes, quantizable_layers
from hwnas.quantize.onnx_quant import (
    QuantSettings,
    calibration_cache_name,
    quantize_assignment,
    quantized_nodes,
)
from hwnas.quantize.ort_runtime import OrtModule, model_size_mb, throughput, time_onnx
from hwnas.quantize.sensitivity import (
    SensitivityRow,
    estimate_accuracy,
    hessian_drops,
    layer_sensitivity,
    measured_drops,
    top1_evaluator,
)
from hwnas.quantize.space import (
    PRECISION_ORDER,
    MeasuredQuantCost,
    WeightSizeCost,
    precision_space,
    uniform,
)

__all__ = [
    "PRECISION_ORDER",
    "Layer",
    "MeasuredQuantCost",
    "OrtModule",
    "QuantSettings",
    "SensitivityRow",
    "TraceEstimate",
    "WeightSizeCost",
    "calibration_cache_name",
    "estimate_accuracy",
    "exact_trace",
    "fake_quantize_weight",
    "hawq_sensitivity",
    "hessian_drops",
    "hutchinson_trace",
    "layer_nodes_by_name",
    "layer_sensitivity",
    "measured_drops",
    "model_size_mb",
    "onnx_layer_nodes",
    "precision_space",
    "quantizable_layers",
    "quantization_error",
    "quantize_assignment",
    "quantized_nodes",
    "task_loss",
    "throughput",
    "time_onnx",
    "top1_evaluator",
    "uniform",
]
