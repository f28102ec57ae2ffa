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


def _effect(knob: np.ndarray | list[np.ndarray], score_ranks: np.ndarray) -> float:
    """knob: a numeric knob's ranks, or a categorical knob's groups (index arrays, one per value)."""
    if isinstance(knob, np.ndarray):
        return 0.0 if np.ptp(knob) == 0 else abs(float(np.corrcoef(knob, score_ranks)[0, 1]))
    centred = score_ranks - score_ranks.mean()
    total = float((centred**2).sum())
    between = sum(len(g) * centred[g].mean() ** 2 for g in knob)
    return float(between) / total if total else 0.0


def chance_check(trials: list, knobs: list[str]) -> ChanceCheck | None:
    """The permutation test over the trials that have the metric and every knob; None when fewer than
    three such trials or all their scores are equal (nothing to test)."""
    from scipy import stats  # here, not at import: the GPU machine's packed site has no scipy

    scored = [t for t in trials if t.value is not None and all(t.knobs.get(k) is not None for k in knobs)]
    if len(scored) < 3 or not knobs or len({t.value for t in scored}) == 1:
        return None
    # What does not change with the shuffles, once: each knob's ranks or its groups of trials.
    prepared: dict[str, np.ndarray | list[np.ndarray]] = {}
    for k in knobs:
        values = [t.knobs[k] for t in scored]
        if _numeric(values):
            prepared[k] = stats.rankdata(values)
        else:
            labels = [repr(v) for v in values]
            prepared[k] = [np.flatnonzero([x == label for x in labels]) for label in sorted(set(labels))]

    def effects(scores: np.ndarray) -> dict[str, float]:
        ranks = stats.rankdata(scores)
        return {k: _effect(knob, ranks) for k, knob in prepared.items()}

    scores = np.array([t.value for t in scored], dtype=float)
    result = stats.permutation_test(
        (scores,), lambda s: max(effects(s).values()), permutation_type="pairings", vectorized=False,
        n_resamples=SHUFFLES, alternative="greater", random_state=SEED,
    )  # fmt: skip
    observed = effects(scores)
    knob = max(observed, key=observed.get)
    return ChanceCheck(knob, observed[knob], float(result.pvalue), len(scored))
