"""Long-CoT cold start (TR §4.1, SPEC §4): SFT of a pretrained model on curated thinking responses to verifiable
problems, few steps on a small set, the shared masked next-token loss (`sft`).

The tiny variant trains on the embedded cold-start set (`data/corpus/cold_start.py`: the curation command's
filters over the synthetic train problems with the worked-solution teacher) from `runs/pretrain_s1`; a full-size
run points `data.sources` at the chat JSONL of `python -m qwen3jax.posttrain.curate` (`--config.data.sources.
cold_start.path=...`). Evaluation: the held-out masked loss and the exact-answer accuracy of greedy thinking-mode
replies to held-out problems (`composite` of `held_out_loss` and `held_out_reward`).
"""

from qwen3jax.train.config import sft_config

FULL_SIZE_DEFAULT = "qwen3_0_6b"
CURATED_JSONL = "data/cold_start.jsonl"  # the curation command's output (full size)
CURATED_EVAL_JSONL = "data/cold_start_eval.jsonl"  # the same command over held-out queries (for the held-out loss)


def get_config(arg: str = ""):
    config = sft_config("sft_cold_start", arg, "cold_start", FULL_SIZE_DEFAULT, (CURATED_JSONL, CURATED_EVAL_JSONL))
    tiny = config.variant.startswith("tiny")
    config.seq_len = 256 if tiny else 32_768
    config.eval.update(parts=["held_out_loss", "held_out_reward"], num_prompts=64 if tiny else 500)
    return config
