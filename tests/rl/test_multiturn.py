"""Multi-turn tool rollouts (`rl/multiturn.py`).

Structure, with a scripted policy and the real Qwen3 tokenizer: each row's token sequence is the official jinja chat
template's rendering of its conversation (tools listed in the system block, tool responses as the template wraps
them), the prompt of every turn is the template's generation prompt of the conversation so far, the loss mask is
exactly the policy's tokens (placed by those renderings, budget-forced tokens excluded) with their log-probs, and
the tool calls, errors, turn limit and truncation are counted per row.

Log-probs, with a real tiny model and the generation engine: every trained token's stored log-prob equals a full
forward pass of the model over the assembled multi-turn sequence at the sampling temperature.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from qwen3jax.chat import EMPTY_THINK, encode_prompt, render_with_jinja
from qwen3jax.data.tokenizer import default_tokenizer
from qwen3jax.rl.multiturn import multiturn_rollout
from qwen3jax.rl.tools import ToolEnvironment
from qwen3jax.sample import generate
from qwen3jax.sample.result import GenerationResult
from qwen3jax.train.evals import reply_text
from tests import qwen3_assets
from tests.chat.conftest import HFTokenizer
from tests.model.helpers import DENSE, build
from tests.sample.helpers import full_forward_logits, log_softmax


def _call(name, **arguments):
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


# Per row (2 prompts x 2 samples), the text of each turn the scripted policy writes, and how the turn ends.
THINK = "<think>\nrow {row}, turn {turn}\n</think>\n\n"
SCRIPT = {
    0: [_call("calculator", expression="12 * 7"), "It is 84."],
    1: ["Seven."],  # answers at once
    2: [_call("calculator", expression="2 ** 10") + "\n" + _call("python", code="print(sum(range(5)))"),
        "<tool_call>\nnot json\n</tool_call>\n" + _call("search", query="x"),
        _call("calculator", expression="1 + 1")],  # the turn limit (3) leaves this call unmade
    3: ["I will keep talking and"],  # cut by the length limit: no <|im_end|>
}  # fmt: skip
FORCED = {(1, 0): 2}  # (row, turn) -> a token the thinking budget forced (not trained)
QUESTIONS = ["What is 12 times 7?", "What is 2 to the 10th?"]


def _logprob(row, turn, t):
    return -(1 + row + 0.1 * turn + 0.001 * t)  # distinct per token: a misplaced log-prob shows


class ScriptedPolicy:
    """Writes SCRIPT's turns; identifies a row by the `row k` of its first think block, records every prompt."""

    def __init__(self, tok):
        self.tok, self.prompts = tok, {}
        self.im_end = tok.token_to_id("<|im_end|>")

    def tokens_of(self, row, turn):
        text = self.tok.encode(THINK.format(row=row, turn=turn) + SCRIPT[row][turn])
        return text if row == 3 else text + [self.im_end]

    def __call__(self, prompts, n, turn):
        first = [int(re.search(r"row (\d)", self.tok.decode(p)).group(1)) for p in prompts] if turn else None
        rows = first or range(len(prompts) * n)
        out = GenerationResult([], [], [], [], [], [])
        for k, row in enumerate(rows):
            self.prompts.setdefault((row, turn), prompts[k // n])
            cut = row == 3
            tokens = self.tokens_of(row, turn)
            forced = np.zeros(len(tokens), bool)
            if (row, turn) in FORCED:
                forced[FORCED[row, turn]] = True
            out.tokens.append(tokens)
            out.logprobs.append(np.array([_logprob(row, turn, t) for t in range(len(tokens))], np.float32))
            out.raw_logprobs.append(out.logprobs[-1])
            out.forced.append(forced)
            out.finish_reason.append("length" if cut else "stop")
            out.lengths.append(len(tokens))
        return out


@pytest.fixture(scope="module")
def qwen3():
    directory = qwen3_assets.qwen3_tokenizer_dir()
    template = json.loads((directory / "tokenizer_config.json").read_text())["chat_template"]
    return HFTokenizer(directory / "tokenizer.json"), template


def test_a_scripted_multiturn_rollout_is_the_official_templates_rendering(qwen3):
    tok, template = qwen3
    tools = ToolEnvironment(["calculator", "python"])
    questions = [[{"role": "user", "content": q}] for q in QUESTIONS]
    prompts = [encode_prompt(tok, m, tools=tools.schemas) for m in questions]
    policy = ScriptedPolicy(tok)
    stop_ids = (policy.im_end, tok.token_to_id("<|endoftext|>"))
    episodes = multiturn_rollout(policy, prompts, n=2, tools=tools, tokenizer=tok,
                                 reply_text=lambda ids: reply_text(tok, ids, stop_ids, True), max_turns=3,
                                 max_new_tokens=64, max_len=4096, enable_thinking=True)  # fmt: skip

    def official(messages, **kwargs):
        return tok.encode(render_with_jinja(template, messages, tools=tools.schemas, **kwargs))

    for row, episode in enumerate(episodes):
        question = questions[row // 2]
        conversation = question + episode.messages
        if row == 3:  # cut mid-turn: the generation prompt and the partial turn
            assert episode.tokens == official(question, add_generation_prompt=True) + policy.tokens_of(3, 0)
        else:  # the template closes the last turn with `<|im_end|>\n`; the rollout stops at `<|im_end|>`
            assert episode.tokens + tok.encode("\n") == official(conversation)
        # Each turn was sampled from the template's generation prompt of the conversation before it; the mask is
        # exactly that turn's tokens after it, less the forced one.
        expected_mask = np.zeros(len(episode.tokens), bool)
        expected_logprobs = np.zeros(len(episode.tokens))
        assistant_at = [i for i, m in enumerate(conversation) if m["role"] == "assistant"]
        for turn, index in enumerate(assistant_at):
            prefix = official(conversation[:index], add_generation_prompt=True)
            assert policy.prompts[row, turn] == prefix
            length = len(policy.tokens_of(row, turn))
            expected_mask[len(prefix) : len(prefix) + length] = True
            expected_logprobs[len(prefix) : len(prefix) + length] = [_logprob(row, turn, t) for t in range(length)]
            if (row, turn) in FORCED:
                expected_mask[len(prefix) + FORCED[row, turn]] = False
                expected_logprobs[len(prefix) + FORCED[row, turn]] = 0
        np.testing.assert_array_equal(episode.sampled, expected_mask)
        np.testing.assert_allclose(episode.logprobs, expected_logprobs, rtol=1e-6)
        assert episode.turns == len(SCRIPT[row])

    assert [m["content"] for m in episodes[0].messages if m["role"] == "tool"] == ["84"]
    assert [m["content"] for m in episodes[2].messages if m["role"] == "tool"][:2] == ["1024", "10\n"]
    assert episodes[2].messages[-1]["content"].endswith(_call("calculator", expression="1 + 1"))
    assert [(e.tool_calls, dict(e.tool_errors), e.turn_limit, e.truncated) for e in episodes] == [
        (1, {}, False, False), (0, {}, False, False), (4, {"not_json": 1, "unknown_tool": 1}, True, False),
        (0, {}, False, True)]  # fmt: skip
    assert episodes[0].final_answer == THINK.format(row=0, turn=1) + "It is 84."


def test_a_row_whose_next_turn_would_not_fit_ends_truncated(qwen3):
    tok, _ = qwen3
    tools = ToolEnvironment(["calculator", "python"])
    prompts = [encode_prompt(tok, [{"role": "user", "content": q}], tools=tools.schemas) for q in QUESTIONS]
    policy = ScriptedPolicy(tok)
    max_len = 2048
    episodes = multiturn_rollout(policy, prompts, n=2, tools=tools, tokenizer=tok, reply_text=tok.decode,
                                 max_turns=3, max_new_tokens=max_len - max(map(len, prompts)) - 40, max_len=max_len,
                                 enable_thinking=True)  # fmt: skip
    # Rows 0 and 2 called tools: their responses and a next turn of max_new_tokens do not fit in max_len.
    for row in (0, 2):
        assert episodes[row].truncated and episodes[row].turns == 1
        assert episodes[row].tokens == prompts[row // 2] + policy.tokens_of(row, 0)
    assert not episodes[1].truncated and episodes[3].truncated  # answered; cut by the turn's length limit


def test_in_non_thinking_mode_each_turn_keeps_the_empty_think_block_it_was_sampled_after(qwen3):
    """The template's non-thinking generation prompt ends with an empty think block; rendering a finished
    conversation drops it from earlier turns. The rollout keeps it: it is what the policy saw when it sampled."""
    tok, template = qwen3
    tools = ToolEnvironment(["calculator"])
    question = [{"role": "user", "content": QUESTIONS[0]}]
    im_end = tok.token_to_id("<|im_end|>")
    turns = [_call("calculator", expression="12 * 7"), "84"]
    seen = []

    def policy(prompts, n, turn):
        seen.append(prompts[0])
        tokens = tok.encode(turns[turn]) + [im_end]
        return GenerationResult([tokens], [np.full(len(tokens), -0.5)], [None], [np.zeros(len(tokens), bool)],
                                ["stop"], [len(tokens)])  # fmt: skip

    prompt = encode_prompt(tok, question, tools=tools.schemas, enable_thinking=False)
    (episode,) = multiturn_rollout(policy, [prompt], n=1, tools=tools, tokenizer=tok,
                                   reply_text=lambda ids: reply_text(tok, ids, (im_end,), False), max_turns=2,
                                   max_new_tokens=64, max_len=4096, enable_thinking=False)  # fmt: skip
    assert [m["content"] for m in episode.messages] == [EMPTY_THINK + turns[0], "84", EMPTY_THINK + "84"]
    official = render_with_jinja(template, question + episode.messages[:2], tools=tools.schemas,
                                 add_generation_prompt=True, enable_thinking=False)  # fmt: skip
    first = "<|im_start|>assistant\n" + turns[0]
    assert official.count(first) == 1  # the official rendering of the first turn: no think block
    assert tok.decode(seen[1]) == official.replace(first, "<|im_start|>assistant\n" + EMPTY_THINK + turns[0])
    assert official.endswith("<|im_start|>assistant\n" + EMPTY_THINK)  # the second turn's, as in the rollout
    trained = [t for t, s in zip(episode.tokens, episode.sampled) if s]
    assert trained == tok.encode(turns[0]) + [im_end] + tok.encode(turns[1]) + [im_end]


def test_trained_logprobs_equal_a_full_forward_over_the_assembled_sequence():
    """A random tiny model samples only among ids 0-9 of the tiny tokenizer (its special tokens: `vocab_limit`),
    so turns often open a `<tool_call>` and end with `<|im_end|>` (the only stop id here): malformed calls get error
    responses and the rows go on to later turns, sampled by the real engine from the assembled sequences."""
    tok = default_tokenizer(512)
    model = build(DENSE.replace(vocab_size=512, max_position_embeddings=256), seed=3)
    temperature, limit = 0.7, 10
    stop_ids = (tok.token_to_id("<|im_end|>"),)

    def sample(prompts, n, turn):
        return generate(model, prompts, n=n, max_new_tokens=24, temperature=temperature, stop_ids=stop_ids,
                        vocab_limit=limit, seed=11 + turn)  # fmt: skip

    prompts = [encode_prompt(tok, [{"role": "user", "content": q}]) for q in ("What is 2 + 2?", "Add 3 and 4.")]
    episodes = multiturn_rollout(sample, prompts, n=8, tools=ToolEnvironment(["calculator"]), tokenizer=tok,
                                 reply_text=lambda ids: reply_text(tok, ids, stop_ids, True), max_turns=3,
                                 max_new_tokens=24, max_len=256, enable_thinking=True)  # fmt: skip
    assert sum(e.turns >= 2 for e in episodes) >= 4 and max(e.turns for e in episodes) == 3  # not vacuous
    width = max(len(e.tokens) for e in episodes)
    logits = full_forward_logits(model, [e.tokens for e in episodes], width)
    for episode, row_logits in zip(episodes, logits):
        tokens, sampled = np.array(episode.tokens), np.array(episode.sampled)
        assert sampled.sum() == episode.turn_tokens and not sampled[: episode.prompt_len].any()
        logp = log_softmax(row_logits[:, :limit] / temperature)  # position t - 1 predicts token t
        at = np.flatnonzero(sampled)
        np.testing.assert_allclose(np.array(episode.logprobs)[at], logp[at - 1, tokens[at]], atol=1e-4)
        assert not np.array(episode.logprobs)[~sampled].any()
