import pytest

from pipeline.data.splits import SPLITS, assign_splits, split_counts, unit_hash

RATIOS = {"train": 0.7, "val": 0.15, "test": 0.15}


def test_the_same_ids_and_seed_give_the_same_splits_in_any_order():
    ids = [f"video{i}" for i in range(20)]
    assert assign_splits(ids, RATIOS, 0) == assign_splits(list(reversed(ids)), RATIOS, 0)


def test_another_seed_gives_another_assignment():
    ids = [f"video{i}" for i in range(20)]
    assert assign_splits(ids, RATIOS, 0) != assign_splits(ids, RATIOS, 1)


@pytest.mark.parametrize("n", [3, 4, 5, 7, 10])
@pytest.mark.parametrize("seed", range(5))
def test_every_split_is_non_empty_from_three_videos(n, seed):
    splits = assign_splits([f"v{i}" for i in range(n)], RATIOS, seed)
    assert set(splits.values()) == set(SPLITS)
    assert len(splits) == n


def test_a_split_with_ratio_zero_stays_empty():
    splits = assign_splits([f"v{i}" for i in range(10)], {"train": 0.8, "val": 0.2, "test": 0.0}, 0)
    assert "test" not in splits.values() and {"train", "val"} <= set(splits.values())


def test_adding_videos_moves_only_a_few_existing_ones():
    before = assign_splits([f"v{i}" for i in range(200)], RATIOS, 3)
    after = assign_splits([f"v{i}" for i in range(220)], RATIOS, 3)
    moved = sum(after[v] != s for v, s in before.items())
    assert moved <= 20  # only videos near the borders of the hash order move


@pytest.mark.parametrize("n, counts", [(1, (1, 0, 0)), (2, (2, 0, 0)), (3, (1, 1, 1)),
                                       (6, (4, 1, 1)), (10, (7, 2, 1)), (20, (14, 3, 3))])
def test_counts_follow_the_ratios(n, counts):
    assert tuple(split_counts(n, RATIOS)[s] for s in SPLITS) == counts
    splits = list(assign_splits([f"v{i}" for i in range(n)], RATIOS, 0).values())
    assert tuple(splits.count(s) for s in SPLITS) == counts


def test_large_collections_follow_the_ratios():
    splits = list(assign_splits([f"v{i}" for i in range(3000)], RATIOS, 0).values())
    for name, ratio in RATIOS.items():
        assert splits.count(name) / len(splits) == pytest.approx(ratio, abs=0.03)


def test_unit_hash_is_a_stable_number_in_the_unit_interval():
    u = unit_hash("abc", 0)
    assert 0 <= u < 1 and u == unit_hash("abc", 0) != unit_hash("abc", 1)
    assert u == pytest.approx(0.685840, abs=1e-6)  # sha256("0:abc"): fixed across machines and versions


def test_ratios_that_do_not_sum_to_one_are_refused():
    with pytest.raises(ValueError, match="extract.splits"):
        assign_splits(["a"], {"train": 0.5, "val": 0.2, "test": 0.2}, 0)
