"""Build-once cache for derived data (embedded corpus, default tokenizer).

Artifacts are built into a temporary sibling directory and renamed into place, under an exclusive file lock, so
concurrent processes (pytest-xdist workers, several hosts sharing a home directory) never see half-written files
and build each artifact only once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable, Iterator

CACHE_ENV = "QWEN3JAX_CACHE"
_DONE = "COMPLETE"


def cache_root() -> pathlib.Path:
    """Root of the cache: `$QWEN3JAX_CACHE`, else `~/.cache/qwen3jax`."""
    return pathlib.Path(os.environ.get(CACHE_ENV) or pathlib.Path.home() / ".cache" / "qwen3jax")


@contextlib.contextmanager
def _exclusive_lock(lock_path: pathlib.Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(target: pathlib.Path, build: Callable[[pathlib.Path], None]) -> pathlib.Path:
    """Returns directory `target`, calling `build(tmp_dir)` to create it if it is not complete yet.

    `build` writes every file of the artifact into the empty directory it is given; the directory is renamed to
    `target` only after `build` returns, so an interrupted build leaves nothing behind that looks finished.
    """
    if (target / _DONE).exists():
        return target
    with _exclusive_lock(target.with_name(target.name + ".lock")):
        if (target / _DONE).exists():  # Another process finished it while we waited for the lock.
            return target
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=target.name + ".tmp", dir=target.parent))
        try:
            build(tmp)
            (tmp / _DONE).touch()
            if target.exists():  # A stale, incomplete directory from an interrupted older build.
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
