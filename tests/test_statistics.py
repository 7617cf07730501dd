"""The comparison's statistics, each checked against scikit-learn, statsmodels, scipy or a hand computation."""
import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    matthews_corrcoef,
    roc_auc_score,
)

from lorabench.evaluation.bootstrap import (
    Resamples,
    bootstrap,
    paired_difference,
    percentile_interval,
    point,
    weighted_metrics,
)
from lorabench.evaluation.calibration import (
    apply_temperature,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    log_loss,
)
from lorabench.evaluation.significance import corrected_t_test, holm, mcnemar_exact


def _task(n, k=2, seed=0, skill=1.5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += skill
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("k", [2, 3])
def test_weighted_metrics_equal_scikit_learn_with_the_counts_as_sample_weights(k):
    y, p = _task(300, k, seed=k)
    p[:40, :] = np.round(p[:40, :], 1)  # ties in the scores
    p /= p.sum(axis=1, keepdims=True)
    w = next(iter(Resamples(300, 5, seed=1, chunk=5)))
    got = weighted_metrics(y, p, w)
    pred = p.argmax(axis=1)
    for b in range(5):
        sw = w[b]
        assert got["accuracy"][b] == pytest.approx(accuracy_score(y, pred, sample_weight=sw))
        f1 = f1_score(y, pred, sample_weight=sw, average="binary" if k == 2 else "macro",
                      labels=None if k == 2 else list(range(k)), zero_division=0)
        assert got["f1"][b] == pytest.approx(f1)
        assert got["mcc"][b] == pytest.approx(matthews_corrcoef(y, pred, sample_weight=sw))
        if k == 2:
            assert got["roc_auc"][b] == pytest.approx(roc_auc_score(y, p[:, 1], sample_weight=sw))
            assert got["pr_auc"][b] == pytest.approx(average_precision_score(y, p[:, 1], sample_weight=sw))
        else:
            assert "roc_auc" not in got


def test_resamples_are_the_same_for_every_model_and_each_draws_n_rows():
    r = Resamples(50, 250, seed=3, chunk=100)
    first, again = list(r), list(r)
    assert [c.shape for c in first] == [(100, 50), (100, 50), (50, 50)]
    assert all((a == b).all() for a, b in zip(first, again))
    assert all((c.sum(axis=1) == 50).all() for c in first)
    assert not (list(Resamples(50, 250, seed=4))[0] == first[0]).all()


def test_intervals_contain_the_point_estimate_and_narrow_as_rows_grow():
    widths = []
    for n in (200, 800, 3200):
        y, p = _task(n, seed=5)
        samples = bootstrap(y, [p], Resamples(n, 1000, seed=0))
        est = point(y, [p])
        for m in ("f1", "accuracy", "mcc", "roc_auc", "pr_auc"):
            lo, hi = percentile_interval(samples[m])
            assert lo <= est[m] <= hi, m
        lo, hi = percentile_interval(samples["f1"])
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] == pytest.approx(4, rel=0.35)  # ~ 1/sqrt(n)


def test_identical_predictions_differ_by_zero_with_p_one():
    y, p = _task(400, seed=6)
    r = Resamples(400, 500, seed=0)
    a, b = bootstrap(y, [p], r), bootstrap(y, [p.copy()], r)
    d = paired_difference(a["f1"], b["f1"], point(y, [p])["f1"], point(y, [p])["f1"])
    assert d["difference"] == 0 and d["low"] == 0 and d["high"] == 0 and d["p"] == 1
    assert mcnemar_exact(p.argmax(1) == y, p.argmax(1) == y)["p"] == 1


def test_a_model_right_on_strictly_more_rows_gets_a_small_p():
    y, p = _task(600, seed=7)
    better = p.copy()
    wrong = np.flatnonzero(p.argmax(1) != y)[:60]  # 60 rows it gets wrong, the better model gets right
    better[wrong] = np.eye(2)[y[wrong]] * 0.9 + 0.05
    r = Resamples(600, 1000, seed=0)
    a, b = bootstrap(y, [better], r), bootstrap(y, [p], r)
    for m in ("f1", "accuracy"):
        d = paired_difference(a[m], b[m], point(y, [better])[m], point(y, [p])[m])
        assert d["difference"] > 0 and d["low"] > 0 and d["p"] < 0.01
    mc = mcnemar_exact(better.argmax(1) == y, p.argmax(1) == y)
    assert mc["a_only"] == 60 and mc["b_only"] == 0 and mc["p"] < 1e-10


def test_mcnemar_equals_statsmodels_exact_test_on_fixed_counts():
    from statsmodels.stats.contingency_tables import mcnemar
    # the demo's counts: 136 rows only MiniLM-L6 got right, 107 only TF-IDF
    a = np.array([True] * 136 + [False] * 107 + [True] * 1000 + [False] * 280)
    b = np.array([False] * 136 + [True] * 107 + [True] * 1000 + [False] * 280)
    got = mcnemar_exact(a, b)
    assert (got["a_only"], got["b_only"]) == (136, 107)
    assert got["p"] == pytest.approx(mcnemar([[1000, 136], [107, 280]], exact=True).pvalue)
    assert got["p"] == pytest.approx(0.0722, abs=5e-4)
    from scipy.stats import binomtest
    assert got["p"] == pytest.approx(binomtest(107, 243, 0.5).pvalue)


def test_holm_equals_a_hand_computation():
    # sorted p: 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    got = holm([0.04, 0.01, None, 0.03])
    assert got[2] is None and got[0] == pytest.approx(0.06) and got[1] == pytest.approx(0.03) \
        and got[3] == pytest.approx(0.06)


def test_corrected_resampled_t_test_equals_a_hand_computed_reference():
    d = [0.012, -0.004, 0.020, 0.008, 0.015]
    ratio = 1 / 4  # 5 folds: val rows / train rows
    mean = sum(d) / 5
    var = sum((x - mean) ** 2 for x in d) / 4
    t = mean / math.sqrt((1 / 5 + ratio) * var)
    from scipy.stats import t as student
    got = corrected_t_test(d, ratio)
    assert got["t"] == pytest.approx(t) and got["df"] == 4
    assert got["p"] == pytest.approx(2 * student.sf(abs(t), 4))
    plain = mean / math.sqrt(var / 5)  # the uncorrected t-test is overconfident
    assert 2 * student.sf(plain, 4) < got["p"]
    assert got["low"] < mean < got["high"]
    assert corrected_t_test([0.0, 0.0, 0.0], ratio)["p"] == 1.0


def test_ece_equals_a_hand_computation():
    y = np.array([1, 1, 0, 0])
    p1 = np.array([0.95, 0.65, 0.62, 0.1])
    probs = np.stack([1 - p1, p1], axis=1)
    # top-label confidences 0.95 (right), 0.65 (right), 0.62 (wrong), 0.9 (right)
    # bins of width 1/15: 0.95 -> (14/15, 1], 0.9 -> (13/15, 14/15], 0.65 and 0.62 -> (9/15, 10/15]
    expected = 0.25 * abs(1 - 0.95) + 0.25 * abs(1 - 0.9) + 0.5 * abs(0.5 - (0.65 + 0.62) / 2)
    assert expected_calibration_error(y, probs) == pytest.approx(expected)
    from sklearn.metrics import brier_score_loss
    assert brier_score(y, probs) == pytest.approx(brier_score_loss(y, p1))


def test_temperature_scaling_keeps_the_argmax_and_lowers_log_loss():
    y, p = _task(500, k=3, seed=8, skill=1.0)
    over = apply_temperature(p, 0.3)  # overconfident probabilities
    fit = fit_temperature(y, over)
    calibrated = apply_temperature(over, fit["temperature"])
    assert (calibrated.argmax(1) == over.argmax(1)).all()
    assert fit["temperature"] > 1
    assert log_loss(y, calibrated) == pytest.approx(fit["log_loss_after"])
    assert fit["log_loss_after"] < fit["log_loss_before"] == pytest.approx(log_loss(y, over))
    assert expected_calibration_error(y, calibrated) < expected_calibration_error(y, over)
    assert np.allclose(apply_temperature(p, 1.0), p)
