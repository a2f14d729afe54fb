from embedding_service.buckets import Buckets


def test_powers_of_two_end_at_the_limits() -> None:
    buckets = Buckets.powers_of_two(max_batch_size=24, max_seq_length=256)
    assert buckets.batch_sizes == (1, 2, 4, 8, 16, 24)
    assert buckets.seq_lengths == (16, 32, 64, 128, 256)


def test_sizes_round_up_to_the_next_bucket() -> None:
    buckets = Buckets.powers_of_two(32, 128)
    assert [buckets.batch_size(n) for n in (1, 3, 17, 32)] == [1, 4, 32, 32]
    assert [buckets.seq_length(n) for n in (1, 16, 17, 128)] == [16, 16, 32, 128]


def test_warm_up_shapes_respect_the_token_budget_but_keep_single_long_texts() -> None:
    shapes = Buckets.powers_of_two(4, 64).shapes(max_batch_tokens=64)
    assert shapes == [(1, 16), (1, 32), (1, 64), (2, 16), (2, 32), (4, 16)]
