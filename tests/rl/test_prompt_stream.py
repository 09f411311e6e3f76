"""The rollout prompt stream: every record once per epoch, a different order each epoch, exact resume by position."""

import pytest

from qwen3jax.rl.source import PromptStream

RECORDS = [{"id": i} for i in range(23)]


def ids(records):
    return [r["id"] for r in records]


def test_each_epoch_is_a_permutation_in_its_own_order():
    stream = PromptStream(RECORDS, seed=3)
    epochs = [ids(stream.take(len(RECORDS))) for _ in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(len(RECORDS)))
    assert len({tuple(order) for order in epochs}) == 3
    assert epochs[0] != list(range(len(RECORDS)))  # shuffled, not file order


def test_takes_across_epoch_boundaries_equal_one_long_take():
    chunks = PromptStream(RECORDS, seed=5)
    pieces = [r for n in (4, 19, 11, 30) for r in chunks.take(n)]
    assert ids(pieces) == ids(PromptStream(RECORDS, seed=5).take(64))


def test_seeds_decide_the_order():
    assert ids(PromptStream(RECORDS, seed=1).take(23)) == ids(PromptStream(RECORDS, seed=1).take(23))
    assert ids(PromptStream(RECORDS, seed=1).take(23)) != ids(PromptStream(RECORDS, seed=2).take(23))
    # one stream per mixture task: string seeds, each its own order
    assert ids(PromptStream(RECORDS, seed="7:ifeval").take(23)) != ids(PromptStream(RECORDS, seed="7:format").take(23))


def test_restored_stream_continues_exactly():
    first = PromptStream(RECORDS, seed=9)
    first.take(30)
    state = first.get_state()
    assert state == {"epoch": 1, "index": 7}
    resumed = PromptStream(RECORDS, seed=9)
    resumed.set_state(state)
    assert ids(resumed.take(40)) == ids(first.take(40))


def test_empty_prompt_set_is_refused():
    with pytest.raises(ValueError, match="empty"):
        PromptStream([], seed=0)
