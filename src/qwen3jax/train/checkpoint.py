"""Run checkpoints (orbax, async): parameters, optimizer/step/RNG, and the exact position of the batch source.

Layout: `<workdir>/checkpoints/<step>/{params, train, data}`; `data` holds each process's source state as JSON
(`process_<i>-of-<n>.json`, grain's checkpoint format, whatever the source). `params` is saved as its own item so a later stage can
initialise from it without the optimizer (`init_from`). The last `keep` checkpoints are kept; the stage-final one
is the newest, so it is always among them.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from qwen3jax.train.step import TrainState


def _abstract(tree):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class _SourceState:
    """A batch source as grain's checkpoint handler sees a non-grain iterator: state as bytes."""

    def __init__(self, source: Any):
        self._source = source

    def get_state(self) -> bytes:
        return json.dumps(self._source.get_state(), indent=1).encode()

    def set_state(self, state: bytes) -> None:
        self._source.set_state(json.loads(state))

    def start_prefetch(self) -> None:
        """Called by the handler after a restore; a source starts reading on its next `next()`."""


class Checkpointer:
    def __init__(self, workdir: str | pathlib.Path, *, keep: int, async_save: bool = True):
        self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, enable_async_checkpointing=async_save, create=True
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: TrainState, source: Any, *, force: bool = False) -> bool:
        """Save the train state and the batch source's position (its JSON `get_state()`)."""
        args = ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            train=ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state, "rng": state.rng}),
            data=grain.checkpoint.CheckpointSave(_SourceState(source)),
        )
        return self.manager.save(int(state.step), args=args, force=force)

    def restore(self, state: TrainState, source: Any, step: int | None = None) -> TrainState:
        """Restore into the (sharded) layout of `state`; the batch source is restored in place."""
        step = self.latest_step() if step is None else step
        train_target = {"step": state.step, "opt_state": state.opt_state, "rng": state.rng}
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(_abstract(state.params)),
                train=ocp.args.StandardRestore(_abstract(train_target)),
                data=grain.checkpoint.CheckpointRestore(_SourceState(source)),
            ),
        )
        train = restored["train"]
        return state.replace(
            params=restored["params"], step=train["step"], opt_state=train["opt_state"], rng=train["rng"]
        )

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def resolve_init_checkpoint(path: str | pathlib.Path) -> pathlib.Path:
    """`init_from` accepts a step directory, a `checkpoints/` directory, or a run directory (newest step wins)."""
    p = pathlib.Path(path).expanduser().absolute()
    if not p.exists():
        run = f"`make run EXP={p.name}`" if p.parent.name == "runs" else "the run that writes it"
        raise FileNotFoundError(f"init_from: {p} does not exist: make it first ({run}) or pass "
                                f"--config.init_from=<run dir|checkpoint|HF folder>")  # fmt: skip
    if (p / "params").is_dir():
        return p
    ckpt_dir = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    steps = sorted((int(d.name) for d in ckpt_dir.iterdir() if d.name.isdigit() and (d / "params").is_dir()))
    if not steps:
        raise FileNotFoundError(f"init_from: no checkpoint under {p} (expected <run>/checkpoints/<step>/params)")
    return ckpt_dir / str(steps[-1])


def load_params(path: str | pathlib.Path, abstract_params: dict) -> dict:
    """Parameters only, from any checkpoint `resolve_init_checkpoint` accepts, in the layout of `abstract_params`.
    A checkpoint of another model (other shapes or parameter names) is a ValueError naming the parameters."""
    step_dir = resolve_init_checkpoint(path)
    with ocp.StandardCheckpointer() as ckptr:
        check_same_shapes(ckptr.metadata(step_dir / "params").item_metadata, abstract_params, f"init_from {step_dir}")
        return ckptr.restore(step_dir / "params", _abstract(abstract_params))


def check_same_shapes(stored, expected, where: str) -> None:
    """ValueError naming the parameters whose shapes (or presence) differ between two parameter trees."""
    stored, expected = _shapes(stored), _shapes(expected)
    problems = [f"{name}: stored {stored.get(name)}, this model {expected.get(name)}"
                for name in sorted(set(stored) | set(expected)) if stored.get(name) != expected.get(name)]  # fmt: skip
    if problems:
        raise ValueError(
            f"{where}: {len(problems)} parameters do not match this model (None: absent), e.g. "
            f"{'; '.join(problems[:3])}; the model config must be the one of the run it comes from"
        )


def _shapes(tree) -> dict[str, tuple[int, ...]]:
    """Leaf shapes by "a/b/0/c" path (a checkpoint's metadata names list indices as strings, a state as ints)."""
    return {
        jax.tree_util.keystr(path, simple=True, separator="/"): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }
