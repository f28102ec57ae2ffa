import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rlan.data import INVERSE_D4, Augmentation, apply_d4, invert_d4, tta_views
from rlan.data.augment import random_augmentation, sample_rng

grids = st.tuples(st.integers(1, 30), st.integers(1, 30), st.integers(0, 2**31 - 1)).map(
    lambda t: np.random.default_rng(t[2]).integers(0, 10, size=(t[0], t[1]))
)
perms = st.permutations(list(range(1, 10))).map(lambda p: (0, *p))


@settings(max_examples=60, deadline=None)
@given(grid=grids, k=st.integers(0, 7))
def test_every_d4_transform_round_trips_exactly(grid, k):
    assert np.array_equal(invert_d4(apply_d4(grid, k), k), grid)
    assert np.array_equal(apply_d4(apply_d4(grid, k), INVERSE_D4[k]), grid)


@settings(max_examples=60, deadline=None)
@given(grid=grids, k=st.integers(0, 7), perm=perms)
def test_colour_permutation_with_d4_round_trips_and_keeps_black(grid, k, perm):
    aug = Augmentation(k, perm)
    view = aug.apply(grid)
    assert np.array_equal(aug.invert(view), grid)
    assert np.array_equal(view == 0, apply_d4(grid == 0, k))  # black stays black, wherever it moved


def test_the_eight_transforms_are_distinct_and_form_the_d4_group():
    grid = np.arange(12).reshape(3, 4)
    views = [apply_d4(grid, k) for k in range(8)]
    assert len({v.tobytes() + bytes(v.shape) for v in views}) == 8
    assert np.array_equal(apply_d4(grid, 7), np.rot90(grid, 1)[:, ::-1])


def test_augmentations_are_seeded_by_seed_epoch_and_index():
    def draw(seed, epoch, index):
        return random_augmentation(sample_rng(seed, epoch, index), 0.5, True)

    assert draw(1, 2, 3) == draw(1, 2, 3)
    assert len({draw(1, e, i) for e in range(4) for i in range(8)}) > 16
    assert draw(1, 0, 0) != draw(2, 0, 0) or draw(1, 0, 1) != draw(2, 0, 1)


def test_tta_views_are_8_d4_times_n_colours_with_identity_first():
    views = tta_views(3, seed=0)
    assert len(views) == 24 and views[0].is_identity
    assert len(set(views)) == 24
    assert views == tta_views(3, seed=0)
