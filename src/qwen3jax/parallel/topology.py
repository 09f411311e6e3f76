"""TPU slices by name: chip specifications, slice shapes, and the devices of a slice for ahead-of-time compilation.

A slice is named either as gcloud names accelerator types (`v5p-128`, `v5litepod-16`, `v6e-64`, `tpu7x-256`: the
number counts TensorCores on v5p and TPU7x, which have two per chip, and chips on v5e and v6e) or by its chip grid
(`v5p:4x4x8`, `v5e:4x4`). v4 is left out: its compiler topology has a device per TensorCore, where v4 VMs run one
per chip (megacore), so a program compiled for it would not be the one a run gets. `topology_devices(slice)` needs `libtpu` (pip extra `tpu`) but no TPU: the TPU
compiler then compiles for that slice on any machine (see `qwen3jax.aot`).

Standard library only at import time: `tpu/pod.py` uses it on machines without jax.
"""

from __future__ import annotations

import dataclasses
import math
import re

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU generation's per-chip figures (Cloud TPU documentation; bf16 dense peak)."""

    name: str  # the generation as the TPU compiler's topology names spell it
    gcloud_name: str  # the accelerator-type prefix gcloud uses
    hbm_bytes: int
    peak_bf16_flops: float  # FLOP/s
    hbm_bytes_per_s: float
    cores_per_chip: int  # TensorCores per chip: what the number in a gcloud accelerator type counts
    grid_dims: int  # 2: 2-D torus slices (v5e, v6e); 3: 3-D
    gke_accelerator: str  # GKE node label `cloud.google.com/gke-tpu-accelerator`
    chips_per_host: int = 4  # chips per TPU VM in multi-host slices


CHIPS: dict[str, Chip] = {
    c.name: c
    for c in (
        Chip("v5e", "v5litepod", 16 * GiB, 197e12, 819e9, 1, 2, "tpu-v5-lite-podslice"),
        Chip("v5p", "v5p", 95 * GiB, 459e12, 2765e9, 2, 3, "tpu-v5p-slice"),
        Chip("v6e", "v6e", 32 * GiB, 918e12, 1640e9, 1, 2, "tpu-v6e-slice"),
        Chip("tpu7x", "tpu7x", 192 * GiB, 2307e12, 7380e9, 2, 3, "tpu7x"),
    )
}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6": "v6e", "v7x": "tpu7x", "tpu7": "tpu7x", "ironwood": "tpu7x"}


@dataclasses.dataclass(frozen=True)
class Slice:
    """A TPU slice: its chip and chip grid."""

    chip: Chip
    grid: tuple[int, ...]

    @property
    def chips(self) -> int:
        return math.prod(self.grid)

    @property
    def hosts(self) -> int:
        return max(1, self.chips // self.chip.chips_per_host)

    @property
    def topology(self) -> str:
        """The chip grid as gcloud's `--topology` and GKE's topology label write it, e.g. `4x4x8`."""
        return "x".join(map(str, self.grid))

    @property
    def accelerator_type(self) -> str:
        """gcloud's `--accelerator-type`, e.g. `v5p-256` for 128 v5p chips."""
        return f"{self.chip.gcloud_name}-{self.chips * self.chip.cores_per_chip}"

    @property
    def compiler_name(self) -> str:
        """The name `jax.experimental.topologies.get_topology_desc` takes, e.g. `v5p:4x4x8`."""
        return f"{self.chip.name}:{self.topology}"

    def __str__(self) -> str:
        return f"{self.accelerator_type} ({self.chips} {self.chip.name} chips, {self.topology})"


def default_grid(chips: int, dims: int) -> tuple[int, ...]:
    """gcloud's default (most cube-like) grid of a slice size: from 1x1 (2-D) or 2x2x1 (3-D), double the last of
    the smallest dimensions until the size is reached (2x2x4 -> 2x4x4 -> 4x4x4 -> 4x4x8)."""
    grid = [1, 1] if dims == 2 else [2, 2, 1]
    if chips < math.prod(grid) or chips & (chips - 1):
        raise ValueError(f"{chips} chips has no standard {dims}-D slice shape; name the grid, e.g. "
                         f"{'v5e:4x4' if dims == 2 else 'v5p:4x4x8'}")  # fmt: skip
    while math.prod(grid) < chips:
        smallest = min(grid)
        grid[max(i for i, n in enumerate(grid) if n == smallest)] *= 2
    return tuple(grid)


def parse_slice(name: str) -> Slice:
    """`v5p-128` (gcloud accelerator type) or `v5p:4x4x8` (chip grid) → Slice; one clear error otherwise."""
    match = re.fullmatch(r"([a-z0-9]+?)(?:-(\d+)|:(\d+(?:x\d+)+))", name.strip().lower())
    known = ", ".join(f"{c.gcloud_name}-N / {c.name}:AxB{'xC' if c.grid_dims == 3 else ''}" for c in CHIPS.values())
    if not match:
        raise ValueError(f"TPU slice {name!r} is not of the form <chip>-<count> or <chip>:<grid>; known: {known}")
    chip_name, count, grid = match.groups()
    chip = CHIPS.get(_ALIASES.get(chip_name, chip_name))
    if chip is None:
        raise ValueError(f"unknown TPU generation {chip_name!r} in {name!r}; known: {known}")
    if grid:
        shape = tuple(int(n) for n in grid.split("x"))
        if len(shape) != chip.grid_dims or min(shape) < 1:
            raise ValueError(f"{chip.name} slices have a {chip.grid_dims}-D chip grid, got {grid!r}")
        return Slice(chip, shape)
    cores = int(count)
    if cores % chip.cores_per_chip:
        raise ValueError(f"{name}: the number counts TensorCores ({chip.cores_per_chip} per {chip.name} chip), "
                         f"so it must be a multiple of {chip.cores_per_chip}")  # fmt: skip
    return Slice(chip, default_grid(cores // chip.cores_per_chip, chip.grid_dims))


def topology_devices(tpu_slice: Slice) -> list:
    """The devices of the slice as the TPU compiler sees them (no TPU needed, only the `libtpu` package)."""
    import importlib.util
    import os

    if importlib.util.find_spec("libtpu") is None:
        raise LibTpuMissing(f"compiling for {tpu_slice.accelerator_type} needs the TPU compiler: pip install -e '.[tpu]'")
    # libtpu looks for the TPU VM it runs on (metadata server, worker list) when it loads; off a TPU VM that only
    # prints warnings, which these settings silence. A real TPU VM's own settings are kept. Compiling claims no
    # chip, so several processes may load libtpu at once (parallel tests) instead of the second one failing on
    # libtpu's lock file. The settings are taken back afterwards: left in the environment, they would make this
    # process and the ones it starts look like a TPU VM (`platform.on_tpu_vm`).
    settings = {"TPU_ACCELERATOR_TYPE": tpu_slice.accelerator_type, "TPU_SKIP_MDS_QUERY": "1",
                "TPU_WORKER_HOSTNAMES": "localhost", "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}  # fmt: skip
    added = {key: value for key, value in settings.items() if key not in os.environ}
    os.environ.update(added)
    try:
        from jax.experimental import topologies

        options = {}
        if tpu_slice.chips < tpu_slice.chip.chips_per_host:  # a slice smaller than one host: the host is the slice
            options["chips_per_host_bounds"] = [*tpu_slice.grid, 1][:3]
        description = topologies.get_topology_desc(platform="tpu", topology_name=tpu_slice.compiler_name, **options)
    finally:
        for key in added:
            del os.environ[key]
    return list(description.devices)


class LibTpuMissing(RuntimeError):
    """The TPU compiler (the `libtpu` package) is not installed."""
