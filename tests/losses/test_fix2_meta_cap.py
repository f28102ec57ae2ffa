"""Fix 2: the meta-loss cap factor, the seed's weight formula and the value-based variant."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlan.config_sections import MetaEscalationConfig
from rlan.losses import MetaCap, meta_loss_cap_factor, meta_loss_cap_factor_by_value


@pytest.mark.parametrize(
    "task_loss, weights, ratio, expected",
    [
        (1.0, [0.05, 0.01], 0.25, 1.0),  # max_meta 1/3 > W 0.06: no cap
        (0.18, [0.05, 0.01], 0.25, 1.0),  # max_meta 0.06 = W: not above, no cap
        (0.09, [0.05, 0.01], 0.25, 0.5),  # max_meta 0.03 = W / 2
        (0.06, [0.05, 0.01], 0.25, 1 / 3),
        (0.3, [0.2, 0.0, 0.1], 0.5, 1.0),  # max_meta 0.3 = W
        (0.15, [0.2, 0.1], 0.5, 0.5),
        (1e-4, [0.05, 0.01], 0.25, 0.01),  # tiny task loss: floored at 0.01
        (0.0, [0.05, 0.01], 0.25, 0.01),  # task loss 0: the floor
        (-1.0, [0.05], 0.25, 0.01),
        (float("nan"), [0.05], 0.25, 0.01),
        (float("inf"), [0.05], 0.25, 1.0),
        (0.0, [0.0, 0.0], 0.25, 1.0),  # no meta weight: nothing to cap
        (1.0, [], 0.25, 1.0),
    ],
)
def test_weights_mode_factor_table(task_loss, weights, ratio, expected):
    assert meta_loss_cap_factor(task_loss, weights, ratio) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "task_loss, weighted, ratio, expected",
    [
        (1.0, [0.1, 0.1], 0.25, 1.0),  # share 0.2/1.2 < 0.25
        (0.3, [0.2, 0.1], 0.25, 1 / 3),  # f*0.3 = 0.1 = 0.25 * (0.3 + 0.1)
        (1e-4, [1.0], 0.25, 1e-4 / 3),  # no floor
        (0.0, [1.0], 0.25, 0.0),
        (1.0, [0.0, 0.0], 0.25, 1.0),
    ],
)
def test_value_mode_factor_table(task_loss, weighted, ratio, expected):
    assert meta_loss_cap_factor_by_value(task_loss, weighted, ratio) == pytest.approx(expected, rel=1e-12)


@given(
    task_loss=st.floats(0.0, 1e3),
    weighted=st.lists(st.floats(0.0, 1e3), min_size=1, max_size=4),
    ratio=st.floats(0.01, 0.99),
)
def test_value_mode_keeps_meta_share_at_most_ratio(task_loss, weighted, ratio):
    f = meta_loss_cap_factor_by_value(task_loss, weighted, ratio)
    meta = f * sum(weighted)
    assert 0.0 <= f <= 1.0
    assert meta <= ratio * (task_loss + meta) + 1e-9
    if sum(weighted) > 0 and f < 1.0:  # the largest such factor: the share sits at r exactly
        assert meta == pytest.approx(ratio * (task_loss + meta), rel=1e-9, abs=1e-12)


@given(task_loss=st.floats(0.0, 10.0), weights=st.lists(st.floats(0.0, 1.0), max_size=4))
def test_weights_mode_factor_stays_in_floor_one(task_loss, weights):
    assert 0.01 <= meta_loss_cap_factor(task_loss, weights, 0.25) <= 1.0


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5])
def test_ratio_outside_open_unit_interval_is_rejected(ratio):
    with pytest.raises(ValueError, match="meta_loss_cap_ratio"):
        meta_loss_cap_factor(1.0, [0.1], ratio)


def test_meta_cap_follows_config():
    assert MetaCap.from_config(MetaEscalationConfig()).factor(0.0, [1.0], [1.0]) == 1.0  # disabled
    weights_cap = MetaCap.from_config(MetaEscalationConfig(meta_loss_cap_enabled=True))
    assert weights_cap.factor(0.09, [0.05, 0.01]) == pytest.approx(0.5)
    value_cap = MetaCap.from_config(
        MetaEscalationConfig(meta_loss_cap_enabled=True, meta_loss_cap_mode="value", meta_loss_cap_ratio=0.5)
    )
    assert value_cap.factor(1.0, [0.5, 1.0], [2.0, 2.0]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        value_cap.factor(1.0, [0.5, 1.0], [2.0])
