from embedding_service.buckets import Buckets


def test_default_buckets_end_at_the_limits() -> None:
    buckets = Buckets.default(max_batch_size=24, max_seq_length=256)
    assert buckets.batch_sizes == (1, 2, 4, 8, 16, 24)
    assert buckets.seq_lengths == (16, 24, 32, 48, 64, 96, 128, 192, 256)
    assert Buckets.default(1, 100).seq_lengths == (16, 24, 32, 48, 64, 96, 100)


def test_sizes_round_up_to_the_next_bucket() -> None:
    buckets = Buckets.default(32, 128)
    assert [buckets.batch_size(n) for n in (1, 3, 17, 32)] == [1, 4, 32, 32]
    assert [buckets.seq_length(n) for n in (1, 16, 17, 25, 49, 128)] == [16, 16, 24, 32, 64, 128]


def test_warm_up_shapes_respect_the_token_budget_but_keep_single_long_texts() -> None:
    shapes = Buckets.default(4, 64).shapes(max_batch_tokens=64)
    assert shapes == [(1, 16), (1, 24), (1, 32), (1, 48), (1, 64), (2, 16), (2, 24), (2, 32), (4, 16)]
