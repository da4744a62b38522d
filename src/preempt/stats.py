"""Uncertainty for the claims: paired intervals over images, ratios of repeated timings, verdicts.

Two cells of one experiment score the *same* images, so a comparison of their accuracies is a
paired one: per image, the difference of the two outcomes (1 correct, 0 wrong; a transfer
attack's mean over surrogates lies in between). Everything here is a thin layer over scipy and
statsmodels, never a hand-written distribution:

- :func:`paired_difference`: the mean difference (points), a paired bootstrap interval
  (``scipy.stats.bootstrap``, ``paired=True``, percentile method, fixed seed) and the exact
  sign test on the images where the two sides differ (``scipy.stats.binomtest``; for 0/1
  outcomes this is McNemar's exact test);
- :func:`recovery`: Fast Preemption's recovery share (reverted - defended) / (original - defended)
  with a paired bootstrap interval, and the interval of the defense's drop itself: when that one
  contains 0 the ratio is noise over noise and is not judged;
- :func:`proportion`: a share k/n with its exact (Clopper-Pearson) interval;
- :func:`time_ratio`: the ratio of two methods' seconds per image from repeated timings (at least
  3 each): Welch's t interval on the log times, exponentiated;
- :func:`holm`: Holm's step-down adjustment of a claim's per-group p-values (statsmodels);
- :func:`verdict`: holds (the interval lies entirely on the claimed side of the threshold),
  fails (entirely on the other side) or inconclusive (the interval touches the threshold).

A claim over several groups (victims, attacks) judges each group on its interval at the
Bonferroni level ``1 - (1 - confidence) / m``, so that the m intervals hold together with at least
``confidence``; it holds when every group holds and fails when any group fails.
"""

from __future__ import annotations

import importlib
import math
import warnings
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Callable, Literal, Sequence

import numpy as np



@cache
def _lib(name: str) -> ModuleType:
    """``scipy.stats`` and ``statsmodels``, imported on the first test computed, not with this
    module: every Snakemake parse and stage process imports preempt.config, which reaches this
    module through the paper exhibits, and these two cost 0.4 s of imports that only the aggregate
    stage and the notebooks use (measured with ``python -X importtime``)."""
    return importlib.import_module(name)


Kind = Literal["above", "below", "within"]
HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"
MIN_REPEATS = 3


@dataclass(frozen=True)
class Estimate:
    """A number with its interval: ``value`` and [``low``, ``high``] at ``confidence``, from ``n``
    units (images or repeats), with a two-sided ``p`` against no effect and the ``test`` used."""

    value: float
    low: float
    high: float
    n: int
    p: float
    test: str
    confidence: float = 0.95
    note: str = ""

    def text(self, digits: int = 3) -> str:
        def f(v: float) -> str:
            return "nan" if math.isnan(v) else f"{v:.{digits}g}"
        return f"{f(self.value)} [{f(self.low)}, {f(self.high)}] (n={self.n})"


def _interval(data: Sequence[np.ndarray], statistic: Callable[..., np.ndarray], confidence: float,
              resamples: int, seed: int) -> tuple[float, float, np.ndarray | None]:
    """Paired percentile bootstrap; a constant statistic (every resample equal) gives a point."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate samples warn; handled below
        res = _lib("scipy.stats").bootstrap(tuple(data), statistic, paired=True, vectorized=True, n_resamples=resamples,
                              confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed),
                              batch=max(1, min(resamples, 20_000_000 // max(len(data[0]), 1))))
    dist = np.asarray(res.bootstrap_distribution)
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if np.isnan(low) or np.isnan(high):
        finite = dist[np.isfinite(dist)]
        if len(finite) == 0:
            return math.nan, math.nan, dist
        a = (1 - confidence) / 2
        low, high = float(np.quantile(finite, a)), float(np.quantile(finite, 1 - a))
    return low, high, dist


def sign_test(d: np.ndarray) -> float:
    """Exact two-sided sign test on the nonzero paired differences (McNemar's exact test for 0/1)."""
    pos, neg = int((d > 0).sum()), int((d < 0).sum())
    return 1.0 if pos + neg == 0 else float(_lib("scipy.stats").binomtest(pos, pos + neg, 0.5).pvalue)


def paired_difference(a: np.ndarray, b: np.ndarray, *, confidence: float = 0.95, resamples: int = 10_000,
                      seed: int = 0) -> Estimate:
    """mean(a - b) in points (outcomes in [0, 1] -> x 100), paired over the same images."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired outcomes must be two vectors of one length (got {a.shape} and {b.shape})")
    n = len(a)
    test = f"paired bootstrap {confidence:.3g} CI ({resamples} resamples); exact sign test (McNemar) p"
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, math.nan, test, confidence)
    d = 100.0 * (a - b)
    value = float(d.mean())
    if np.all(d == d[0]):  # no variation: every resample gives the same mean
        low = high = value
    else:
        low, high, _ = _interval([d], lambda x, axis: x.mean(axis=axis), confidence, resamples, seed)
    return Estimate(value, low, high, n, sign_test(d), test, confidence)


def recovery(orig: np.ndarray, re: np.ndarray, reverted: np.ndarray, *, confidence: float = 0.95,
             resamples: int = 10_000, seed: int = 0) -> tuple[Estimate, Estimate]:
    """(recovery share, the defense's drop orig - re in points), both paired over the same images.

    The share is (mean(reverted) - mean(re)) / (mean(orig) - mean(re)): 1 back to the original
    accuracy, 0 no change, < 0 further away. When the drop's interval contains 0 the share is
    undefined in a resample and the estimate is marked "drop too small to judge" (NaN interval).
    When the defense *raised* accuracy (the drop's interval entirely below 0, e.g. MSPD on a weak
    adversarially trained victim) there is no mislabel damage to recover: a share would measure
    the reversion undoing the defense's gain, so it is marked "no drop to recover" (NaN) too."""
    o, r, v = (np.asarray(t, float) for t in (orig, re, reverted))
    drop = paired_difference(o, r, confidence=confidence, resamples=resamples, seed=seed)
    test = f"paired bootstrap {confidence:.3g} CI of the share ({resamples} resamples); exact sign test p on reverted vs RE"
    p = sign_test(v - r)
    if not drop.low > 0:  # no drop whose interval excludes 0: either too small or a gain
        note = (f"no drop to recover: the defense raised accuracy, orig - RE = {drop.text()} points" if drop.high < 0
                else f"drop too small to judge: orig - RE = {drop.text()} points")
        return Estimate(math.nan, math.nan, math.nan, len(o), p, test, confidence, note=note), drop

    def share(o_: np.ndarray, r_: np.ndarray, v_: np.ndarray, axis: int) -> np.ndarray:
        den = o_.mean(axis=axis) - r_.mean(axis=axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den != 0, (v_.mean(axis=axis) - r_.mean(axis=axis)) / np.where(den != 0, den, 1), np.nan)

    value = float(share(o, r, v, axis=0))
    low, high, _ = _interval([o, r, v], share, confidence, resamples, seed)
    return Estimate(value, low, high, len(o), p, test, confidence), drop


def proportion(k: int, n: int, confidence: float = 0.95) -> Estimate:
    """k of n, as a share in [0, 1] with its exact Clopper-Pearson interval."""
    test = f"exact (Clopper-Pearson) {confidence:.3g} CI"
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, math.nan, test, confidence)
    res = _lib("scipy.stats").binomtest(k, n)
    ci = res.proportion_ci(confidence_level=confidence, method="exact")
    return Estimate(k / n, float(ci.low), float(ci.high), n, float(res.pvalue), test, confidence)


def time_ratio(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95) -> Estimate:
    """mean-log ratio a / b of repeated timings (geometric means), with Welch's t interval on the
    log scale; ``p`` tests a ratio of 1. Needs at least :data:`MIN_REPEATS` timings each."""
    la, lb = np.log(np.asarray(a, float)), np.log(np.asarray(b, float))
    if min(len(la), len(lb)) < MIN_REPEATS:
        raise ValueError(f"a ratio needs at least {MIN_REPEATS} repeated timings per side (got {len(la)} and {len(lb)})")
    test = f"Welch t {confidence:.3g} CI on log seconds ({len(la)} and {len(lb)} repeats)"
    value = float(np.exp(la.mean() - lb.mean()))
    if np.ptp(la) == 0 and np.ptp(lb) == 0:
        return Estimate(value, value, value, min(len(la), len(lb)), 0.0 if value != 1 else 1.0, test, confidence)
    res = _lib("scipy.stats").ttest_ind(la, lb, equal_var=False)
    ci = res.confidence_interval(confidence_level=confidence)
    return Estimate(value, float(np.exp(ci.low)), float(np.exp(ci.high)), min(len(la), len(lb)), float(res.pvalue),
                    test, confidence)


def holm(p: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN)."""
    arr = np.asarray(p, float)
    out = np.full(arr.shape, np.nan)
    ok = ~np.isnan(arr)
    if ok.any():
        out[ok] = _lib("statsmodels.stats.multitest").multipletests(arr[ok], method="holm")[1]
    return out.tolist()


def verdict(low: float, high: float, kind: Kind, value: float) -> str:
    """Holds: [low, high] lies entirely on the claimed side of the threshold; fails: entirely on the
    other side; inconclusive: it contains the threshold (or is undefined). ``within``: the claimed
    side is [-value, value] (an equality claim, +- margin)."""
    if math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE
    if kind == "above":
        return HOLDS if low > value else FAILS if high < value else INCONCLUSIVE
    if kind == "below":
        return HOLDS if high < value else FAILS if low > value else INCONCLUSIVE
    return HOLDS if -value <= low and high <= value else FAILS if high < -value or low > value else INCONCLUSIVE


def margin(low: float, high: float, kind: Kind, value: float) -> float:
    """How far the interval lies inside the claimed side (negative: how far outside)."""
    if math.isnan(low) or math.isnan(high):
        return -math.inf
    if kind == "above":
        return low - value
    if kind == "below":
        return value - high
    return min(low + value, value - high)


def bonferroni(confidence: float, groups: int) -> float:
    """The per-group confidence at which ``groups`` intervals hold together with ``confidence``."""
    return 1 - (1 - confidence) / max(groups, 1)
