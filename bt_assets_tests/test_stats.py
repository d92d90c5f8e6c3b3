"""Wilson intervals and the problem-level (cluster) bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bt_assets.lib.stats import (
    accuracy_difference,
    accuracy_lift,
    accuracy_with_without,
    cluster_bootstrap,
    wilson,
)


def test_wilson_known_values():
    lo, hi = wilson(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    lo, hi = wilson(582, 2452)
    assert lo < 582 / 2452 < hi and hi - lo < 0.04
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    assert all(math.isnan(x) for x in wilson(0, 0))
    lo99, hi99 = wilson(5, 10, z=2.576)
    assert lo99 < 0.2366 and hi99 > 0.7634


def test_wilson_symmetry():
    lo, hi = wilson(3, 20)
    lo2, hi2 = wilson(17, 20)
    assert lo == pytest.approx(1 - hi2) and hi == pytest.approx(1 - lo2)


def test_accuracy_helpers():
    bt = np.array([True, True, False, False])
    ok = np.array([1.0, 0.0, 1.0, 1.0])
    assert accuracy_with_without(bt, ok) == (0.5, 1.0)
    assert accuracy_difference(bt, ok) == -0.5
    assert accuracy_lift(bt, ok) == 0.5
    assert math.isnan(accuracy_lift(bt, np.zeros(4)))
    assert math.isnan(accuracy_difference(np.ones(4, bool), ok))


def _data(seed: int = 0, problems: int = 100, per: int = 6):
    rng = np.random.default_rng(seed)
    cl = np.repeat(np.arange(problems), per)
    p = rng.random(problems)[cl]  # problem difficulty shared by its samples
    bt = rng.random(cl.size) < 0.6
    ok = (rng.random(cl.size) < p).astype(float)
    return cl, bt, ok


def test_cluster_bootstrap_deterministic_and_covers_estimate():
    cl, bt, ok = _data()
    a = cluster_bootstrap(cl, [bt, ok], accuracy_difference, n_boot=500, seed=3)
    b = cluster_bootstrap(cl, [bt, ok], accuracy_difference, n_boot=500, seed=3)
    c = cluster_bootstrap(cl, [bt, ok], accuracy_difference, n_boot=500, seed=4)
    assert a == b and a != c
    est = accuracy_difference(bt, ok)
    assert a[0] < est < a[1]


def test_cluster_bootstrap_resamples_whole_problems():
    # every row of a problem is identical: the cluster interval must be wider than a row-level one
    rng = np.random.default_rng(1)
    cl = np.repeat(np.arange(40), 10)
    x = rng.random(40)[cl]
    lo_c, hi_c = cluster_bootstrap(cl, [x], np.mean, n_boot=800, seed=0)
    lo_r, hi_r = cluster_bootstrap(np.arange(x.size), [x], np.mean, n_boot=800, seed=0)
    assert (hi_c - lo_c) > 2 * (hi_r - lo_r)
    # a resample keeps problem sizes: with unequal sizes the row count still varies per replicate
    sizes = cluster_bootstrap(np.array([0, 0, 0, 1]), [np.ones(4)], len, n_boot=200, seed=0)
    assert sizes[0] >= 2 and sizes[1] <= 6


def test_cluster_bootstrap_string_labels_and_level():
    cl, bt, ok = _data(problems=30)
    labels = np.array([f"p{i}" for i in cl])
    wide = cluster_bootstrap(labels, [bt, ok], accuracy_lift, n_boot=400, seed=0, level=0.99)
    narrow = cluster_bootstrap(labels, [bt, ok], accuracy_lift, n_boot=400, seed=0, level=0.5)
    assert wide[0] <= narrow[0] <= narrow[1] <= wide[1]


def test_cluster_bootstrap_degenerate_cases():
    nan2 = cluster_bootstrap([], [[], []], accuracy_lift)
    assert all(math.isnan(x) for x in nan2)
    # nobody without backtracking: the lift is undefined in every replicate
    nan2 = cluster_bootstrap([0, 1], [[True, True], [1.0, 0.0]], accuracy_lift, n_boot=50)
    assert all(math.isnan(x) for x in nan2)
    # a statistic that divides by zero in some replicates: those are dropped, no exception
    lo, hi = cluster_bootstrap([0, 1, 2], [[0.0, 0.0, 1.0]], lambda x: 1 / x.sum(), n_boot=200, seed=0)
    assert lo >= 0.25 and hi <= 1.0
    with pytest.raises(ValueError):
        cluster_bootstrap([0, 1], [[1.0]], np.mean)
