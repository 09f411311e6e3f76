"""The end-of-run summary: first and last values of the logged curves, and the eval loss ratio."""

from qwen3jax.train.metrics import summary_table


def test_summary_table_reports_first_and_last_values_and_the_eval_ratio():
    rows = [
        {"step": 0, "eval/loss": 8.0, "eval/bpb": 4.0},
        {"step": 1, "train/loss": 7.5},
        {"step": 5, "train/loss": 6.0},
        {"step": 5, "eval/loss": 6.0, "eval/bpb": 3.0},
        {"step": 10, "train/loss": 5.0},
        {"step": 10, "eval/loss": 4.0, "eval/bpb": 2.5},
    ]
    eval_loss, eval_bpb, train_loss = summary_table(list(reversed(rows)))  # order of rows does not matter
    assert "8.0000 (step 0) ->  4.0000 (step 10)   0.50x" in eval_loss
    assert "4.0000 (step 0) ->  2.5000 (step 10)   0.62x" in eval_bpb
    assert "7.5000 (step 1) ->  5.0000 (step 10)" in train_loss
    assert summary_table([]) == []
