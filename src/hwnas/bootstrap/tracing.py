"""Tracing a user's model with torch.fx: leaf modules, clear errors, shape propagation.

The traced graph is normalised so the supernet can rewrite it safely: in-place ops
(``out += identity``, ``relu(inplace=True)``) become their out-of-place twins (same
values), because a skipped block would otherwise modify a tensor autograd still needs.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn
from torch.utils.flop_counter import FlopCounterMode

# modules that are channel-agnostic but that fx should not trace into (their forward
# reads ``self.training`` at run time, e.g. torchvision's StochasticDepth)
DEFAULT_LEAF_TYPES: tuple[type, ...] = ()
try:  # torchvision is optional
    from torchvision.ops import StochasticDepth

    DEFAULT_LEAF_TYPES = (StochasticDepth,)
except ImportError:  # pragma: no cover
    pass

_INPLACE_FUNCS = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}


class _Tracer(fx.Tracer):
    """A tracer that keeps named submodules (or module types) as opaque leaves and
    remembers the innermost module whose trace failed."""

    def __init__(self, leaf_modules: Sequence[str | type]):
        super().__init__()
        self.leaf_names = {m for m in leaf_modules if isinstance(m, str)}
        self.leaf_types = tuple(m for m in leaf_modules if isinstance(m, type))
        self.leaf_types += DEFAULT_LEAF_TYPES
        self.failed_at: tuple[str, str] | None = None

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self.leaf_names or isinstance(m, self.leaf_types):
            return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_at is None:
                self.failed_at = (self.path_of_module(m), type(m).__name__)
            raise


def trace(model: nn.Module, leaf_modules: Sequence[str | type] = ()) -> fx.GraphModule:
    """Trace ``model`` into a GraphModule, or raise a one-line ``ValueError`` naming the
    module that stopped the trace and suggesting ``leaf_modules``."""
    known = dict(model.named_modules())
    unknown = [m for m in leaf_modules if isinstance(m, str) and m not in known]
    if unknown:
        raise ValueError(f"leaf_modules {unknown} are not submodules of the model")
    tracer = _Tracer(leaf_modules)
    try:
        graph = tracer.trace(model)
    except Exception as err:  # noqa: BLE001 - any trace failure becomes one clear line
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        if tracer.failed_at is not None and tracer.failed_at[0]:
            path, kind = tracer.failed_at
            raise ValueError(
                f"torch.fx cannot trace module {path!r} ({kind}): {reason}; pass "
                f"leaf_modules=[{path!r}] to keep it as an opaque (non-elastic) leaf"
            ) from None
        raise ValueError(
            f"torch.fx cannot trace the forward of {type(model).__name__} itself: {reason}; "
            "move the untraceable code into a submodule and pass its name in leaf_modules"
        ) from None
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    _normalise_inplace(gm)
    return gm


def _normalise_inplace(gm: fx.GraphModule) -> None:
    """Replace in-place ops by out-of-place ones (identical values)."""
    for node in gm.graph.nodes:
        if node.op == "call_function":
            if node.target in _INPLACE_FUNCS:
                node.target = _INPLACE_FUNCS[node.target]
            if node.kwargs.get("inplace"):
                node.kwargs = {**node.kwargs, "inplace": False}
        elif node.op == "call_method":
            name = node.target
            if name.endswith("_") and not name.startswith("_") and hasattr(torch.Tensor, name[:-1]):
                node.target = name[:-1]
        elif node.op == "call_module":
            mod = gm.get_submodule(node.target)
            if getattr(mod, "inplace", False) is True:
                mod.inplace = False
    gm.recompile()


class ShapeProp(fx.Interpreter):
    """Run the graph once, recording each node's output shape in ``node.meta["shape"]``
    (``None`` for non-tensors) and the FLOPs of each module call on the example batch in
    ``node.meta["flops"]`` (used for opaque modules)."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.extra_traceback = False  # keep our one-line message

    def run_node(self, n: fx.Node) -> Any:
        try:
            if n.op == "call_module":
                with FlopCounterMode(display=False) as counter:
                    out = super().run_node(n)
                n.meta["flops"] = counter.get_total_flops()
            else:
                out = super().run_node(n)
        except Exception as err:  # noqa: BLE001
            reason = " ".join(str(err).split())[:200]
            raise ValueError(
                f"running node {n.name!r} ({n.op} {target_name(n)}) on the example input "
                f"failed: {reason}"
            ) from None
        n.meta["shape"] = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        return out


def target_name(n: fx.Node) -> str:
    """A readable name of what ``n`` calls (module path, function or method name)."""
    t = n.target
    return t if isinstance(t, str) else getattr(t, "__name__", repr(t))
