"""tpu/pod.py: every subcommand's dry run prints the gcloud / kubectl / xpk commands a real run would execute, with
the slice's shape, the runtime, the workers and the run's settings in them; bad input is one error line."""

import os
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VM = ["--name", "qwen-pod", "--zone", "us-east5-a", "--project", "my-proj"]


def dry_run(*args, expect_ok=True):
    # No PATH: a dry run must never reach gcloud, kubectl or xpk, even if they are installed.
    result = subprocess.run([sys.executable, os.path.join(REPO, "tpu", "pod.py"), *args], capture_output=True,
                            text=True, timeout=60, env={"PATH": "", "HOME": os.environ.get("HOME", "/tmp")})  # fmt: skip
    if expect_ok:
        assert result.returncode == 0, result.stderr
    return result


def commands(result):
    return [shlex.split(line) for line in result.stdout.splitlines() if line and not line.startswith(("#", " "))]


def test_create_a_tpu_vm_slice():
    (cmd,) = commands(dry_run("--dry-run", "create", *VM, "--accelerator", "v5p-128", "--spot"))
    assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "qwen-pod"]
    assert {"--zone=us-east5-a", "--project=my-proj", "--accelerator-type=v5p-128", "--version=v2-alpha-tpuv5",
            "--spot"} <= set(cmd)  # fmt: skip


def test_create_a_queued_resource_waits_for_it():
    result = dry_run("create", "--dry-run", *VM, "--accelerator", "v5litepod-16", "--queued")  # flag after it too
    assert "16 v5e chips, 4x4" in result.stdout and "4 worker VM(s)" in result.stdout
    create, describe = commands(result)
    assert create[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "qwen-pod"]
    assert {"--node-id=qwen-pod", "--accelerator-type=v5litepod-16", "--runtime-version=v2-alpha-tpuv5-lite"} <= set(create)
    assert describe[3:6] == ["queued-resources", "describe", "qwen-pod"] and "--format=value(state.state)" in describe


def test_install_ships_the_committed_tree_to_every_worker_and_mounts_the_bucket():
    archive, scp, ssh = commands(dry_run("--dry-run", "install", *VM, "--bucket", "my-bucket"))
    assert archive[:4] == ["git", "-C", REPO, "archive"] and archive[-1] == "HEAD"
    tarball = archive[archive.index("--format=tar.gz") + 1].removeprefix("--output=")
    assert scp[3:6] == ["tpu-vm", "scp", tarball] and "--worker=all" in scp
    assert ssh[3:5] == ["tpu-vm", "ssh"] and "--worker=all" in ssh
    remote = next(a for a in ssh if a.startswith("--command=")).removeprefix("--command=")
    assert remote.startswith("set -e;")
    assert ".venv/bin/pip install -q -e '.[tpu]'" in remote and "touch .venv/.installed" in remote
    assert "gcsfuse --implicit-dirs my-bucket /gcs/my-bucket" in remote
    assert "rm -rf" not in remote  # an earlier install's runs/ stay


def test_launch_starts_make_run_on_every_worker_with_the_environment():
    (ssh,) = commands(dry_run("--dry-run", "launch", *VM, "--exp", "pretrain_s1", "--variant", "qwen3_8b",
                              "--workdir", "/gcs/my-bucket/runs/s1", "--args", "--config.steps=1000 --config.seed=3",
                              "--env", "LIBTPU_INIT_ARGS=--xla_tpu_enable_async_all_gather=true"))  # fmt: skip
    assert ssh[4:8] == ["ssh", "qwen-pod", "--zone=us-east5-a", "--project=my-proj"] and "--worker=all" in ssh
    remote = next(a for a in ssh if a.startswith("--command=")).removeprefix("--command=")
    start = remote[remote.index("env PYTHONUNBUFFERED=1") :]
    words = shlex.split(start.split(" > ")[0])
    assert words == ["env", "PYTHONUNBUFFERED=1", "LIBTPU_INIT_ARGS=--xla_tpu_enable_async_all_gather=true", "setsid",
                     "nohup", "make", "run", "EXP=pretrain_s1", "EXTRAS=tpu", "VARIANT=qwen3_8b",
                     "WORKDIR=/gcs/my-bucket/runs/s1", "ARGS=--config.steps=1000 --config.seed=3"]  # fmt: skip
    assert "kill -0" in remote and "echo $! > ~/qwen3jax-run.pid" in remote  # refuses a second run; records it


def test_logs_stop_and_delete():
    (logs,) = commands(dry_run("--dry-run", "logs", *VM, "--worker", "3"))
    assert "--worker=3" in logs and logs[-1] == "--command=tail -n 200 -F ~/qwen3jax-run.log"
    (stop,) = commands(dry_run("--dry-run", "stop", *VM))
    assert "--worker=all" in stop and "kill -TERM -- -$(cat ~/qwen3jax-run.pid)" in stop[-1]  # the whole make group
    (delete,) = commands(dry_run("--dry-run", "delete", *VM))
    assert delete[3:6] == ["tpu-vm", "delete", "qwen-pod"] and "--quiet" in delete
    (delete,) = commands(dry_run("--dry-run", "delete", *VM, "--queued"))
    assert delete[3:6] == ["queued-resources", "delete", "qwen-pod"] and "--force" in delete


def test_gke_jobset_has_one_pod_per_worker_of_the_slice():
    yaml = pytest.importorskip("yaml")
    result = dry_run("--dry-run", "gke", "--accelerator", "v5p-256", "--exp", "pretrain_s3", "--image", "img:1",
                     "--workdir", "/gcs/b/runs/s3")  # fmt: skip
    text = result.stdout.split("\n", 1)[1].rsplit("\nkubectl", 1)[0]
    jobset = yaml.safe_load(text)
    job = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert job["parallelism"] == job["completions"] == 32  # 128 chips, 4 per VM
    pod = job["template"]["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-tpu-accelerator": "tpu-v5p-slice",
                                   "cloud.google.com/gke-tpu-topology": "4x4x8"}  # fmt: skip
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["google.com/tpu"] == 4
    assert container["command"][2].strip() == "make run EXP=pretrain_s3 EXTRAS=tpu WORKDIR=/gcs/b/runs/s3"
    assert commands(result)[-1] == ["kubectl", "apply", "-f", "jobset-qwen3jax-pretrain-s3.yaml"]


def test_xpk_workload():
    (cmd,) = commands(dry_run("--dry-run", "xpk", "--cluster", "c1", "--accelerator", "tpu7x-256", "--exp",
                              "pretrain_s1", "--image", "img:1", "--zone", "us-central1-c"))  # fmt: skip
    assert cmd[:3] == ["xpk", "workload", "create"]
    assert {"--cluster=c1", "--tpu-type=tpu7x-256", "--docker-image=img:1", "--zone=us-central1-c",
            "--command=make run EXP=pretrain_s1 EXTRAS=tpu"} <= set(cmd)  # fmt: skip


def test_bad_input_is_one_error_line():
    for args, message in [
        (["create", *VM, "--accelerator", "v5p-12"], "no standard 3-D slice shape"),
        (["create", *VM, "--accelerator", "tpu7x-8"], "pass --runtime"),
        (["launch", *VM, "--exp", "pretrain_s1", "--env", "NOEQUALS"], "KEY=VALUE"),
    ]:
        result = dry_run("--dry-run", *args, expect_ok=False)
        assert result.returncode == 1 and result.stderr.strip().splitlines() == [result.stderr.strip()]
        assert message in result.stderr and "Traceback" not in result.stderr
