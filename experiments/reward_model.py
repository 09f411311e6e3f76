"""Reward model (SPEC §4, general RL): a Qwen3 backbone with a scalar head trained on preference pairs with the
Bradley–Terry loss −log σ(r_chosen − r_rejected) (`pairwise`), through the shared train step.

The scalar head is the LM head's output row of `loss.head_token` (default: the last vocabulary id) applied to the
final hidden state of each sequence's last token (the assistant turn's `<|im_end|>`), so the trained model is an
ordinary Qwen3 checkpoint: it loads back as a frozen model anywhere, and the `reward_model` reward
(`rewards/reward_model.py`) scores completions with it in an RL run. Starts from `init_from` (by default the chat
SFT run); the tiny variant trains on the embedded preference pairs (whole math derivations vs ones stopped early with
an intermediate value as the answer, reference vs buggy code, instructions followed vs one violated) and reports
pairwise accuracy on their held-out split. An RL run reads the trained model as a frozen model:
`frozen: {reward_model: {path: <this run>}}` and the reward `{"name": "reward_model", "frozen": "reward_model"}`.
"""

import ml_collections

from qwen3jax.data.stages import chat_sft_config
from qwen3jax.train.config import choose_variant, pretrain_config

FULL_SIZE_DEFAULT = "qwen3_0_6b"


def get_config(arg: str = ""):
    variant, reason = choose_variant(arg, FULL_SIZE_DEFAULT)
    tiny = variant.startswith("tiny")
    config = pretrain_config("reward_model", variant, reason)
    config.init_from = "runs/sft_chat"  # a model that already reads the chat format
    config.data = chat_sft_config()  # the tokenizer of the model's data (the pairs come from the batch source)
    config.seq_len = 512 if tiny else 8192  # one pair per row: each side gets seq_len // 2 tokens
    config.global_batch = 16 if tiny else 128  # pairs per step
    config.micro_batches = 1 if tiny else 0
    config.steps = 300 if tiny else 2_000
    config.batch_source = ml_collections.ConfigDict(
        {"name": "preference_pairs", "pairs": "embedded", "split": "train", "eval_pairs": "", "eval_split": "eval"}
    )
    config.loss = ml_collections.ConfigDict({"name": "pairwise", "head_token": None})
    config.optim.peak_lr = 1e-3 if tiny else 5e-6
    config.optim.warmup_steps = 10 if tiny else 50
    config.optim.end_lr_ratio = 0.1
    config.eval.name = "pairwise_accuracy"
    config.eval.every = 50 if tiny else 200
    config.eval.batches = 0  # the whole held-out set
    config.checkpoint.every = 100 if tiny else 500
    config.samples.num = 0  # a reward model does not generate
    return config
