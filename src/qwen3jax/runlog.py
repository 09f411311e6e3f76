"""Where a run's log lines go. Our own lines (variant, model, mesh, progress, evals, where the outputs are) go to
the console and to the run directory's `run.log`; library logs (orbax, absl, grain, jax warnings) go to `run.log`
only, unless `verbose` keeps them on the console as well.

`say` is how the commands print their own lines; until `configure` is called (tests, notebooks) it only prints.
"""

from __future__ import annotations

import logging
import pathlib
import sys

LOG_FILE = "run.log"
# Records held while the run directory does not exist yet (the trainer creates it); beyond this many the oldest go.
_MAX_HELD = 10_000

_OWN = logging.getLogger("qwen3jax.console")  # our console lines, copied to run.log (not to the console again)
_OWN.propagate = False
_OWN.setLevel(logging.INFO)


def say(message: str, *, error: bool = False) -> None:
    """Print one of our own lines (stderr if `error`) and keep it in run.log."""
    print(message, file=sys.stderr if error else sys.stdout, flush=True)
    _OWN.log(logging.ERROR if error else logging.INFO, message)


class _RunDirectoryHandler(logging.Handler):
    """Appends formatted records to `path` once its directory exists; records logged before that are held and
    written first, so the log of a run starts with its set-up."""

    def __init__(self, path: pathlib.Path):
        super().__init__(logging.INFO)
        self.path = path
        self._file = None
        self._held: list[str] = []
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname).1s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            if self._file is None:
                if not self.path.parent.is_dir():
                    self._held = [*self._held[-_MAX_HELD + 1 :], line]
                    return
                self._file = open(self.path, "a", encoding="utf-8")
                self._file.writelines(held + "\n" for held in self._held)
                self._held = []
            self._file.write(line + "\n")
            self._file.flush()
        except Exception:  # pylint: disable=broad-except
            self.handleError(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


def configure(workdir: str | pathlib.Path, *, verbose: bool = False) -> pathlib.Path:
    """Send every log record of this process to `workdir/run.log` (appended: a resumed run continues it) and, unless
    `verbose`, take the library handlers (absl's stderr handler among them) off the console. Returns the path."""
    import absl.logging

    path = pathlib.Path(workdir) / LOG_FILE
    handler = _RunDirectoryHandler(path)
    root = logging.getLogger()
    if not verbose:
        for existing in list(root.handlers):
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    absl.logging.set_verbosity(absl.logging.INFO)  # orbax/grain INFO lines are kept in the file
    logging.captureWarnings(True)  # warnings.warn (jax, numpy) become log records, so they follow the same rule
    for existing in list(_OWN.handlers):
        _OWN.removeHandler(existing)
    _OWN.addHandler(handler)
    return path
