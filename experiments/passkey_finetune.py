"""Passkey fine-tune: a short run of the pretraining loss on synthetic passkey documents (needle in a haystack) at
stage 3's length, initialised from stage 3, so that the tiny model retrieves passkeys at its trained length before
its long-context inference (plain RoPE, YaRN, YaRN + Dual Chunk Attention) is measured at 2x and 4x that length:

  python -m qwen3jax.eval.passkey data --ckpt runs/pretrain_s3 --out runs/passkey_data
  make run EXP=passkey_finetune
  python -m qwen3jax.eval.passkey eval --ckpt runs/passkey_finetune

The data command's default documents are three quarters short (below a quarter of the trained length): copying the
key over short distances is learned first (with long documents only, 300 steps learned no copying at all). Retrieval
over the whole trained length then needs more long documents: the README's table continues this run on mixes with
--short-share 0.25 and 0.1 for 1,500 more steps (19/20 keys at 1x after them).
"""

import importlib.util
import pathlib

import ml_collections


def _stage3():
    spec = importlib.util.spec_from_file_location("pretrain_s3", pathlib.Path(__file__).with_name("pretrain_s3.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(arg: str = ""):
    config = _stage3().get_config(arg)
    tiny = config.variant.startswith("tiny")
    config.name = "passkey_finetune"
    config.init_from = "runs/pretrain_s3"
    data_dir = "runs/passkey_data"  # written by `python -m qwen3jax.eval.passkey data`
    config.data.length_mix = None
    config.data.packing = "first_fit"  # whole documents: a question never loses its needle to a row break
    config.data.weight_unit = "documents"
    config.data.sources = ml_collections.ConfigDict(
        {
            "passkey": {
                "kind": "jsonl", "path": f"{data_dir}/train.jsonl", "eval_path": f"{data_dir}/eval.jsonl",
                "weight": 1.0, "where": {},
            }
        }
    )
    config.steps = 500  # tiny: a key is copied perfectly at 128 tokens, in a quarter of documents at 1,024
    config.optim.warmup_steps = 5 if tiny else 50
    config.optim.peak_lr = 2e-3 if tiny else 1e-4  # a new skill (retrieval), not continued pretraining
    config.eval.every = 50 if tiny else 250
    config.checkpoint.every = config.steps
    config.samples.num = 0
    return config
