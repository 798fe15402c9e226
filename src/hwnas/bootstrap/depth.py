"""Depth: the residual blocks of a traced graph that can be skipped.

A block is the set of nodes strictly between a tensor ``x`` and an addition
``x + f(x)`` whose other operand is ``x`` itself (identity shortcut) with equal shapes,
such that ``f``'s nodes depend only on ``x`` (and constants) and are used only inside
the block. Consecutive blocks (the next block's ``x`` reached from the previous addition
through single-input, single-user, shape-preserving nodes) form a stage.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
from torch import fx


@dataclass
class Block:
    """A skippable residual block: ``add = x + f(x)``; ``body`` are f's nodes in order."""

    x: str
    add: str
    body: list[str] = field(default_factory=list)


def _is_add(n: fx.Node) -> bool:
    is_add = (n.op == "call_function" and n.target in (operator.add, torch.add)) or (
        n.op == "call_method" and n.target == "add"
    )
    return (
        is_add and len(n.args) == 2 and not n.kwargs and all(isinstance(a, fx.Node) for a in n.args)
    )


def _body(x: fx.Node, y: fx.Node, add: fx.Node) -> set[fx.Node] | None:
    shape = add.meta.get("shape")
    if shape is None or x.meta.get("shape") != shape or y.meta.get("shape") != shape:
        return None
    body: set[fx.Node] = set()
    stack, reaches_x = [y], False
    while stack:
        n = stack.pop()
        if n is x:
            reaches_x = True
            continue
        if n in body:
            continue
        if n.op in ("placeholder", "output"):
            return None
        body.add(n)
        stack.extend(n.all_input_nodes)
    if not reaches_x or any(u not in body and u is not add for n in body for u in n.users):
        return None
    return body


def find_stages(graph: fx.Graph) -> list[list[Block]]:
    """Skippable blocks of ``graph``, grouped into stages of consecutive blocks."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    taken: set[fx.Node] = set()
    stages: list[list[Block]] = []
    last_add: fx.Node | None = None
    for n in graph.nodes:
        if not _is_add(n):
            continue
        for x, y in (n.args, n.args[::-1]):
            body = _body(x, y, n)
            if body is not None and not (body | {n}) & taken:
                break
        else:
            continue
        taken |= body | {n}
        block = Block(x.name, n.name, [b.name for b in sorted(body, key=order.get)])
        if last_add is not None and _chained(last_add, x):
            stages[-1].append(block)
        else:
            stages.append([block])
        last_add = n
    return stages


def _chained(add: fx.Node, x: fx.Node, limit: int = 8) -> bool:
    node = add
    for _ in range(limit):
        if node is x:
            return True
        users = list(node.users)
        if len(users) != 1:
            return False
        nxt = users[0]
        if len(nxt.all_input_nodes) != 1 or nxt.meta.get("shape") != add.meta.get("shape"):
            return False
        node = nxt
    return False
