"""The embedded off-policy distillation set: the cold-start curation (`corpus/cold_start.py`) with the teacher
sampled in both modes, as `python -m qwen3jax.posttrain.curate --modes think,no_think` writes it: thinking
responses with their worked solutions and non-thinking ones after the empty think block, each filtered and kept
per mode. The teacher is the worked-solution response source (a tiny model is no teacher worth distilling); a
full-size run curates a checkpoint's or HF folder's samples instead."""

from __future__ import annotations

import functools

from qwen3jax.data.corpus import cold_start

source_path = functools.partial(cold_start.source_path, source=cold_start.DISTILL_SOURCE)
curation_report = functools.partial(cold_start.curation_report, source=cold_start.DISTILL_SOURCE)
