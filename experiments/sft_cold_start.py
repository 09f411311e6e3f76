"""Long-CoT cold start (TR §4.1, SPEC §4): SFT of a pretrained model on curated thinking responses to verifiable
problems, few steps on a small set, the shared masked next-token loss (`sft`).

The tiny variant trains on the embedded cold-start set (`data/corpus/cold_start.py`: the curation command's
filters over the synthetic train problems with the worked-solution teacher) from `runs/pretrain_s1`; a full-size
run points `data.sources` at the chat JSONL of `python -m qwen3jax.posttrain.curate` (`--config.data.sources.
cold_start.path=...`). Evaluation: the held-out masked loss and the exact-answer accuracy of greedy thinking-mode
replies to held-out problems (`composite` of `held_out_loss` and `held_out_reward`).
"""

from qwen3jax.data.stages import chat_sft_config
from qwen3jax.train.config import choose_variant, pretrain_config

FULL_SIZE_DEFAULT = "qwen3_0_6b"
CURATED_JSONL = "data/cold_start.jsonl"  # the curation command's output (full size)
CURATED_EVAL_JSONL = "data/cold_start_eval.jsonl"  # the same command over held-out queries (for the held-out loss)


def get_config(arg: str = ""):
    variant, reason = choose_variant(arg, FULL_SIZE_DEFAULT)
    tiny = variant.startswith("tiny")
    config = pretrain_config("sft_cold_start", variant, reason)
    config.data = chat_sft_config("cold_start")
    if not tiny:
        config.data.sources.cold_start.update(kind="jsonl", path=CURATED_JSONL, eval_path=CURATED_EVAL_JSONL)
    config.init_from = "runs/pretrain_s1"  # the default run directory of pretraining stage 1
    config.loss.name, config.loss.z_loss = "sft", 0.0
    config.seq_len = 256 if tiny else 32_768
    config.steps = 150 if tiny else 1_000
    config.global_batch = 16 if tiny else 128
    config.optim.peak_lr = 1e-3 if tiny else 1e-5
    config.optim.warmup_steps = 10 if tiny else 50
    config.optim.end_lr_ratio = 0.1
    config.eval.update(
        name="composite",
        parts=["held_out_loss", "held_out_reward"],
        every=50 if tiny else 200,
        batches=4 if tiny else 20,
        prompts="embedded:math",  # held-out problems (eval split) with gold answers; or a query–verifier JSONL
        num_prompts=64 if tiny else 500,
        thinking=True,
        max_new_tokens=160 if tiny else 16_384,
        rewards=[{"name": "exact_match"}] if tiny else [{"name": "math"}],
    )
    config.checkpoint.every = 50 if tiny else 250
    config.samples.name = "chat"
    config.samples.prompts = ["Evaluate 3 × (4 + 5) - 6.", "Find the greatest common divisor of 84 and 36."]
    config.samples.max_new_tokens = 160 if tiny else 2048
    return config
