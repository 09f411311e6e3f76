"""Matmul FLOPs and memory traffic of a compiled XLA program, read from its optimized HLO text.

XLA's own `compiled.cost_analysis()` counts the body of every while loop once, and our train step is loops: layers
are scanned and micro-batches accumulated, so it reports a small fraction of the step (1/6 for 6 scanned layers).
Here every computation is costed once and each call site multiplies it by how often it runs: a while loop by its
`known_trip_count`, a conditional by its most expensive branch. Counts are per device (the SPMD-partitioned
program).

- FLOPs: `dot`, `ragged-dot` and `convolution` (TPU rewrites most dots as convolutions) at 2 per multiply-add, plus
  Pallas/Mosaic kernels that declare a cost estimate. Elementwise work is not counted (it is not what the MXUs do).
- Bytes: operands plus result of every instruction outside fusions (a fusion's internals stay on chip), excluding
  bookkeeping (parameters, tuples, bitcasts, constants): an estimate of HBM traffic, as XLA's own analysis makes it.
"""

from __future__ import annotations

import functools
import math
import re
from typing import NamedTuple

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
    def cost(name: str, fused: bool) -> tuple[float, float]:
        shapes: dict[str, str] = {}
        flops = traffic = 0.0
        for ins in computations[name]:
            shapes[ins.name] = ins.shape
            flops += _own_flops(ins, shapes)
            if not fused and ins.opcode not in _NO_TRAFFIC:
                traffic += _array_bytes(ins.shape) + sum(_array_bytes(shapes.get(o, "")) for o in ins.operands)
            for callee, times, callee_fused in _calls(ins, computations, unknown):
                if callee in computations:
                    f, b = cost(callee, fused or callee_fused)
                    flops, traffic = flops + times * f, traffic + times * b
            if ins.opcode == "conditional":  # one branch runs: the most expensive one bounds it
                branches = [cost(b, fused) for b in _branches(ins) if b in computations]
                if branches:
                    f, b = max(branches)
                    flops, traffic = flops + f, traffic + b
        return flops, traffic

    flops, traffic = cost(entry, False)
    return ProgramCost(flops, traffic, unknown[0])


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
        labels = re.search(r"dim_labels=\w*_(\w+)->", ins.attributes)
        rhs = _dims(shapes.get(ins.operands[1], ""))
        if not labels or len(labels.group(1)) != len(rhs):
            return 0.0
        # Each output element sums over the kernel's input features and window (every label but `o`).
        return 2.0 * out * math.prod(n for label, n in zip(labels.group(1), rhs) if label != "o")
    if ins.opcode == "custom-call":
        estimate = re.search(r'"flops"\s*:\s*"?(\d+)', ins.attributes)
        return float(estimate.group(1)) if estimate else 0.0
    return 0.0


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
    """A while loop's static trip count: XLA's `known_trip_count` when it is printed, else the bound of the loop
    condition `counter < constant` (scan and fori_loop count from 0 in steps of 1)."""
    known = re.search(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"(\d+)"', ins.attributes)
    if known:
        return int(known.group(1))
    condition = re.search(r"condition=%?([\w.\-]+)", ins.attributes)
    instructions = computations.get(condition.group(1), []) if condition else []
    constants = {i.name: i.operand_text for i in instructions if i.opcode == "constant"}
    for i in instructions:
        if i.opcode == "compare" and "direction=LT" in i.attributes and len(i.operands) == 2:
            bound = constants.get(i.operands[1], "")
            if bound.isdigit():
                return int(bound)
    return None


def _branches(ins: _Instruction) -> list[str]:
    listed = re.search(r"branch_computations=\{([^}]*)\}", ins.attributes)
    if listed:
        return re.findall(r"%?([\w.\-]+)", listed.group(1))
    return re.findall(r"(?:true|false)_computation=%?([\w.\-]+)", ins.attributes)

