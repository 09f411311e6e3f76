"""`python -m qwen3jax.eval --ckpt DIR --tasks math,code,my_task.json [--mode think|no_think|both] [--n K]
[--budgets 0,64,256,1024]`: evaluate a run directory, native checkpoint or Hugging Face folder on built-in or user
tasks; prints a Markdown table and writes one result JSON per run (plus its samples) under --out.

Runs are cached by checkpoint fingerprint, task content and settings: a rerun returns the stored result
(--no-cache recomputes it). --budgets runs each generation task in thinking mode at every budget (SPEC §4's
stop-thinking insertion) and draws accuracy vs budget, with non-thinking mode as a reference line.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from qwen3jax.convert import CheckpointError
from qwen3jax.data.badinput import BadInputError
from qwen3jax.eval.checkpoints import checkpoint_kind, load_checkpoint
from qwen3jax.eval.report import budget_curve, results_table
from qwen3jax.eval.runner import Settings, evaluate
from qwen3jax.eval.tasks import BUILTIN_TASKS, TaskError, load_task
from qwen3jax.sample.cli import POSITIVE_INT, UsageError, checked

NON_NEGATIVE_INT = checked(int, lambda v: v >= 0, "an integer >= 0")


def _budgets(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers >= 0")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qwen3jax.eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="run directory, native checkpoint or Hugging Face folder")
    p.add_argument("--tokenizer", help="tokenizer.json or SentencePiece .model (default: the checkpoint's)")
    p.add_argument("--tasks", required=True,
                   help=f"comma-separated built-ins ({', '.join(BUILTIN_TASKS)}), .jsonl files or .json task configs")
    p.add_argument("--mode", choices=("think", "no_think", "both"), default="think")
    p.add_argument("--n", type=POSITIVE_INT, default=1, help="samples per prompt (pass@k for k <= n)")
    p.add_argument("--max_new_tokens", "--max-new-tokens", type=POSITIVE_INT, default=512)
    p.add_argument("--limit", type=POSITIVE_INT, help="evaluate the first M records of each task")
    p.add_argument("--budgets", type=_budgets, help="thinking budgets for the budget curve, e.g. 0,64,128,256")
    p.add_argument("--budget", type=NON_NEGATIVE_INT, help="one thinking budget for every thinking-mode run")
    p.add_argument("--temperature", type=checked(float, lambda v: v >= 0, "a number >= 0"))
    p.add_argument("--top_p", "--top-p", type=checked(float, lambda v: 0 < v <= 1, "in (0, 1]"))
    p.add_argument("--top_k", "--top-k", type=POSITIVE_INT)
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0)
    p.add_argument("--batch_size", "--batch-size", type=POSITIVE_INT, default=16)
    p.add_argument("--out", help="results folder (default: <run dir>/eval, or eval_results/<checkpoint name>)")
    p.add_argument("--no-cache", action="store_true", help="recompute runs that have a stored result")
    return p


def default_out(ckpt: pathlib.Path) -> pathlib.Path:
    if checkpoint_kind(ckpt) == "run":
        run_dir = ckpt if (ckpt / "config.json").is_file() else ckpt.parent.parent
        return run_dir / "eval"
    return pathlib.Path("eval_results") / ckpt.absolute().name


def _budgets_of(mode: str, args: argparse.Namespace) -> list[int | None]:
    """Thinking mode runs at every budget of the curve (or the one --budget); non-thinking mode has none."""
    if mode == "no_think":
        return [None]
    return args.budgets or [args.budget]


def main_args(args: argparse.Namespace) -> list[dict]:
    tasks = [load_task(spec.strip()) for spec in args.tasks.split(",") if spec.strip()]  # bad tasks fail first
    ckpt = pathlib.Path(args.ckpt)
    out = pathlib.Path(args.out) if args.out else default_out(ckpt)
    chat, fingerprint = load_checkpoint(ckpt, args.tokenizer)
    overrides = {k: v for k, v in (("temperature", args.temperature), ("top_p", args.top_p),
                                   ("top_k", args.top_k)) if v is not None}  # fmt: skip
    modes = ("think", "no_think") if args.mode == "both" or args.budgets else (args.mode,)
    results = []
    for task in tasks:
        runs = [(None, None)] if task.kind == "multiple_choice" else [
            (mode, budget) for mode in modes for budget in _budgets_of(mode, args)
        ]  # fmt: skip
        curve = []
        for mode, budget in runs:
            settings = Settings(mode=mode or "think", n=args.n, max_new_tokens=args.max_new_tokens, budget=budget,
                                seed=args.seed, limit=args.limit, decoding=overrides, batch_size=args.batch_size)
            result = evaluate(chat, fingerprint, task, settings, out, use_cache=not args.no_cache,
                              checkpoint_path=str(ckpt.absolute()))
            value = result["metrics"][result["primary"]]["value"]
            print(f"{task.name} {result['mode'] or 'loglik'}{'' if budget is None else f' budget {budget}'}: "
                  f"{result['primary']} {'n/a' if value is None else f'{value:.4f}'}"
                  f"{' (cached)' if result['cached'] else ''}", file=sys.stderr, flush=True)
            results.append(result)
            curve.append(result)
        if args.budgets and task.kind == "generation":
            png = out / f"{task.name}-budget-curve.png"
            table = budget_curve(curve, png, f"{task.name}: {curve[0]['primary']} vs thinking budget")
            (out / f"{task.name}-budget-curve.md").write_text(table)
            print(f"\n{task.name}: thinking-budget curve ({png})\n{table}")
    table = results_table(results)
    (out / "results.md").write_text(table)
    print(table)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        main_args(args)
    except (UsageError, CheckpointError, FileNotFoundError, TaskError, BadInputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
