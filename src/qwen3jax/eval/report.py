"""Results as Markdown: one row per run, and the thinking-budget curve (accuracy vs budget, per mode) as a table
and a PNG with the budget on a log axis."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence


def _cell(summary: dict) -> str:
    low, high = summary["ci"]
    if summary["value"] is None:
        return "n/a"
    return f"{summary['value']:.3f} [{low:.3f}, {high:.3f}]"


def results_table(results: Sequence[dict]) -> str:
    """One row per result: task, mode, budget, n, records, the primary metric with its interval, its method."""
    lines = ["| task | mode | budget | n | records | metric | value [95% CI] | CI method | cached |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        primary = r["metrics"][r["primary"]]
        budget = "-" if r.get("budget") is None else str(r["budget"])
        lines.append(
            f"| {r['task']} | {r['mode'] or 'loglik'} | {budget} | {r['n']} | {r['records']} | {r['primary']} | "
            f"{_cell(primary)} | {primary['ci_method']} | {'yes' if r.get('cached') else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def budget_curve(results: Sequence[dict], png: pathlib.Path, title: str) -> str:
    """The Markdown table of the primary metric per (mode, budget) and a PNG of it vs log budget. Runs without a
    budget (non-thinking mode, or unlimited thinking) are drawn as horizontal reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["| mode | budget | metric | value [95% CI] |", "|---|---|---|---|"]
    curves: dict[str, list[tuple[int, dict]]] = {}
    references: dict[str, dict] = {}
    for r in results:
        summary = r["metrics"][r["primary"]]
        budget = r.get("budget")
        lines.append(f"| {r['mode']} | {'unlimited' if budget is None else budget} | {r['primary']} | "
                     f"{_cell(summary)} |")  # fmt: skip
        if summary["value"] is None:
            continue
        if budget is None:
            references[r["mode"]] = summary
        else:
            curves.setdefault(r["mode"], []).append((budget, summary))
    fig, ax = plt.subplots(figsize=(6, 4))
    positive = [b for points in curves.values() for b, _ in points if b > 0]
    for mode, points in curves.items():
        points.sort(key=lambda p: p[0])
        xs = [b for b, _ in points]
        ys = [s["value"] for _, s in points]
        err = [[s["value"] - s["ci"][0] for _, s in points], [s["ci"][1] - s["value"] for _, s in points]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"{mode} (budget)")
    for mode, summary in references.items():
        ax.axhline(summary["value"], linestyle="--", color="grey" if mode == "no_think" else "black",
                   label=f"{mode} (no budget)")  # fmt: skip
    # symlog: budget 0 (think block closed at once) sits at 0, the rest on a log scale.
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1)
    ax.set_xlabel("thinking budget (tokens)")
    ax.set_ylabel(results[0]["primary"] if results else "")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return "\n".join(lines) + "\n"
