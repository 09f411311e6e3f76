"""Run outputs for people: a progress line, metrics.jsonl, TensorBoard events and a PNG of the curves."""

from __future__ import annotations

import json
import math
import pathlib
import time
from collections.abc import Mapping


class MetricsWriter:
    """Appends rows to metrics.jsonl and TensorBoard events; `purge_step`: TensorBoard hides the run directory's
    earlier events from this step on (they are about to be logged again, or belong to an abandoned attempt)."""

    def __init__(self, workdir: pathlib.Path, *, enabled: bool = True, purge_step: int | None = None):
        self.workdir = workdir
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter

            self._jsonl = open(workdir / "metrics.jsonl", "a")
            self._tb = SummaryWriter(str(workdir / "tensorboard"), purge_step=purge_step)

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        self._jsonl.write(json.dumps({"step": step, "time": time.time(), **scalars}) + "\n")
        self._jsonl.flush()
        for name, value in scalars.items():
            self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()


def read_metrics(path: pathlib.Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as f:
        lines = f.read().split("\n")
    # A last line without its newline is a row whose write was cut short (kill -9): not a row.
    return [json.loads(line) for line in lines[:-1] if line.strip()]


def truncate_metrics(path: pathlib.Path, *, after_step: int) -> None:
    """Drop rows logged after `after_step` (a resumed run logs those steps again)."""
    rows = [row for row in read_metrics(path) if row["step"] <= after_step]
    if path.exists():
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def plot_curves(workdir: pathlib.Path, keys=("train/loss", "eval/loss", "train/lr", "train/grad_norm")) -> pathlib.Path:
    """Write `curves.png`: one panel per metric over steps (a resumed run's rows are all in metrics.jsonl)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(workdir / "metrics.jsonl")
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.4))
    for ax, key in zip(axes, keys):
        points = sorted({r["step"]: r[key] for r in rows if key in r}.items())
        if points:
            ax.plot([s for s, _ in points], [v for _, v in points], marker="." if len(points) < 30 else None)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(workdir.name)
    fig.tight_layout()
    out = workdir / "curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def summary_table(rows: list[dict]) -> list[str]:
    """The final numbers of a run as aligned lines: first and last eval loss (with their ratio) and bits per byte,
    first and last train loss, tokens and steps. Empty when nothing was logged."""
    def first_last(key):
        values = [(r["step"], r[key]) for r in sorted(rows, key=lambda r: r["step"]) if key in r]
        return (values[0], values[-1]) if values else None

    lines = []
    if loss := first_last("eval/loss"):
        (s0, v0), (s1, v1) = loss
        lines.append(f"  eval loss   {v0:7.4f} (step {s0}) -> {v1:7.4f} (step {s1})   {v1 / v0:.2f}x  nats/token")
    if bpb := first_last("eval/bpb"):
        (s0, v0), (s1, v1) = bpb
        lines.append(f"  eval bpb    {v0:7.4f} (step {s0}) -> {v1:7.4f} (step {s1})   {v1 / v0:.2f}x  bits/byte")
    if train := first_last("train/loss"):
        (s0, v0), (s1, v1) = train
        lines.append(f"  train loss  {v0:7.4f} (step {s0}) -> {v1:7.4f} (step {s1})")
    return lines


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
