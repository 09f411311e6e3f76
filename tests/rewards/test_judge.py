"""The judge reward: score parsing on many replies, the prompt and mapping with a stub judge, and the whole path
with a tiny random checkpoint (native and HF), whose replies are gibberish: masked and counted, never a 0."""

import shutil

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from qwen3jax.convert import save_hf
from qwen3jax.convert.native import save_native
from qwen3jax.data.tokenizer import SPECIAL_TOKENS
from qwen3jax.rewards import REWARDS, build_rewards
from qwen3jax.rewards.judge import parse_score

from ..model.helpers import DENSE, build


@pytest.mark.parametrize(
    "reply, score",
    [
        ("The response matches.\nScore: 9", 9),
        ("Score: 10", 10),
        ("score = 3", 3),
        ("**Score:** 7", 7),
        ("I would give it a score of 6/10.", 6),
        ("Rating: 7.5", 7.5),
        ("Grade: 4 out of 10", 4),
        ("Verdict: [[8]]", 8),
        ("8/10", 8),
        ("  5  ", 5),
        ("5.", 5),
        ("First I thought Score: 2, but on reflection Score: 8", 8),  # the last labelled score wins
        ("<think>\nScore: 1 maybe\n</think>\n\nScore: 9", 9),  # the judge's own thinking is skipped
        ("Step 1 looks right. Step 2 too. Score: 10", 10),
        ("SCORE:0", 0),
    ],
)
def test_parse_score_reads(reply, score):
    assert parse_score(reply) == score


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "The answer looks right to me.",
        "Score: 11",  # out of range
        "Score: -1",
        "Score: 3/5",  # another scale
        "There are 3 steps and 2 errors.",  # numbers, but no score
        "<think>\nScore: 9\n",  # only inside an unfinished think block
        "Score: high",
    ],
)
def test_parse_score_rejects(reply):
    assert parse_score(reply) is None


def test_stub_judge_scores_maps_and_masks():
    seen = []

    def judge(texts):
        seen.extend(texts)
        return ["Looks equivalent.\nScore: 10", "Wrong value. Score: 2", "I cannot tell."][: len(texts)]

    reward = REWARDS.get("judge")(generate=judge, template="Q={question} R={reference} A={response} [{low}-{high}]")
    prompts = [[{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}], "3+3?", "4+4?", "x"]
    completions = ["<think>\nhmm\n</think>\n\n4", "</think>5", "</think>8", "<think>\nnever finished"]
    result = reward(prompts, completions, reference=["4", "6", "8", "1"])
    assert seen == ["Q=2+2? R=4 A=4 [0-10]", "Q=3+3? R=6 A=5 [0-10]", "Q=4+4? R=8 A=8 [0-10]"]
    assert result.scores.tolist() == pytest.approx([1.0, 0.2, 0.0, 0.0])
    assert result.mask.tolist() == [True, True, False, True]  # no final answer: judged 0 without asking
    assert result.masked_counts() == {"unparsable_judge": 1}


def test_judge_options_fail_loudly():
    with pytest.raises(ValueError, match="template fields"):
        REWARDS.get("judge")(generate=lambda t: t, template="{question} {answer}")
    with pytest.raises(ValueError, match="exactly one of"):
        REWARDS.get("judge")()


@pytest.fixture(scope="module")
def tiny_judge(tmp_path_factory):
    root = tmp_path_factory.mktemp("judge")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(["Grade the response to the question. Score: 7 out of 10."] * 4, trainer)
    bpe.save(str(root / "tokenizer.json"))
    cfg = DENSE.replace(vocab_size=512)
    model = build(cfg, seed=3)
    save_native(model, root / "native")
    save_hf(model, cfg, root / "hf")
    shutil.copy(root / "tokenizer.json", root / "hf" / "tokenizer.json")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["native", "hf"])
def test_tiny_random_judge_end_to_end(tiny_judge, kind):
    """A random model's replies hold no score: every completion is masked and counted, none scored 0."""
    location = {"checkpoint": str(tiny_judge / "native"), "tokenizer": str(tiny_judge / "tokenizer.json")}
    if kind == "hf":
        location = {"hf": str(tiny_judge / "hf")}
    rewards = build_rewards([{"name": "judge", "max_new_tokens": 8, **location}])
    result, metrics = rewards.score(["What is 2+2?"] * 3, ["</think>4", "</think>5", "</think>four"],
                                    reference=["4"] * 3)  # fmt: skip
    replies = rewards.rewards[0].replies
    assert len(replies) == 3 and all(parse_score(r) is None for r in replies), replies
    assert not result.mask.any()
    assert metrics["reward/judge/masked/unparsable_judge"] == 3


@pytest.mark.slow
def test_a_run_lends_its_frozen_judge(tiny_judge):
    """In a run the judge is the run's frozen model: its very weights, sharded on the run's mesh (no copy of its
    own)."""
    import jax
    from flax import nnx

    from qwen3jax.data.tokenizer import load_tokenizer
    from qwen3jax.parallel import make_mesh
    from qwen3jax.rewards.base import LentModel
    from qwen3jax.train.frozen import load_frozen_models

    mesh = make_mesh({"fsdp": -1})  # the weights sharded, as a run lays them out
    frozen = load_frozen_models({"judge": {"path": str(tiny_judge / "native")}}, mesh=mesh,
                                student=DENSE.replace(vocab_size=512))["judge"]  # fmt: skip
    lent = LentModel(frozen, str(tiny_judge / "native"), load_tokenizer(tiny_judge / "tokenizer.json"))
    with pytest.raises(ValueError, match="there is no run here"):
        build_rewards([{"name": "judge", "frozen": "judge"}])
    in_run = build_rewards([{"name": "judge", "frozen": "judge", "max_new_tokens": 4}], lend={"judge": lent}.get)
    judge = in_run.rewards[0]
    held = jax.tree.leaves(nnx.state(judge.chat.model, nnx.Param))
    assert {id(x) for x in held} == {id(x) for x in jax.tree.leaves(frozen.params)}
    assert all(x.sharding.mesh == mesh for x in held)
    result, metrics = in_run.score(["What is 2+2?"] * 2, ["</think>4", "</think>five"], reference=["4"] * 2)
    assert len(judge.replies) == 2 and metrics["reward/judge/judged"] == result.mask.mean()
