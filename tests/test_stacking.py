"""experiments/stacking.py: the stacking fit against plain computations, the activity bins, and
the choice of form on VALID by cross-validation."""
from __future__ import annotations

import numpy as np

from experiments import stacking


def test_the_plain_fit_is_the_normal_equations():
    rng = np.random.default_rng(0)
    base = 3 + rng.normal(0, 0.5, 300)
    y = base + rng.normal(0, 1, 300)
    groups = [y + rng.normal(0, s, 300) for s in (0.5, 1.5)]
    x = np.column_stack([g - base for g in groups])
    plain = np.linalg.solve(x.T @ x, x.T @ (y - base))
    np.testing.assert_allclose(stacking.fit(y, base, groups), plain, rtol=1e-8)


def test_binned_weights_are_one_plain_fit_per_bin():
    rng = np.random.default_rng(1)
    n = 600
    base, bins = 3 + rng.normal(0, 0.5, n), rng.integers(0, 3, n)
    y = base + rng.normal(0, 1, n)
    groups = [y + rng.normal(0, s, n) for s in (0.5, 1.5)]
    w = stacking.fit(y, base, groups, bins)
    for k in range(3):
        sel = bins == k
        own = stacking.fit(y[sel], base[sel], [g[sel] for g in groups])
        np.testing.assert_allclose(w[2 * k:2 * k + 2], own, rtol=1e-8)


def test_activity_bins_are_terciles_of_the_training_counts():
    train = np.array([1] * 1 + [2] * 2 + [3] * 3 + [4] * 4 + [5] * 5 + [6] * 6)
    bins = stacking.activity_bins(np.array([1, 2, 3, 4, 5, 6, 99]), train)
    counts = np.array([1, 2, 3, 4, 5, 6, 0])
    edges = np.quantile(np.arange(1, 7), [1 / 3, 2 / 3])
    np.testing.assert_array_equal(bins, np.digitize(counts, edges))
    assert bins[-1] == 0 and bins[0] == 0 and bins[5] == 2
    strings = stacking.activity_bins(np.array(["1", "6"]), train)  # ids of another type
    np.testing.assert_array_equal(strings, bins[[0, 5]])


def test_the_form_whose_weights_differ_by_bin_is_chosen_on_valid():
    rng = np.random.default_rng(2)
    n = 4000
    base, bins = 3 + rng.normal(0, 0.3, n), rng.integers(0, 3, n)
    signal = rng.normal(0, 1, n)
    y = base + signal + rng.normal(0, 0.2, n)
    gain = np.array([0.2, 1.0, 3.0])[bins]  # the group is trustworthy in one bin only
    groups = [base + signal / gain]
    form, cv = stacking.choose_form(y, base, groups, {"plain": None, "item_bins": bins},
                                    (-100, 100))
    assert form == "item_bins" and cv["item_bins"] < cv["plain"]
    noise = rng.integers(0, 3, n)  # bins unrelated to the weights: no better than plain
    form, cv = stacking.choose_form(y, base, [base + signal], {"plain": None,
                                                               "item_bins": noise}, (-100, 100))
    assert cv["item_bins"] >= cv["plain"] - 1e-3


def test_cross_validated_predictions_never_see_their_own_fold():
    rng = np.random.default_rng(4)
    n = 500
    base = 3 + rng.normal(0, 0.3, n)
    y = base + rng.normal(0, 1, n)
    groups = [y + rng.normal(0, 1, n)]
    pred = stacking.cv_predictions(y, base, groups, None, (-100, 100), folds=5, seed=7)
    fold = np.random.default_rng(7).integers(0, 5, n)
    for k in range(5):
        held = fold == k
        w = stacking.fit(y[~held], base[~held], [groups[0][~held]])
        np.testing.assert_allclose(pred[held], base[held] + w[0] * (groups[0] - base)[held])
    assert stacking.cv_rmse(y, base, groups, None, (-100, 100), 5, 7) == np.sqrt(
        np.mean((pred - y) ** 2))


def test_the_baseline_is_kept_unless_the_stack_gains_beyond_noise():
    rng = np.random.default_rng(5)
    n = 300  # a small VALID: members that are pure noise around the baseline
    base = 3 + rng.normal(0, 0.3, n)
    y = base + rng.normal(0, 1, n)
    groups = [base + rng.normal(0, 1, n) for _ in range(3)]
    bins = rng.integers(0, 3, n)
    form, cv = stacking.choose_form(y, base, groups, {"plain": None, "item_bins": bins},
                                    (-100, 100))
    assert form == stacking.BASELINE and set(cv) == {"plain", "item_bins", "baseline"}
    w = stacking.fit_form(form, y, base, groups, None)
    np.testing.assert_array_equal(stacking.predict(w, base, groups, None, (-100, 100)), base)
    informed = [y + rng.normal(0, 0.5, n)]  # a member that knows something: stacked
    form, cv = stacking.choose_form(y, base, informed, {"plain": None}, (-100, 100))
    assert form == "plain" and cv["plain"] < cv["baseline"]
