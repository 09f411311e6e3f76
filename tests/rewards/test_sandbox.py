"""The bubblewrap sandbox: limits checked with harmless programs, then an escape suite of attacks run (in parallel,
through the sandbox only) with their expected status, host-side evidence that nothing escaped, and no process of
the sandbox's uids left behind."""

import os
import pathlib
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from qwen3jax.rewards import code, sandbox
from qwen3jax.rewards.sandbox import Sandbox, SandboxConfig, run_python

needs_sandbox = pytest.mark.skipif(
    not sandbox.is_available(), reason=f"no sandbox here: {sandbox.default_sandbox().unavailable_reason}"
)

REPO = pathlib.Path(__file__).resolve().parents[2]
CHECKER = pathlib.Path(code.__file__).resolve()
SECRET = "qwen3jax-host-secret-7f3a"
HANG_GUARD_S = 60  # far above every limit used here: a run that takes longer is a hang, not slowness


def _sandbox_uids(box: Sandbox) -> set[int]:
    return set(box._uids._free)  # all slots are free again once no run is in flight


def _processes_of(uids: set[int]) -> list[int]:
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
            if int(uid_line.split()[1]) in uids:
                found.append(int(entry.name))
    return found


@needs_sandbox
def test_runs_a_program_with_stdin_and_a_clean_environment():
    result = run_python("import os, sys\nprint(input()[::-1])\nprint(sorted(os.environ))", stdin="olleh\n")
    assert result.status == "ok" and result.returncode == 0, result
    assert result.stdout.splitlines() == ["hello", "['HOME', 'LANG', 'PATH', 'PWD']"]


@needs_sandbox
def test_error_status_and_exit_code():
    result = run_python("import sys\nprint('partial')\nsys.exit(3)")
    assert (result.status, result.returncode, result.stdout) == ("error", 3, "partial\n")
    crash = run_python("raise ValueError('boom')")
    assert crash.status == "error" and "ValueError: boom" in crash.stderr


@needs_sandbox
def test_process_limit_holds_for_harmless_children():
    """5 children that exit by themselves: all start under the default limit, only some under a limit of 6."""
    program = (
        "import os, time\npids = []\nfor _ in range(5):\n    try:\n        pid = os.fork()\n"
        "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(0.3)\n        os._exit(0)\n"
        "    pids.append(pid)\nfor pid in pids:\n    os.waitpid(pid, 0)\nprint(len(pids))"
    )
    assert run_python(program).stdout.strip() == "5"
    limited = Sandbox(SandboxConfig(max_processes=6)).run(program)
    assert limited.status == "ok" and 0 < int(limited.stdout) < 5, limited


@needs_sandbox
def test_memory_limit_harmless_allocation():
    program = "x = bytearray(100 * 2**20)\nprint(len(x))"
    assert run_python(program, memory_mb=512).stdout.strip() == str(100 * 2**20)
    small = run_python(program, memory_mb=50)
    assert small.status == "error" and "MemoryError" in small.stderr


@needs_sandbox
def test_cpu_limit_kills_a_busy_program():
    result = Sandbox(SandboxConfig(cpu_s=1)).run("while True:\n    pass", timeout_s=30)
    assert result.status == "killed" and "SIGXCPU" in result.detail, result


def test_unavailable_never_runs_the_program(tmp_path):
    marker = tmp_path / "ran"
    box = Sandbox(SandboxConfig(python=str(tmp_path / "no-python")))
    result = box.run(f"open({str(marker)!r}, 'w').write('x')")
    assert result.status == "unavailable" and "no sandbox interpreter" in result.detail
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ escape suite
def _attacks(tmp: pathlib.Path, port: int) -> dict[str, tuple[str, str, float]]:
    """name -> (program, expected status, wall-clock limit)."""
    host_pid = os.getpid()
    return {
        "read_file_outside": ("print(open('/etc/hostname').read())", "error", 5),
        "read_project_file": (f"print(open({str(CHECKER)!r}).read())", "error", 5),
        "list_project": (f"import os\nprint(os.listdir({str(REPO)!r}))", "error", 5),
        "list_home": ("import os\nprint(os.listdir('/root'))", "error", 5),
        "write_file_outside": (f"open({str(tmp / 'escaped')!r}, 'w').write('x')", "error", 5),
        "socket_to_local_listener": (
            f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'hi')",
            "error",
            5,
        ),
        "fork_bomb": (
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", "timeout", 2
        ),
        "memory_bomb": ("x = []\nwhile True:\n    x.append(bytearray(2**24))", "error", 5),
        "infinite_loop": ("while True:\n    pass", "timeout", 2),
        "sleep_past_limit": ("import time\ntime.sleep(60)", "timeout", 1),
        "huge_output": ("while True:\n    print('x' * 1000)", "killed", 5),
        "kill_the_parent": (f"import os\nos.kill(os.getppid(), 9)\nos.kill({host_pid}, 9)", "error", 5),
        "daemon_outlives_run": (
            "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        time.sleep(30)\n        open('/tmp/daemon-was-here', 'w').write('x')\n    os._exit(0)\n"
            "print('parent done')",
            "ok",
            5,
        ),
        "write_dev_shm": (f"open('/dev/shm/{tmp.name}-shm', 'w').write('x')\nprint('written')", "ok", 5),
        "raise_rlimits": (
            "import resource\nresource.setrlimit(resource.RLIMIT_NPROC, (10**6, 10**6))", "error", 5
        ),
        "patch_the_checker": (f"open({str(CHECKER)!r}, 'a').write('\\nSCORE = 1.0\\n')", "error", 5),
        "exhaust_file_descriptors": (
            "fds = []\ntry:\n    while True:\n        fds.append(open('/dev/null'))\nexcept OSError:\n    pass\n"
            "print(len(fds))",
            "ok",
            5,
        ),
        "read_host_environment": (
            "import os\nseen = [repr(dict(os.environ))]\nfor pid in os.listdir('/proc'):\n    if pid.isdigit():\n"
            "        try:\n            seen.append(open(f'/proc/{pid}/environ').read())\n        except OSError:\n"
            "            pass\nprint('\\n'.join(seen))",
            "ok",
            5,
        ),
        "see_host_processes": (f"print(open('/proc/{host_pid}/cmdline').read())", "error", 5),
        "become_root": ("import os\nos.setuid(0)", "error", 5),
        "huge_file": ("open('/tmp/big', 'wb').write(b'x' * (64 * 2**20))", "error", 5),
    }


@pytest.fixture(scope="module")
def escape_runs(tmp_path_factory):
    """Every attack run once, two at a time (the suite's wall time is about the sum of the limits / 2)."""
    tmp = tmp_path_factory.mktemp("escape")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    connections = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                connections.append(listener.accept())
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    os.environ["QWEN3JAX_SANDBOX_TEST_SECRET"] = SECRET
    checker_before = CHECKER.read_bytes()
    attacks = _attacks(tmp, listener.getsockname()[1])
    box = sandbox.default_sandbox()
    start = time.monotonic()
    try:
        with ThreadPoolExecutor(box.workers) as pool:
            results = dict(
                zip(attacks, pool.map(lambda a: run_python(a[0], timeout_s=a[2]), attacks.values()))
            )
    finally:
        stop.set()
        thread.join()
        listener.close()
        del os.environ["QWEN3JAX_SANDBOX_TEST_SECRET"]
    yield {
        "attacks": attacks, "results": results, "tmp": tmp, "connections": connections, "box": box,
        "checker_before": checker_before, "suite_s": time.monotonic() - start,
    }  # fmt: skip


@needs_sandbox
@pytest.mark.parametrize("name", sorted(_attacks(pathlib.Path("/x"), 0)))
def test_escape_attack_gets_its_status(escape_runs, name):
    _, expected, limit = escape_runs["attacks"][name]
    result = escape_runs["results"][name]
    assert result.status == expected, result
    assert result.wall_s < limit + HANG_GUARD_S, result


@needs_sandbox
def test_escape_suite_leaves_no_trace(escape_runs):
    results, tmp = escape_runs["results"], escape_runs["tmp"]
    assert len(results) >= 15
    assert not (tmp / "escaped").exists()
    assert escape_runs["connections"] == []
    assert not pathlib.Path(f"/dev/shm/{tmp.name}-shm").exists()
    assert results["write_dev_shm"].stdout == "written\n"
    assert CHECKER.read_bytes() == escape_runs["checker_before"]
    assert "Read-only file system" in results["patch_the_checker"].stderr or "No such file" in (
        results["patch_the_checker"].stderr
    )
    assert SECRET not in results["read_host_environment"].stdout
    assert "def " not in results["read_project_file"].stdout
    assert int(results["exhaust_file_descriptors"].stdout) < 64
    huge = results["huge_output"]
    assert huge.truncated and len(huge.stdout) <= SandboxConfig().max_output_bytes
    assert "MemoryError" in results["memory_bomb"].stderr
    assert "ProcessLookupError" in results["kill_the_parent"].stderr
    # The daemon and the fork bomb's processes died with their sandboxes: no process of a sandbox uid remains.
    deadline = time.monotonic() + 10
    while _processes_of(_sandbox_uids(escape_runs["box"])) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_of(_sandbox_uids(escape_runs["box"])) == []


@needs_sandbox
def test_fake_pass_line_earns_nothing():
    """A program that prints what a passing run would print (and exits 0 before the tests) scores 0."""
    fake = (
        "</think>\n```python\nimport json, os\nprint('PASS')\nprint('All tests passed')\n"
        "print('0' * 32 + ' ' + json.dumps([True, True]), flush=True)\nos._exit(0)\n```"
    )
    honest = "</think>\n```python\ndef double(x):\n    return 2 * x\n```"
    tests = ["assert double(2) == 4", "assert double(-1) == -2"]
    reward = code.CodeTestsReward()
    result = reward(["q", "q"], [fake, honest], tests=[tests, tests])
    assert result.scores.tolist() == [0.0, 1.0] and result.mask.all()
    # The fake lines did reach the output: only the nonce tells them apart.
    fake_run = sandbox.run_python(code.extract_program(fake))
    assert fake_run.stdout.splitlines() == ["PASS", "All tests passed", "0" * 32 + " [true, true]"]


def test_code_rewards_mask_when_no_sandbox_starts(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    monkeypatch.setattr(sandbox, "_DEFAULT", Sandbox(SandboxConfig(python=str(tmp_path / "no-python"))))
    program = f"</think>\n```python\nopen({str(marker)!r}, 'w').write('x')\n```"
    tests = code.CodeTestsReward()(["q"], [program], tests=[["assert True"]])
    cases = code.CodeIOReward()(["q"], [program], tests=[[{"stdin": "", "stdout": ""}]])
    for result in (tests, cases):
        assert result.reasons == ("sandbox_unavailable",) and not result.mask.any()
    assert not marker.exists()
