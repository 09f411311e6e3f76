"""Matmul FLOPs and memory traffic of a compiled XLA program, read from its optimized HLO text.

XLA's own `compiled.cost_analysis()` counts the body of every while loop once, and our train step is loops: layers
are scanned and micro-batches accumulated, so it reports a small fraction of the step (1/6 for 6 scanned layers).
Here every computation is costed once and each call site multiplies it by how often it runs: a while loop by its
`known_trip_count`, a conditional by its most expensive branch. Counts are per device (the SPMD-partitioned
program).

- FLOPs: `dot`, `ragged-dot` and `convolution` (TPU rewrites most dots as convolutions) at 2 per multiply-add.
  Custom calls (Pallas/Mosaic kernels) carry no cost in the compiled program: their runs are counted, not their
  FLOPs. Elementwise work is not counted (it is not what the MXUs do).
- Bytes: operands plus result of every instruction outside fusions (a fusion's internals stay on chip), excluding
  bookkeeping (parameters, tuples, bitcasts, constants): an estimate of HBM traffic, as XLA's own analysis makes it.
"""

from __future__ import annotations

import functools
import math
import re
from typing import NamedTuple

import numpy as np

_HEADER = re.compile(r"^(ENTRY )?%?([\w.\-]+) \(.*\) -> .* \{$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*)$")
_ARRAY = re.compile(r"\b(pred|s4|u4|s8|u8|s16|u16|s32|u32|s64|u64|f8\w*|bf16|f16|f32|f64|c64|c128)\[([\d,]*)\]")
_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "s32": 4, "u32": 4, "s64": 8,
          "u64": 8, "bf16": 2, "f16": 2, "f32": 4, "f64": 8, "c64": 8, "c128": 16}  # fmt: skip
_NO_TRAFFIC = {"parameter", "get-tuple-element", "tuple", "bitcast", "constant", "after-all", "partition-id",
               "replica-id", "while", "conditional", "call", "opt-barrier"}  # fmt: skip


class ProgramCost(NamedTuple):
    flops: float  # matmul FLOPs per device per call
    bytes_accessed: float  # estimated HBM bytes per device per call
    unknown_trip_counts: int  # while loops without a static trip count, each counted as running once
    kernel_calls: float  # runs of custom kernels (Pallas/Mosaic) that declare no cost: their FLOPs are not counted


class _Instruction(NamedTuple):
    name: str
    shape: str  # the result type text
    opcode: str
    operands: tuple[str, ...]
    operand_text: str  # what the parentheses hold (a constant's value)
    attributes: str


def program_cost(hlo_text: str) -> ProgramCost:
    computations, entry = _parse(hlo_text)
    unknown = [0]

    @functools.cache
    def cost(name: str, fused: bool) -> tuple[float, float, float]:
        shapes: dict[str, str] = {}
        flops = traffic = kernels = 0.0
        for ins in computations[name]:
            shapes[ins.name] = ins.shape
            flops += _own_flops(ins, shapes)
            kernels += ins.opcode == "custom-call" and 'custom_call_target="tpu_custom_call"' in ins.attributes
            if not fused and ins.opcode not in _NO_TRAFFIC:
                traffic += _array_bytes(ins.shape) + sum(_array_bytes(shapes.get(o, "")) for o in ins.operands)
            called = [(times, cost(callee, fused or f)) for callee, times, f in _calls(ins, computations, unknown)
                      if callee in computations]  # fmt: skip
            if ins.opcode == "conditional":  # one branch runs: the most expensive one bounds it
                branches = [cost(b, fused) for b in _branches(ins) if b in computations]
                called += [(1.0, max(branches))] if branches else []
            for times, (f, b, k) in called:
                flops, traffic, kernels = flops + times * f, traffic + times * b, kernels + times * k
        return flops, traffic, kernels

    flops, traffic, kernels = cost(entry, False)
    return ProgramCost(flops, traffic, unknown[0], kernels)


def _parse(text: str) -> tuple[dict[str, list[_Instruction]], str]:
    computations: dict[str, list[_Instruction]] = {}
    entry, current = "", None
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header:
            current = computations.setdefault(header.group(2), [])
            entry = header.group(2) if header.group(1) else entry
            continue
        match = _INSTRUCTION.match(line)
        if match and current is not None:
            current.append(_split_instruction(match.group(1), match.group(2)))
    if not entry:
        raise ValueError("no ENTRY computation in the HLO text")
    return computations, entry


def _split_instruction(name: str, rest: str) -> _Instruction:
    """`SHAPE opcode(operands), attributes` → parts; SHAPE may be a parenthesised tuple."""
    end = _matching(rest, 0) + 1 if rest.startswith("(") else rest.index(" ")
    shape, rest = rest[:end], rest[end:].lstrip()
    open_paren = rest.index("(")
    close = _matching(rest, open_paren)
    inside = rest[open_paren + 1 : close]
    return _Instruction(name, shape, rest[:open_paren], tuple(re.findall(r"%([\w.\-]+)", inside)), inside,
                        rest[close + 1 :])  # fmt: skip


def _matching(text: str, start: int) -> int:
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise ValueError(f"unbalanced parentheses in HLO: {text[:80]!r}")


def _dims(shape: str) -> list[int]:
    match = _ARRAY.search(shape)
    return [int(d) for d in match.group(2).split(",") if d] if match else []


def _array_bytes(shape: str) -> float:
    return sum(_BYTES.get(t, 1) * math.prod(int(d) for d in dims.split(",") if d) for t, dims in _ARRAY.findall(shape))


def _own_flops(ins: _Instruction, shapes: dict[str, str]) -> float:
    out = math.prod(_dims(ins.shape))
    if ins.opcode in ("dot", "ragged-dot"):
        contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", ins.attributes)
        lhs = _dims(shapes.get(ins.operands[0], ""))
        k = math.prod(lhs[int(i)] for i in contracting.group(1).split(",") if i) if contracting and lhs else 1
        return 2.0 * out * k
    if ins.opcode == "convolution":
        labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", ins.attributes)
        lhs, rhs, result = (_dims(shapes.get(ins.operands[0], "")), _dims(shapes.get(ins.operands[1], "")),
                            _dims(ins.shape))  # fmt: skip
        if not labels or [len(g) for g in labels.groups()] != [len(lhs), len(rhs), len(result)]:
            return 0.0
        lhs_of, rhs_of, out_of = (dict(zip(g, d)) for g, d in zip(labels.groups(), (lhs, rhs, result)))
        spatial = sorted(label for label in rhs_of if label.isdigit())
        window = _window(ins.attributes, len(spatial))
        # Each output element sums over the kernel's input features and the window taps that land on the input:
        # the TPU compiler writes batched matmuls as convolutions whose padded window mostly reads padding (a
        # window of 16 over a 1-wide input, padded by 15 on each side, is one product per output, not 16).
        taps = math.prod(_valid_taps(lhs_of[d], out_of[d], rhs_of[d], *window[i]) / out_of[d] for i, d in enumerate(spatial))
        return 2.0 * out * rhs_of["i"] * taps
    return 0.0


def _window(attributes: str, rank: int) -> list[tuple[int, int, int, int, int]]:
    """(pad_low, pad_high, stride, lhs_dilation, rhs_dilation) per spatial dimension of a convolution."""
    found = re.search(r"window=\{([^}]*)\}", attributes)
    fields = dict(re.findall(r"(\w+)=(\S+)", found.group(1))) if found else {}

    def per_dim(name: str, default: str) -> list[str]:
        return fields[name].split("x") if name in fields else [default] * rank

    pads = [tuple(int(n) for n in p.split("_")) for p in per_dim("pad", "0_0")]
    strides, lhs_dilate, rhs_dilate = (list(map(int, per_dim(k, "1"))) for k in ("stride", "lhs_dilate", "rhs_dilate"))
    return [(*pads[i], strides[i], lhs_dilate[i], rhs_dilate[i]) for i in range(rank)]


def _valid_taps(size: int, out: int, window: int, pad_low: int, pad_high: int, stride: int, lhs_dilation: int,
                rhs_dilation: int) -> int:  # fmt: skip
    """How many (output position, window tap) pairs of one spatial dimension read an input element, not padding
    or the holes of a dilated input."""
    del pad_high  # implied by the output size
    o = np.arange(out)[:, None]
    x = o * stride + np.arange(window)[None, :] * rhs_dilation - pad_low  # position in the dilated input
    return int(np.count_nonzero((x >= 0) & (x <= (size - 1) * lhs_dilation) & (x % lhs_dilation == 0)))


def _calls(ins: _Instruction, computations: dict[str, list[_Instruction]], unknown: list[int]) -> list[tuple[str, float, bool]]:
    """(callee, times it runs per run of `ins`, whether it is fused) for every computation `ins` calls."""
    if ins.opcode == "while":
        body = re.search(r"body=%?([\w.\-]+)", ins.attributes)
        trips = _trip_count(ins, computations)
        if trips is None:
            unknown[0] += 1
        return [(body.group(1), float(trips or 1), False)] if body else []
    if ins.opcode == "fusion":
        callee = re.search(r"calls=%?([\w.\-]+)", ins.attributes)
        return [(callee.group(1), 1.0, True)] if callee else []
    if ins.opcode in ("call", "async-start"):
        callee = re.search(r"(?:to_apply|calls)=%?([\w.\-]+)", ins.attributes)
        return [(callee.group(1), 1.0, False)] if callee else []
    return []  # reduce/sort/map appliers are scalar functions: no matmuls, no traffic of their own


def _trip_count(ins: _Instruction, computations: dict[str, list[_Instruction]]) -> int | None:
    """A while loop's static trip count: XLA's `known_trip_count` when it is printed, else read from the loop:
    the condition `counter < N` with N a constant, and the body's `counter + step` (XLA may unroll a loop, making
    the step larger than 1). Counters start at 0 (scan and fori_loop do)."""
    known = re.search(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"(\d+)"', ins.attributes)
    if known:
        return int(known.group(1))
    condition = re.search(r"condition=%?([\w.\-]+)", ins.attributes)
    body = re.search(r"body=%?([\w.\-]+)", ins.attributes)
    cond = {i.name: i for i in computations.get(condition.group(1), [])} if condition else {}
    for compare in cond.values():
        if compare.opcode != "compare" or "direction=LT" not in compare.attributes or len(compare.operands) != 2:
            continue
        counter, bound = (cond.get(name) for name in compare.operands)
        if bound is None or bound.opcode != "constant" or not bound.operand_text.isdigit():
            continue
        index = _tuple_index(counter)
        step = _counter_step(computations.get(body.group(1), []) if body else [], index)
        return -(-int(bound.operand_text) // step)
    return None


def _tuple_index(ins: _Instruction | None) -> int | None:
    if ins is None or ins.opcode != "get-tuple-element":
        return None
    found = re.search(r"index=(\d+)", ins.attributes)
    return int(found.group(1)) if found else None


def _counter_step(body: list[_Instruction], index: int | None) -> int:
    """How much the loop body adds to tuple element `index` (1 unless it is visibly `element + constant`)."""
    by_name = {i.name: i for i in body}
    root = body[-1] if body else None
    if index is None or root is None or root.opcode != "tuple" or index >= len(root.operands):
        return 1
    update = by_name.get(root.operands[index])
    if update is None or update.opcode != "add":
        return 1
    operands = [by_name.get(name) for name in update.operands]
    constants = [o for o in operands if o is not None and o.opcode == "constant" and o.operand_text.isdigit()]
    counters = [o for o in operands if _tuple_index(o) == index]
    return int(constants[0].operand_text) if constants and counters and int(constants[0].operand_text) > 0 else 1


def _branches(ins: _Instruction) -> list[str]:
    listed = re.search(r"branch_computations=\{([^}]*)\}", ins.attributes)
    if listed:
        return re.findall(r"%?([\w.\-]+)", listed.group(1))
    return re.findall(r"(?:true|false)_computation=%?([\w.\-]+)", ins.attributes)

