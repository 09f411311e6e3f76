"""On-policy distillation end to end through the shared run loop: the student samples its own completions, the
frozen teacher (the student's initial weights perturbed: a teacher the student can reach) scores them, and a few
dozen steps of the `distill` loss bring the student clearly closer to the teacher on held-out prompts
(`kl_heldout`); the `lmbda` mix draws on-policy and fixed-data batches in its proportion; bad settings are named."""

import json
import random

import jax
import ml_collections
import pytest
from flax import nnx

from experiments import distill_on_policy
from qwen3jax.convert.native import save_native
from qwen3jax.model import ModelConfig
from qwen3jax.model.factory import create_model
from qwen3jax.train.evals import EvalError
from qwen3jax.train.loop import Trainer
from tests.train.helpers import TINY_MODEL, override
from tests.zero_products import VOCAB, grpo_config, sft_run

STUDENT = dict(vocab_size=8192, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
               head_dim=16)  # fmt: skip
NOISE = 0.05  # per weight; a student step moves a weight by about the learning rate


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    cfg = ModelConfig.from_dict(dict(ModelConfig.from_preset("tiny").to_dict(), **STUDENT))
    model = create_model(cfg, seed=0)  # the student's initial weights (seed 0)
    params = nnx.state(model, nnx.Param)
    keys = iter(jax.random.split(jax.random.key(1), len(jax.tree.leaves(params))))
    nnx.update(model, jax.tree.map(lambda x: x + NOISE * jax.random.normal(next(keys), x.shape, x.dtype), params))
    return str(save_native(model, tmp_path_factory.mktemp("teacher") / "native"))


def _config(teacher, **overrides):
    c = distill_on_policy.get_config("tiny")
    c.model.update(STUDENT)
    c.init_from, c.frozen.teacher.path = "", teacher
    c.seq_len, c.batch_source.max_new_tokens, c.eval.max_new_tokens = 96, 24, 24
    c.eval.parts, c.eval.every, c.eval.num_prompts = ["kl_heldout", "teacher_reward"], 30, 8
    c.steps, c.optim.peak_lr = 30, 1e-2
    c.samples.num, c.checkpoint.async_save, c.checkpoint.every = 0, False, 30
    return override(c, **overrides)


def _rows(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _kl(workdir):
    rows = _rows(workdir)
    return {r["step"]: r["eval/kl_heldout"] for r in rows if "eval/kl_heldout" in r}, rows


@pytest.mark.slow
def test_on_policy_distillation_lowers_the_held_out_kl(teacher, tmp_path):
    Trainer(_config(teacher), tmp_path).run()
    kl, rows = _kl(tmp_path)
    print("kl_heldout by step:", kl)
    assert kl[30] < 0.6 * kl[0]  # measured: 0.051 -> 0.023 (lr 1e-2 and 2e-2 alike)
    assert all(r["train/on_policy"] == 1.0 for r in rows if "train/on_policy" in r)
    teacher_accuracy = [r["eval/teacher_accuracy"] for r in rows if "eval/teacher_accuracy" in r]
    assert len(teacher_accuracy) == 2 and teacher_accuracy[0] == teacher_accuracy[1]  # scored once, reported each eval


def test_kl_heldout_needs_the_distill_loss(teacher, tmp_path):
    config = _config(teacher, **{"loss": ml_collections.ConfigDict({"name": "sft", "z_loss": 0.0})})
    with pytest.raises(EvalError, match="distill loss"):
        Trainer(config, tmp_path).run()


TEACHER = dict(TINY_MODEL, hidden_size=64, intermediate_size=128)  # twice the student's width (4x its FFN weights)


def zero(rng: random.Random) -> str:
    del rng
    return "0"


@pytest.fixture(scope="module")
def zero_products_teacher(zero_products):
    """A bigger model SFT'd on the right answers of the zero-products training problems: it answers held-out ones
    right, which the random-digit student (`zero_products/sft`) does not."""
    return sft_run(zero_products, "teacher", zero, model=TEACHER, steps=30)


STEPS, EVERY = 20, 1  # the trained-teacher runs: steps of 16 sequences, evaluated every EVERY steps


@pytest.fixture(scope="module")
def distilled(zero_products, zero_products_teacher, tmp_path_factory):
    """The student (`zero_products/sft`, random-digit answers) distilled from the trained teacher on its own
    non-thinking samples of the training problems: eval rows by step."""
    c = distill_on_policy.get_config("tiny")
    c.model.update(TINY_MODEL)
    c.data.vocab_size = VOCAB
    c.init_from, c.frozen.teacher.path = str(zero_products / "sft"), str(zero_products_teacher)
    c.seq_len, c.global_batch, c.steps = 48, 16, STEPS
    c.batch_source.update(prompts=str(zero_products / "train.jsonl"), modes=["no_think"], max_new_tokens=4)
    c.eval.update(parts=["kl_heldout", "held_out_reward", "teacher_reward"], every=EVERY,
                  prompts=str(zero_products / "eval.jsonl"), num_prompts=32, max_new_tokens=4,
                  rewards=[{"name": "math"}])  # fmt: skip
    # Forward KL(teacher || student) on the student's samples. Reverse KL (the experiment's default) drifts here:
    # measured at lr 1e-3, kl_heldout 2.74 -> 0.58 in 30 steps but accuracy stays 0, the student's first token
    # moving to `<think>` (0.69), which the teacher gives 0.09 after its 0.86 on "0".
    c.loss.beta = 0.0
    c.optim.peak_lr = 1e-3
    c.samples.num, c.checkpoint.async_save, c.checkpoint.every = 0, False, STEPS
    workdir = tmp_path_factory.mktemp("distilled")
    Trainer(c, workdir, jax.devices()[:1]).run()
    return {r["step"]: r for r in _rows(workdir) if "eval/kl_heldout" in r}


@pytest.mark.slow
def test_a_student_distilled_from_a_trained_teacher_moves_to_its_accuracy(distilled):
    """The student samples its own answers to the training problems (non-thinking), the trained teacher scores
    them; the divergence on held-out prompts falls and the student's held-out accuracy moves to the teacher's.
    The task has one answer for every prompt (what a model this size learns in CI's budget, tests/zero_products.py),
    so what is shown is the teacher's signal reaching the student, not a prompt-dependent skill."""
    first, last = distilled[0], distilled[STEPS]
    print({step: {k: r[k] for k in ("eval/kl_heldout", "eval/accuracy", "eval/teacher_accuracy")} for step, r in
           distilled.items()})  # fmt: skip
    teacher = first["eval/teacher_accuracy"]
    assert teacher >= 0.9 and first["eval/accuracy"] <= 0.3  # a gap to close (measured: 1.0 and 0.0)
    assert last["eval/kl_heldout"] < 0.6 * first["eval/kl_heldout"]  # measured: 0.95 -> 0.35; accuracy 0 -> 1
    assert abs(teacher - last["eval/accuracy"]) < 0.5 * abs(teacher - first["eval/accuracy"])


@pytest.mark.slow
def test_distillation_and_reasoning_rl_at_equal_steps_from_the_same_start(zero_products, distilled, tmp_path):
    """SPEC §4's claim in miniature (on-policy distillation beat RL at a tenth of the cost): from the same start, on
    the same training problems, at equal steps of 16 sampled sequences, GRPO with the verifier's reward (2 prompts x
    8 samples, its tested rate) against distillation from the trained teacher (16 prompts x 1 sample). Both held-out
    accuracy curves are recorded (printed; the README's table); which wins is not asserted."""
    config = grpo_config(zero_products, seed=0, steps=STEPS)
    config.global_batch = 16
    config.eval.every = EVERY
    Trainer(config, tmp_path, jax.devices()[:1]).run()
    rows = _rows(tmp_path)
    rl = {r["step"]: r["eval/accuracy"] for r in rows if "eval/accuracy" in r}
    distillation = {step: r["eval/accuracy"] for step, r in distilled.items()}
    print("held-out accuracy by step: distillation", distillation, "GRPO", rl)
    assert rl.keys() == distillation.keys() == set(range(0, STEPS + 1, EVERY))
    assert rl[0] == distillation[0]  # one start, one held-out set, greedy decoding: one accuracy
    assert sum("train/reward_mean" in r for r in rows) == STEPS
