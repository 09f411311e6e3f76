#!/usr/bin/env python3
"""Run qwen3jax on a Cloud TPU slice: create it, install the project on every worker, launch `make run` on all of
them, stream logs, stop (checkpointing) and delete; or run it on GKE (a JobSet file, or xpk). See tpu/README.md.

    python tpu/pod.py create  --name my-tpu --zone us-east5-a --accelerator v5p-128 [--queued] [--spot]
    python tpu/pod.py install --name my-tpu --zone us-east5-a [--bucket my-bucket]
    python tpu/pod.py launch  --name my-tpu --zone us-east5-a --exp pretrain_s1 [--variant qwen3_8b]
                              [--workdir /gcs/my-bucket/runs/s1] [--args "--config.steps=1000"] [--env K=V ...]
    python tpu/pod.py logs    --name my-tpu --zone us-east5-a [--worker all]
    python tpu/pod.py stop    --name my-tpu --zone us-east5-a
    python tpu/pod.py delete  --name my-tpu --zone us-east5-a [--queued]
    python tpu/pod.py gke     --accelerator v5p-128 --exp pretrain_s1 --image IMAGE [--output jobset.yaml]
    python tpu/pod.py xpk     --cluster my-cluster --accelerator v5p-128 --exp pretrain_s1 --image IMAGE

Every subcommand takes `--dry-run` (before or after the subcommand): the commands are printed, one per line, ready
to paste into a shell, and nothing runs. Standard library only: it runs on a laptop without the project installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import shlex
import string
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _load_topology():
    """qwen3jax/parallel/topology.py by path: it is standard library only, while its package imports jax."""
    spec = importlib.util.spec_from_file_location("qwen3jax_topology", ROOT / "src/qwen3jax/parallel/topology.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_topology = _load_topology()
Slice, parse_slice = _topology.Slice, _topology.parse_slice

# TPU VM software versions for JAX (Cloud TPU documentation, "TPU software versions"); TPU7x runs on GKE.
RUNTIMES = {"v5e": "v2-alpha-tpuv5-lite", "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e"}
REMOTE_DIR = "~/qwen3jax"
LOG = "~/qwen3jax-run.log"
PID = "~/qwen3jax-run.pid"
GCSFUSE_APT = "https://packages.cloud.google.com/apt"
JOBSET_TEMPLATE = pathlib.Path(__file__).resolve().parent / "jobset.yaml"


class Runner:
    """Prints every command; runs it unless this is a dry run."""

    def __init__(self, dry_run: bool):
        self.dry_run = dry_run

    def __call__(self, command: list[str], *, check: bool = True, capture: bool = False) -> str:
        print(shlex.join(command), flush=True)
        if self.dry_run:
            return ""
        done = subprocess.run(command, check=check, text=True, capture_output=capture)
        return done.stdout if capture else ""


def gcloud_tpu(args, *words: str) -> list[str]:
    command = ["gcloud", "compute", "tpus", *words, f"--zone={args.zone}"]
    return command + ([f"--project={args.project}"] if args.project else [])


def ssh(args, remote: str, worker: str = "all") -> list[str]:
    return gcloud_tpu(args, "tpu-vm", "ssh", args.name) + [f"--worker={worker}", f"--command={remote}"]


# ---- subcommands ------------------------------------------------------------------------------------------------


def create(args, run: Runner) -> None:
    tpu_slice = parse_slice(args.accelerator)
    runtime = args.runtime or RUNTIMES.get(tpu_slice.chip.name)
    if not runtime:
        raise SystemExit(f"error: no TPU VM software version known for {tpu_slice.chip.name} (TPU7x runs on GKE: "
                         "`pod.py gke`/`pod.py xpk`); pass --runtime")  # fmt: skip
    capacity = ["--spot"] if args.spot else ["--reserved"] if args.reserved else []
    print(f"# {tpu_slice}: {tpu_slice.hosts} worker VM(s)", flush=True)
    if not args.queued:
        run(gcloud_tpu(args, "tpu-vm", "create", args.name)
            + [f"--accelerator-type={tpu_slice.accelerator_type}", f"--version={runtime}", *capacity])  # fmt: skip
        return
    run(gcloud_tpu(args, "queued-resources", "create", args.name)
        + [f"--node-id={args.name}", f"--accelerator-type={tpu_slice.accelerator_type}", f"--runtime-version={runtime}",
           *capacity])  # fmt: skip
    describe = gcloud_tpu(args, "queued-resources", "describe", args.name) + ["--format=value(state.state)"]
    if run.dry_run:
        print(f"# then, until it prints ACTIVE (every {args.poll_seconds} s):", flush=True)
        run(describe)
        return
    while (state := run(describe, capture=True).strip()) != "ACTIVE":
        if state in ("FAILED", "SUSPENDED"):
            raise SystemExit(f"error: queued resource {args.name} is {state}")
        print(f"# {args.name}: {state or 'unknown'}; waiting", flush=True)
        time.sleep(args.poll_seconds)


def install(args, run: Runner) -> None:
    """Ship the committed tree (git archive) to every worker, install it with the TPU extra, mount the bucket."""
    archive = f"/tmp/qwen3jax-{args.name}.tar.gz"
    if not run.dry_run and subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD"]).returncode:
        print("# warning: uncommitted changes are not shipped (git archive HEAD)", flush=True)
    run(["git", "-C", str(ROOT), "archive", "--format=tar.gz", f"--output={archive}", "HEAD"])
    run(gcloud_tpu(args, "tpu-vm", "scp", archive, f"{args.name}:qwen3jax.tar.gz") + ["--worker=all"])
    steps = [
        "set -e",
        f"mkdir -p {REMOTE_DIR}",
        f"tar -xzf ~/qwen3jax.tar.gz -C {REMOTE_DIR}",  # over the previous version: runs/ and .venv stay
        f"cd {REMOTE_DIR}",
        "test -x .venv/bin/python || python3 -m venv .venv",
        ".venv/bin/pip install -q --upgrade pip",
        ".venv/bin/pip install -q -e '.[tpu]'",
        "touch .venv/.installed",  # make run EXTRAS=tpu: installed already
    ]
    if args.bucket:
        mount = f"/gcs/{args.bucket}"
        steps += [
            "command -v gcsfuse >/dev/null || { echo \"deb " + GCSFUSE_APT + " gcsfuse-$(lsb_release -c -s) main\" "
            "| sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null && curl -fsSL " + GCSFUSE_APT + "/doc/apt-key.gpg "
            "| sudo apt-key add - && sudo apt-get update -q && sudo apt-get install -y -q gcsfuse; }",
            f"sudo mkdir -p {mount} && sudo chown $(id -u):$(id -g) {mount}",
            f"mountpoint -q {mount} || gcsfuse --implicit-dirs {args.bucket} {mount}",
        ]  # fmt: skip
    run(ssh(args, "; ".join(steps)))


def launch(args, run: Runner) -> None:
    """`make run` on every worker at once (each is one JAX process of the slice), detached, logging to LOG."""
    env = ["PYTHONUNBUFFERED=1", *args.env]
    for pair in env:
        if "=" not in pair:
            raise SystemExit(f"error: --env takes KEY=VALUE, got {pair!r}")
    make = ["make", "run", f"EXP={args.exp}", "EXTRAS=tpu"]
    if args.variant:
        make.append(f"VARIANT={args.variant}")
    if args.workdir:
        make.append(f"WORKDIR={args.workdir}")
    if args.args:
        make.append(f"ARGS={args.args}")
    remote = (f"cd {REMOTE_DIR}; if test -s {PID} && kill -0 $(cat {PID}) 2>/dev/null; then "
              f"echo 'a run is already going on this worker (pod.py stop first)'; exit 1; fi; "
              f"{shlex.join(['env', *env])} setsid nohup {shlex.join(make)} > {LOG} 2>&1 < /dev/null & echo $! > {PID}")  # fmt: skip
    run(ssh(args, remote))
    print(f"# logs: python tpu/pod.py logs --name {args.name} --zone {args.zone}", flush=True)


def logs(args, run: Runner) -> None:
    run(ssh(args, f"tail -n {args.lines} {'-F ' if args.follow else ''}{LOG}", worker=args.worker), check=False)


def stop(args, run: Runner) -> None:
    """SIGTERM to each worker's run: it checkpoints at the next step boundary on every process and exits 143."""
    run(ssh(args, f"test -s {PID} && kill -TERM -- -$(cat {PID}) && echo stopping || echo 'no run on this worker'"))


def delete(args, run: Runner) -> None:
    if args.queued:
        run(gcloud_tpu(args, "queued-resources", "delete", args.name) + ["--force", "--quiet"])
    else:
        run(gcloud_tpu(args, "tpu-vm", "delete", args.name) + ["--quiet"])


def run_command(args) -> str:
    """The command each GKE/xpk worker runs: the image holds the project installed with the TPU extra."""
    make = ["make", "run", f"EXP={args.exp}", "EXTRAS=tpu"]
    make += [f"VARIANT={args.variant}"] * bool(args.variant) + [f"WORKDIR={args.workdir}"] * bool(args.workdir)
    make += [f"ARGS={args.args}"] * bool(args.args)
    return shlex.join(make)


def gke(args, run: Runner) -> None:
    """Write the JobSet (one pod per TPU VM of the slice, all running `make run`) and apply it."""
    tpu_slice = parse_slice(args.accelerator)
    name = args.name or f"qwen3jax-{args.exp.replace('_', '-')}"
    text = jobset_yaml(tpu_slice, name=name, image=args.image, command=run_command(args))
    output = args.output or f"jobset-{name}.yaml"
    if run.dry_run:
        print(f"# {output}:\n{text}", flush=True)
    else:
        pathlib.Path(output).write_text(text)
    run(["kubectl", "apply", "-f", output])


def jobset_yaml(tpu_slice: Slice, *, name: str, image: str, command: str) -> str:
    hosts = tpu_slice.hosts
    return string.Template(JOBSET_TEMPLATE.read_text()).substitute(
        NAME=name, IMAGE=image, COMMAND=command, HOSTS=hosts, TOPOLOGY=tpu_slice.topology,
        ACCELERATOR=tpu_slice.chip.gke_accelerator, CHIPS_PER_HOST=min(tpu_slice.chips, tpu_slice.chip.chips_per_host),
    )  # fmt: skip


def xpk(args, run: Runner) -> None:
    tpu_slice = parse_slice(args.accelerator)
    command = ["xpk", "workload", "create", f"--cluster={args.cluster}",
               f"--workload={args.name or 'qwen3jax-' + args.exp.replace('_', '-')}",
               f"--tpu-type={tpu_slice.accelerator_type}", "--num-slices=1", f"--docker-image={args.image}",
               f"--command={run_command(args)}"]  # fmt: skip
    if args.project:
        command.append(f"--project={args.project}")
    if args.zone:
        command.append(f"--zone={args.zone}")
    run(command)


# ---- arguments --------------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    # Also accepted after the subcommand; SUPPRESS keeps the subcommand from resetting one given before it.
    dry = argparse.ArgumentParser(add_help=False)
    dry.add_argument("--dry-run", action="store_true", default=argparse.SUPPRESS, help="print the commands, run nothing")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, fn, *, vm=True, help):
        s = sub.add_parser(name, parents=[dry], help=help)
        s.set_defaults(fn=fn)
        if vm:
            s.add_argument("--name", default=os.environ.get("TPU_NAME"), required=not os.environ.get("TPU_NAME"),
                           help="TPU VM / queued resource name (default $TPU_NAME)")  # fmt: skip
            s.add_argument("--zone", default=os.environ.get("ZONE"), required=not os.environ.get("ZONE"),
                           help="zone (default $ZONE)")  # fmt: skip
        s.add_argument("--project", default=os.environ.get("PROJECT"), help="GCP project (default $PROJECT or gcloud's)")
        return s

    def experiment(s):
        s.add_argument("--exp", required=True, help="experiment in experiments/, e.g. pretrain_s1")
        s.add_argument("--variant", default="", help="model preset (default: the experiment's full-size default)")
        s.add_argument("--workdir", default="", help="run directory on every worker, e.g. /gcs/BUCKET/runs/NAME")
        s.add_argument("--args", default="", help="more flags for qwen3jax.run, e.g. '--config.steps=1000'")

    s = add("create", create, help="create a TPU VM slice or a queued resource")
    s.add_argument("--accelerator", required=True, help="gcloud accelerator type, e.g. v5p-128 (64 chips)")
    s.add_argument("--runtime", default="", help="TPU software version (default per generation)")
    s.add_argument("--queued", action="store_true", help="a queued resource: waits until the slice is ACTIVE")
    s.add_argument("--spot", action="store_true", help="spot capacity (preemptible: runs resume from checkpoints)")
    s.add_argument("--reserved", action="store_true", help="use the project's reservation")
    s.add_argument("--poll-seconds", type=int, default=60)
    s = add("install", install, help="ship the committed tree to every worker and install it (TPU extra)")
    s.add_argument("--bucket", default="", help="GCS bucket to mount at /gcs/BUCKET on every worker (gcsfuse)")
    s = add("launch", launch, help="start `make run` on every worker, detached")
    experiment(s)
    s.add_argument("--env", action="append", default=[], help="KEY=VALUE for the run (repeat), e.g. LIBTPU_INIT_ARGS=...")
    s = add("logs", logs, help="stream a worker's run log")
    s.add_argument("--worker", default="0", help="worker index, or all")
    s.add_argument("--lines", type=int, default=200)
    s.add_argument("--no-follow", dest="follow", action="store_false")
    add("stop", stop, help="SIGTERM the run on every worker: checkpoint, then exit")
    s = add("delete", delete, help="delete the TPU VM slice or queued resource")
    s.add_argument("--queued", action="store_true")
    s = add("gke", gke, vm=False, help="render a GKE JobSet for the slice and kubectl apply it")
    s.add_argument("--accelerator", required=True)
    s.add_argument("--image", required=True, help="container image with the project installed ('.[tpu]')")
    s.add_argument("--name", default="")
    s.add_argument("--output", default="", help="the JobSet file to write (default jobset-NAME.yaml)")
    experiment(s)
    s = add("xpk", xpk, vm=False, help="the xpk command that runs the experiment on a GKE TPU cluster")
    s.add_argument("--cluster", required=True)
    s.add_argument("--accelerator", required=True)
    s.add_argument("--image", required=True)
    s.add_argument("--name", default="")
    s.add_argument("--zone", default=os.environ.get("ZONE"))
    experiment(s)
    return p


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    try:
        args.fn(args, Runner(args.dry_run))
    except ValueError as e:  # a bad slice name
        raise SystemExit(f"error: {e}") from None
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"error: {shlex.join(e.cmd)} failed with status {e.returncode}") from None
    except FileNotFoundError as e:  # gcloud, kubectl or xpk not installed
        raise SystemExit(f"error: {e.filename} is not installed or not on PATH") from None


if __name__ == "__main__":
    main()
