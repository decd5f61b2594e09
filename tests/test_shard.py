import pytest

from stabilitykit.shard import parse_shard, select_shard


def test_shards_are_disjoint_and_cover_everything():
    ids = [f"benchmarks/test_x.py::test[arm{i}]" for i in range(11)]
    shards = [select_shard(ids, i, 4) for i in range(1, 5)]
    assert sorted(i for shard in shards for i in shard) == sorted(ids)
    assert all(len(s) in (2, 3) for s in shards)
    assert select_shard(list(reversed(ids)), 2, 4) == shards[1]  # order of collection is irrelevant


@pytest.mark.parametrize("text", ["0/4", "5/4", "2", "a/b", "1/0"])
def test_bad_shard(text):
    with pytest.raises(ValueError, match="--sk-shard"):
        parse_shard(text)


def test_parse():
    assert parse_shard("2/8") == (2, 8)
