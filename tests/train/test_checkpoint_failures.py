"""Checkpoints that break: a truncated or missing file, a write cut short, a full disk. The run names the broken
checkpoint and resumes from the newest one that reads back (never from scratch without a word); a write that
fails is one error with the previous checkpoint intact and its leftover removed (a kill's leftover: on the next
start)."""

import copy
import pathlib
import shutil

import jax
import numpy as np
import pytest

from qwen3jax.train.checkpoint import UNFINISHED, CheckpointError, Checkpointer
from qwen3jax.train.loop import Trainer

from .helpers import tiny_config


class _Saved:
    """A tiny run's state and batch source, saved at steps 1 and 2 with different weights and data positions."""

    def __init__(self, workdir: pathlib.Path, steps=(1, 2), async_save=False, trainer=None):
        self.trainer = trainer or Trainer(tiny_config(), workdir)
        self.workdir = workdir
        self.params, self.next_batch = {}, {}
        state, data = self.trainer.init_state(), self.trainer.batch_source()
        ckpt = Checkpointer(workdir, keep=3, async_save=async_save, log=lambda _: None)
        try:
            for step in steps:
                data.next(state)  # each checkpoint holds another data position
                state = state.replace(step=state.step + 1, params=jax.tree.map(lambda x: x * 1.5, state.params))
                self.params[step] = jax.device_get(state.params)
                ckpt.save(state, data, force=True)
                ckpt.wait()
                self.next_batch[step] = jax.device_get(data.next(state))
                data = self.trainer.batch_source()  # a fresh source, moved to where the saved one was
                for _ in range(step):
                    data.next(state)
        finally:
            ckpt.close()

    def restore(self):
        """(restored state, the next batch of the restored iterator, log lines) from a fresh start."""
        lines = []
        ckpt = Checkpointer(self.workdir, keep=3, async_save=False, log=lines.append)
        data = self.trainer.batch_source()
        try:
            state = ckpt.restore(self.trainer.init_state(), data)
        finally:
            ckpt.close()
        return state, (jax.device_get(data.next(state)) if state is not None else None), lines


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    return _Saved(tmp_path_factory.mktemp("saved") / "run")


@pytest.fixture
def saved(saved_run, tmp_path):
    """A copy of the saved run for one test to break."""
    mine = copy.copy(saved_run)
    mine.workdir = tmp_path / "run"
    shutil.copytree(saved_run.workdir, mine.workdir)
    return mine


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _truncate_largest_file(directory: pathlib.Path) -> pathlib.Path:
    victim = max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size // 2)
    return victim


def test_a_truncated_newest_checkpoint_is_named_moved_aside_and_the_previous_one_resumed(tmp_path, saved):
    newest = tmp_path / "run" / "checkpoints" / "2"
    _truncate_largest_file(newest / "params")
    state, batch, lines = saved.restore()
    assert int(state.step) == 1 and _same(state.params, saved.params[1])  # the step-1 weights, not fresh ones
    assert _same(batch, saved.next_batch[1])  # and its data position
    assert lines[0].startswith(f"checkpoint {newest} cannot be read: ")
    assert f"moved the unreadable checkpoint {newest} to {tmp_path / 'run' / 'checkpoints-broken' / '2'}" in lines
    assert lines[-1] == f"resumed from {newest.parent / '1'}"
    assert not newest.exists() and (tmp_path / "run" / "checkpoints-broken" / "2" / "params").is_dir()  # kept


def test_a_deleted_data_state_says_what_is_missing_and_falls_back(tmp_path, saved):
    newest = tmp_path / "run" / "checkpoints" / "2"
    for path in sorted((newest / "data").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (newest / "data").rmdir()
    state, batch, lines = saved.restore()
    assert lines[0] == f"checkpoint {newest} cannot be read: data/ (the data-iterator position) missing"
    assert int(state.step) == 1 and _same(batch, saved.next_batch[1])


def test_a_checkpoint_another_process_cannot_read_is_skipped_by_every_process(tmp_path, saved, monkeypatch):
    """This process reads step 2, another does not (the all-processes vote says no): all resume from step 1."""
    from qwen3jax.train import checkpoint

    votes = []
    monkeypatch.setattr(checkpoint.distributed, "all_processes", lambda ok: votes.append(ok) or len(votes) > 1)
    newest = tmp_path / "run" / "checkpoints" / "2"
    state, batch, lines = saved.restore()
    assert votes == [True, True]  # this process could read both; the vote on step 2 went against it
    assert lines[0] == f"checkpoint {newest} cannot be read: another process cannot read it"
    assert int(state.step) == 1 and _same(state.params, saved.params[1]) and _same(batch, saved.next_batch[1])


def test_when_no_checkpoint_reads_back_the_run_refuses_in_one_line_and_changes_nothing(tmp_path, saved):
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "2")
    only = tmp_path / "run" / "checkpoints" / "1"
    _truncate_largest_file(only / "params")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "run").rglob("*"))
    with pytest.raises(CheckpointError) as caught:
        saved.restore()
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"no checkpoint in {only.parent} can be read (newest: {only}")
    assert f"--config.init_from={only}" in message and f"move {only.parent} away" in message
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "run").rglob("*")) == before


def test_an_unfinished_write_is_removed_on_the_next_start(tmp_path, saved):
    orphan = tmp_path / "run" / "checkpoints" / f"3{UNFINISHED}"  # what kill -9 during a write leaves
    (orphan / "params").mkdir(parents=True)
    (orphan / "params" / "part").write_bytes(b"x" * 100)
    lines = []
    Checkpointer(tmp_path / "run", keep=3, log=lines.append).close()
    assert lines == [f"removed an unfinished checkpoint write: {orphan}"] and not orphan.exists()
    assert (tmp_path / "run" / "checkpoints" / "1").is_dir()


def test_a_full_disk_during_an_async_write_is_one_error_the_previous_checkpoint_stays_and_the_leftover_goes(
    saved_run, small_disk
):
    size = sum(p.stat().st_blocks * 512 for p in (saved_run.workdir / "checkpoints" / "1").rglob("*"))
    disk = small_disk(int(size * 1.6) // 4096 * 4096)  # room for one checkpoint (as allocated), not two
    run = disk / "run"
    run.mkdir()
    with pytest.raises(CheckpointError) as caught:
        _Saved(run, steps=(1, 2), async_save=True, trainer=saved_run.trainer)
    message = str(caught.value)
    assert "\n" not in message, message
    assert message.startswith(f"writing checkpoint 2 to {run / 'checkpoints'} failed: the disk is full")
    assert f"the newest complete checkpoint is {run / 'checkpoints' / '1'}" in message
    full = copy.copy(saved_run)
    full.workdir = run
    state, batch, lines = full.restore()
    # The leftover write was given back when the failure surfaced, after the save's other writes (which orbax leaves
    # running past the first failure) had finished: none recreated it, this next start found nothing to remove.
    assert not list((run / "checkpoints").glob(f"*{UNFINISHED}*"))
    assert lines == [f"resumed from {run / 'checkpoints' / '1'}"], lines
    assert int(state.step) == 1 and _same(state.params, full.params[1]) and _same(batch, full.next_batch[1])
