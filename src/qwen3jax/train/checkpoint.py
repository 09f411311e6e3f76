"""Run checkpoints (orbax, async): parameters, optimizer/step/RNG, and the exact position of the batch source.

Layout: `<workdir>/checkpoints/<step>/{params, train, data}`; `data` holds each process's source state as JSON
(`process_<i>-of-<n>.json`, grain's checkpoint format, whatever the source). `params` is saved as its own item so a later stage can
initialise from it without the optimizer (`init_from`). The last `keep` checkpoints are kept; the stage-final one
is the newest, so it is always among them.

Failures: orbax writes a step into `<step>.orbax-checkpoint-tmp-*` and renames it when complete, so a write cut
short leaves only that directory: removed when the write fails (a full disk), or on the next start (kill -9). A checkpoint that cannot be
read back (a truncated or deleted file) is named and moved to `<workdir>/checkpoints-broken/`, and the run resumes
from the newest one that reads; if none does, the run refuses to start rather than start over.

Several processes: orbax writes and reads the arrays collectively; every process resumes from the same step (a
checkpoint one process cannot read is skipped by all), and a checkpoint written by another number of processes
gives the batch source every process's position (`merge_states`), so a run resumes on another process count.
"""

from __future__ import annotations

import contextlib
import errno
import json
import pathlib
import shutil
from collections.abc import Callable
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from qwen3jax.parallel import distributed
from qwen3jax.train.step import TrainState

UNFINISHED = ".orbax-checkpoint-tmp"  # orbax's suffix for a step directory still being written
ITEMS = {"params": "the weights", "train": "the optimizer state, step and RNG", "data": "the data-iterator position"}


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written, or no checkpoint of the run can be read; the message says which and what to do."""


def _abstract(tree):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def describe_failure(error: BaseException) -> str:
    """One line for an orbax/TensorStore failure: the OS error when there is one (a full disk), else the first line."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return "the disk is full (No space left on device)"
        seen = seen.__cause__ or seen.__context__
    text = str(error).strip() or type(error).__name__
    if "No space left on device" in text or "RESOURCE_EXHAUSTED" in text and "space" in text:
        return "the disk is full (No space left on device)"
    first = text.splitlines()[0]
    return f"{type(error).__name__}: {first[:300]}{'…' if len(first) > 300 else ''}"


def _data_file(process_index: int, process_count: int) -> str:
    """The name grain's checkpoint handler gives one process's source position."""
    return f"process_{process_index}-of-{process_count}.json"


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
    def __init__(self, workdir: str | pathlib.Path, *, keep: int, async_save: bool = True,
                 log: Callable[[str], None] = print):  # fmt: skip
        self.workdir = pathlib.Path(workdir).absolute()
        self.directory = self.workdir / "checkpoints"
        self.log = log
        self._failed_save: CheckpointError | None = None
        self._in_flight: int | None = None  # the step of the latest write started (async: maybe still running)
        if jax.process_index() == 0:
            self._remove_unfinished_writes()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, enable_async_checkpointing=async_save, create=True
            ),
        )

    def _remove_unfinished_writes(self) -> None:
        """An interrupted write holds nothing usable (the step it was writing is redone from the previous
        checkpoint) and may be what filled the disk."""
        for path in sorted(self.directory.glob(f"*{UNFINISHED}*")) if self.directory.is_dir() else ():
            shutil.rmtree(path, ignore_errors=True)
            self.log(f"removed an unfinished checkpoint write: {path}")

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: TrainState, source: Any, *, force: bool = False) -> bool:
        """Start writing checkpoint `state.step` (async: it completes in the background; an error of the previous
        write surfaces here or in `wait`) — as a CheckpointError naming the step and what is still intact."""
        step = int(state.step)
        args = ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            train=ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state, "rng": state.rng}),
            data=grain.checkpoint.CheckpointSave(_SourceState(source)),
        )
        self.wait()  # orbax waits for the previous write anyway; waiting here first names the step that failed
        self._in_flight = step
        with self._reporting_write_failure(step):
            return self.manager.save(step, args=args, force=force)

    def restore(self, state: TrainState, source: Any) -> TrainState | None:
        """The newest checkpoint that reads back, in the (sharded) layout of `state`; the batch source is restored
        in place. None when the run has no checkpoint. Unreadable newer ones are moved aside, saying so."""
        broken = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored, reason = self._restore(step, state, source), None
            except CheckpointError:
                raise
            except Exception as e:  # noqa: BLE001 — whatever orbax/TensorStore raise, the checkpoint is unusable
                restored, reason = None, self._unreadable_reason(step, e)
            # Every process must resume from the same step: one that cannot read this checkpoint makes all skip it.
            if not distributed.all_processes(reason is None):
                broken.append((step, reason or "another process cannot read it"))
                self.log(f"checkpoint {self.directory / str(step)} cannot be read: {broken[-1][1]}")
                continue
            for bad_step, _ in broken:
                self._move_aside(bad_step)
            self.log(f"resumed from {self.directory / str(step)}")
            return restored
        if broken:
            newest = self.directory / str(broken[0][0])
            raise CheckpointError(
                f"no checkpoint in {self.directory} can be read (newest: {newest}: {broken[0][1]}); nothing was "
                f"changed. To keep its weights with a fresh optimizer and data order, start a new run with "
                f"--config.init_from={newest} and another --workdir; to start over, move {self.directory} away"
            )
        return None

    def _restore(self, step: int, state: TrainState, source: Any) -> TrainState:
        train_target = {"step": state.step, "opt_state": state.opt_state, "rng": state.rng}
        items = {"params": ocp.args.StandardRestore(_abstract(state.params)),
                 "train": ocp.args.StandardRestore(_abstract(train_target))}  # fmt: skip
        saved_by = self._data_files(step)
        if not saved_by or _data_file(jax.process_index(), jax.process_count()) in saved_by:
            items["data"] = grain.checkpoint.CheckpointRestore(_SourceState(source))  # this process's own position
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        if "data" not in items:
            self._restore_other_process_count(step, source, saved_by)
        train = restored["train"]
        return state.replace(
            params=restored["params"], step=train["step"], opt_state=train["opt_state"], rng=train["rng"]
        )

    def _data_files(self, step: int) -> list[str]:
        data = self.directory / str(step) / "data"
        return sorted(p.name for p in data.glob("process_*-of-*.json")) if data.is_dir() else []

    def _restore_other_process_count(self, step: int, source: Any, saved_by: list[str]) -> None:
        """A checkpoint written by another number of processes: the source takes every process's position."""
        if not hasattr(source, "merge_states"):
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} was written by {len(saved_by)} processes and the batch "
                f"source {type(source).__name__} cannot resume on {jax.process_count()}; resume it on {len(saved_by)}"
            )
        data = self.directory / str(step) / "data"
        source.set_state(source.merge_states([json.loads((data / name).read_text()) for name in saved_by]))

    def _unreadable_reason(self, step: int, error: BaseException) -> str:
        missing = [f"{item}/ ({what})" for item, what in ITEMS.items() if not (self.directory / str(step) / item).is_dir()]
        if missing:
            return f"{' and '.join(missing)} missing"
        return describe_failure(error)

    def _move_aside(self, step: int) -> None:
        """Keep a broken checkpoint for inspection, out of the way of the step numbers the resumed run writes."""
        if jax.process_index() == 0:
            target = self.workdir / "checkpoints-broken" / str(step)
            suffix = 1
            while target.exists():
                target, suffix = target.with_name(f"{step}-{suffix}"), suffix + 1
            target.parent.mkdir(exist_ok=True)
            shutil.move(self.directory / str(step), target)
            self.log(f"moved the unreadable checkpoint {self.directory / str(step)} to {target}")
        distributed.barrier(f"checkpoint {step} moved aside")  # the others list the steps again only after the move
        self.manager.reload()

    def wait(self) -> None:
        with self._reporting_write_failure():
            self.manager.wait_until_finished()

    def close(self) -> None:
        if self._failed_save is not None:  # reported already; orbax would raise it again while it joins its threads
            with contextlib.suppress(Exception):
                self.manager.close()
            return
        with self._reporting_write_failure():
            self.manager.close()

    def _wait_for_abandoned_writes(self) -> None:
        """orbax stops waiting for a save at its first failed write and leaves the save's other writes running
        (orbax 0.12: the commit futures of `AsyncCheckpointer._async_manager`); wait for them, so that the unfinished
        write we remove next is not recreated by one of them a moment later."""
        async_manager = getattr(getattr(self.manager, "_checkpointer", None), "_async_manager", None)
        for write in getattr(async_manager, "_commit_futures", None) or ():
            with contextlib.suppress(Exception):
                write.result()

    @contextlib.contextmanager
    def _reporting_write_failure(self, step: int | None = None):
        """An orbax write failure (of `step`, or else of the write in flight) as one CheckpointError naming the step,
        the cause and the newest checkpoint still intact."""
        step = self._in_flight if step is None else step
        try:
            yield
        except CheckpointError:
            raise
        except Exception as e:
            if self._failed_save is None:
                self.manager.reload()
                intact = self.manager.latest_step()
                kept = (f"the newest complete checkpoint is {self.directory / str(intact)}" if intact is not None
                        else "no checkpoint is complete")  # fmt: skip
                self._failed_save = CheckpointError(
                    f"writing checkpoint {step} to {self.directory} failed: {describe_failure(e)}; {kept}"
                )
                self._wait_for_abandoned_writes()
                if jax.process_index() == 0:  # give the space back now, so the run's last small writes succeed
                    self._remove_unfinished_writes()
            raise self._failed_save from e


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
