"""Whether a sweep's knob effects stand out from chance: a permutation test over its scored trials.

Optuna's importances always sum to 1, so a sweep whose scores differ only by seed noise still names a
"most important" knob. Here each knob's effect is a rank statistic of the scores (|Spearman rho| for a
numeric knob; for a categorical one the share of the score ranks' variance between its values), and the
largest over the knobs is compared with its distribution when the scores are shuffled among the trials
(scipy.stats.permutation_test). Taking the largest makes the p-value hold for the set of knobs at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SHUFFLES = 2000
SEED = 0  # the same trials give the same p-value
SIGNIFICANT = 0.05


@dataclass
class ChanceCheck:
    knob: str  # the knob with the strongest effect
    effect: float  # its statistic: |Spearman rho| or the between-value share of the ranks' variance
    p_value: float  # the share of shuffles whose strongest effect is at least as strong
    trials: int

    def note(self) -> str:
        verdict = "could be noise" if self.p_value >= SIGNIFICANT else "is unlikely to be noise"
        return (
            f"chance check over {self.trials} trials: the strongest knob effect ({self.knob}, {self.effect:.2f}) "
            f"is matched by shuffled scores with p = {self.p_value:.2g}: the knob ranking {verdict}"
        )


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _effect(knob_values: list[Any], score_ranks: np.ndarray) -> float:
    from scipy import stats  # here, not at import: the GPU machine's packed site has no scipy

    if _numeric(knob_values):
        knob_ranks = stats.rankdata(knob_values)
        if np.ptp(knob_ranks) == 0:
            return 0.0
        return abs(float(np.corrcoef(knob_ranks, score_ranks)[0, 1]))
    total = float(((score_ranks - score_ranks.mean()) ** 2).sum())
    between = 0.0
    labels = [repr(v) for v in knob_values]
    for label in set(labels):
        members = score_ranks[[i for i, x in enumerate(labels) if x == label]]
        between += len(members) * (members.mean() - score_ranks.mean()) ** 2
    return between / total if total else 0.0


def chance_check(trials: list, knobs: list[str]) -> ChanceCheck | None:
    """The permutation test over the trials that have the metric and every knob; None when fewer than
    three such trials or all their scores are equal (nothing to test)."""
    from scipy import stats

    scored = [t for t in trials if t.value is not None and all(t.knobs.get(k) is not None for k in knobs)]
    if len(scored) < 3 or not knobs or len({t.value for t in scored}) == 1:
        return None
    columns = {k: [t.knobs[k] for t in scored] for k in knobs}

    def strongest(scores: np.ndarray) -> float:
        ranks = stats.rankdata(scores)
        return max(_effect(values, ranks) for values in columns.values())

    scores = np.array([t.value for t in scored], dtype=float)
    result = stats.permutation_test(
        (scores,), strongest, permutation_type="pairings", vectorized=False, n_resamples=SHUFFLES,
        alternative="greater", random_state=SEED,
    )  # fmt: skip
    ranks = stats.rankdata(scores)
    effects = {k: _effect(values, ranks) for k, values in columns.items()}
    knob = max(effects, key=effects.get)
    return ChanceCheck(knob, effects[knob], float(result.pvalue), len(scored))
