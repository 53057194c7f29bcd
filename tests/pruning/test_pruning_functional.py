"""The pure pruning maths against numbers worked out by hand in the comments.

ln is the natural logarithm throughout; EPS is padded_kl's default eps.
"""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from mmela.pruning import PRUNING_METHODS, ebqm, keep_mask, padded_kl

EPS = 1e-8

# Used by most EBQM tests, chosen so every step is exact in floating point.
# sorted: [1, 1.5, 2, 3, 5]; median (gamma = 0.5) Q = 2, so the candidates
# are 1.0 (position 1), 2.0 (position 2) and 1.5 (position 4); min-max
# normalised among themselves they are x = 0, 1, 0.5. Positions 0 and 3
# (3.0, 5.0) lie above Q and score 1.
A = [3.0, 1.0, 2.0, 5.0, 1.5]


def scores_of_a(f0, f1, f_half):
    """The EBQM scores of A for a mapping f with f(0), f(1), f(0.5)."""
    return [1.0, f0, f1, 1.0, f_half]


# ---------------------------------------------------------------- padded_kl --


@pytest.mark.parametrize(
    'p, q, expected',
    [
        # 0.5 ln(0.5/0.25) * 2 + eps ln(eps/0.5)
        ([0.5, 0.5], [0.25, 0.25, 0.5], math.log(2) + EPS * math.log(2 * EPS)),
        # 1 ln(1/0.5) + eps ln(eps/0.5)
        ([1.0], [0.5, 0.5], math.log(2) + EPS * math.log(2 * EPS)),
        # p_1 = 0 contributes 0: 1 ln(1/0.25) + eps ln(eps/0.25)
        ([0.0, 1.0], [0.5, 0.25, 0.25], math.log(4) + EPS * math.log(4 * EPS)),
        # q_2 = 0 is clamped to eps: 1 ln(1/1) + eps ln(eps/eps) = 0
        ([1.0], [1.0, 0.0], 0.0),
        # q_2 = q_3 = 0 clamped to eps:
        # 0.5 ln(0.5/1) + 0.5 ln(0.5/eps) + eps ln(eps/eps)
        ([0.5, 0.5], [1.0, 0.0, 0.0],
         0.5 * math.log(0.5) + 0.5 * math.log(0.5 / EPS)),
    ])
def test_padded_kl_hand_computed(p, q, expected):
    assert padded_kl(p, q) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_padded_kl_custom_eps():
    # 0.5 ln2 * 2 + 0.01 ln(0.01/0.5)
    assert padded_kl([0.5, 0.5], [0.25, 0.25, 0.5], eps=0.01) == \
        pytest.approx(math.log(2) + 0.01 * math.log(0.02))


def test_padded_kl_accepts_numpy_and_torch():
    expected = math.log(2) + EPS * math.log(2 * EPS)
    assert padded_kl(np.array([0.5, 0.5]), np.array([0.25, 0.25, 0.5])) == \
        pytest.approx(expected)
    p = torch.tensor([0.5, 0.5], requires_grad=True)
    q = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)
    result = padded_kl(p, q)
    assert isinstance(result, float)
    assert result == pytest.approx(expected)


def test_padded_kl_tolerates_float32_rounding():
    p = [1 / 3] * 3
    q = np.full(4, 0.25, dtype=np.float32)
    # 3 * (1/3) ln((1/3)/0.25) + eps ln(eps/0.25) = ln(4/3) + eps ln(4 eps)
    assert padded_kl(p, q) == pytest.approx(
        math.log(4 / 3) + EPS * math.log(4 * EPS), rel=1e-6)


@pytest.mark.parametrize(
    'p, q, kwargs, match',
    [
        ([0.5, 0.6], [0.25, 0.25, 0.5], {}, r'p must sum to 1'),
        ([0.5, 0.5], [0.25, 0.25, 0.25], {}, r'q must sum to 1'),
        ([1.5, -0.5], [0.25, 0.25, 0.5], {}, r'p must be non-negative'),
        ([0.5, 0.5], [0.75, -0.25, 0.5], {}, r'q must be non-negative'),
        ([0.5, 0.5], [0.5, 0.5], {}, r'q must have len\(p\) \+ 1 = 3 entries'),
        ([float('nan'), 1.0], [0.25, 0.25, 0.5], {}, r'p must be finite'),
        ([0.5, 0.5], [0.25, float('inf'), 0.5], {}, r'q must be finite'),
        ([[0.5, 0.5]], [0.25, 0.25, 0.5], {}, r'p must be 1-D'),
        ([], [1.0], {}, r'p must sum to 1'),
        ([1.0], [0.5, 0.5], {'eps': 0.0}, r'eps must be a finite number > 0'),
    ])
def test_padded_kl_rejects_bad_input(p, q, kwargs, match):
    with pytest.raises(ValueError, match=match):
        padded_kl(p, q, **kwargs)


# --------------------------------------------------------------------- ebqm --


def test_ebqm_closed_form_beta_2_1():
    # Beta(2, 1) CDF is x^2: x = 0, 1, 0.5 -> 0, 1, 0.25
    assert ebqm(A, alpha=2, beta=1) == pytest.approx(scores_of_a(0, 1, 0.25))


def test_ebqm_default_beta_2_5_closed_form_and_scipy():
    # Beta(2, 5) CDF = I_x(2, 5) = 1 - (1-x)^6 - 6x(1-x)^5;
    # at x = 0.5: 1 - 1/64 - 6/64 = 57/64.
    expected = scores_of_a(0, 1, 57 / 64)
    assert ebqm(A) == pytest.approx(expected)
    assert expected[4] == pytest.approx(stats.beta.cdf(0.5, 2, 5))


def test_ebqm_interpolated_quantile():
    # n = 5, gamma = 0.7: position (5 - 1) * 0.7 = 2.8 in the sorted vector,
    # Q = 0.3 + 0.8 * (0.4 - 0.3) = 0.38, so the candidates are 0.1, 0.2,
    # 0.3 -> x = 0, 0.5, 1. Beta(1, 2) CDF is 1 - (1-x)^2: 0, 0.75, 1.
    scores = ebqm([0.1, 0.2, 0.3, 0.4, 1.0], gamma=0.7, alpha=1, beta=2)
    assert scores == pytest.approx([0, 0.75, 1, 1, 1])


def test_ebqm_gamma_one_uses_all_divergences():
    # gamma = 1: Q = max, everything is a candidate; x = 1, 0, 0.5.
    # Beta(1, 1) CDF is the identity.
    assert ebqm([3.0, 1.0, 2.0], gamma=1.0, alpha=1, beta=1) == \
        pytest.approx([1, 0, 0.5])


@pytest.mark.parametrize(
    'divergences',
    [
        [0.4],  # a single candidate
        [0.2, 0.2, 0.2],  # all equal
        # Q = median of [.2, .2, .2, .8] = 0.2: three equal candidates
        [0.2, 0.8, 0.2, 0.2],
    ])
def test_ebqm_unrankable_candidates_score_one(divergences):
    scores = ebqm(divergences)
    assert scores.dtype == np.float64
    assert scores.tolist() == [1.0] * len(divergences)


def test_ebqm_empty_and_torch_input():
    empty = ebqm([])
    assert empty.dtype == np.float64 and empty.shape == (0, )
    scores = ebqm(torch.tensor(A), alpha=2, beta=1)
    assert isinstance(scores, np.ndarray)
    assert scores == pytest.approx(scores_of_a(0, 1, 0.25))


@pytest.mark.parametrize(
    'kwargs, match',
    [
        ({'gamma': 0}, r'gamma must be in \(0, 1\], got 0'),
        ({'gamma': 1.5}, r'gamma must be in \(0, 1\], got 1.5'),
        ({'alpha': 0}, r'alpha must be a finite number > 0, got 0'),
        ({'beta': -1.0}, r'beta must be a finite number > 0, got -1.0'),
        ({'beta': float('inf')}, r'beta must be a finite number > 0'),
    ])
def test_ebqm_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ebqm(A, **kwargs)
    with pytest.raises(ValueError, match=match):
        ebqm([], **kwargs)  # checked even when there is nothing to map


@pytest.mark.parametrize(
    'divergences, match',
    [
        ([0.1, float('nan')], r'divergences must be finite'),
        ([0.1, float('inf')], r'divergences must be finite'),
        ([[0.1, 0.2]], r'divergences must be 1-D'),
    ])
def test_ebqm_rejects_bad_divergences(divergences, match):
    with pytest.raises(ValueError, match=match):
        ebqm(divergences)


# ---------------------------------------------------------------- keep_mask --


def test_pruning_methods_lists_every_method():
    assert set(PRUNING_METHODS) == {
        'ebqm', 'ebqm-normal', 'ebqm-gamma', 'ebqm-softmax', 'ebqm-sigmoid',
        'gqm', 'eqm', 'threshold', 'fixed'
    }


@pytest.mark.parametrize(
    'method, params, tau, expected',
    [
        # Scores of A (see scores_of_a): [1, f(0), f(1), 1, f(0.5)].
        # Beta(2, 5): [1, 0, 1, 1, 57/64 = 0.89]
        ('ebqm', {}, 0.2, [1, 0, 1, 1, 1]),
        ('ebqm', {}, 0.9, [1, 0, 1, 1, 0]),
        # Beta(2, 1): [1, 0, 1, 1, 0.25]
        ('ebqm', dict(alpha=2, beta=1), 0.3, [1, 0, 1, 1, 0]),
        # gamma = 1: candidates [3, 1, 2, 5, 1.5] -> x = [.5, 0, .25, 1, .125];
        # Beta(1, 1) is the identity.
        ('ebqm', dict(gamma=1, alpha=1, beta=1), 0.2, [1, 0, 1, 1, 0]),
        # Normal(0.5, 0.25) CDF: f(0) = Phi(-2) = 0.02275, f(1) = Phi(2),
        # f(0.5) = 0.5
        ('ebqm-normal', {}, 0.02, [1, 1, 1, 1, 1]),
        ('ebqm-normal', {}, 0.03, [1, 0, 1, 1, 1]),
        ('ebqm-normal', {}, 0.6, [1, 0, 1, 1, 0]),
        # Normal(0.5, 1): f(0) = Phi(-0.5) = 0.3085
        ('ebqm-normal', dict(std=1.0), 0.3, [1, 1, 1, 1, 1]),
        # Gamma(shape 2, scale 0.2) CDF 1 - e^(-x/0.2) (1 + x/0.2):
        # f(0) = 0, f(0.5) = 1 - 3.5 e^-2.5 = 0.7127, f(1) = 1 - 6 e^-5
        ('ebqm-gamma', {}, 0.71, [1, 0, 1, 1, 1]),
        ('ebqm-gamma', {}, 0.72, [1, 0, 1, 1, 0]),
        # softmax / max = exp((x - 1) / 0.5): f(0) = e^-2 = 0.1353,
        # f(0.5) = e^-1 = 0.3679, f(1) = 1
        ('ebqm-softmax', {}, 0.13, [1, 1, 1, 1, 1]),
        ('ebqm-softmax', {}, 0.14, [1, 0, 1, 1, 1]),
        ('ebqm-softmax', {}, 0.37, [1, 0, 1, 1, 0]),
        # temperature 0.25: f(0.5) = e^-2 = 0.1353
        ('ebqm-softmax', dict(temperature=0.25), 0.14, [1, 0, 1, 1, 0]),
        # 1 / (1 + exp(-10 (x - 0.5))): f(0) = 1 / (1 + e^5) = 0.0067,
        # f(0.5) = 0.5, f(1) = 0.9933
        ('ebqm-sigmoid', {}, 0.006, [1, 1, 1, 1, 1]),
        ('ebqm-sigmoid', {}, 0.007, [1, 0, 1, 1, 1]),
        ('ebqm-sigmoid', {}, 0.51, [1, 0, 1, 1, 0]),
        # centre 0.6: f(0.5) = 1 / (1 + e) = 0.2689
        ('ebqm-sigmoid', dict(centre=0.6), 0.27, [1, 0, 1, 1, 0]),
        # raw KL >= tau (tau in KL units, may exceed 1)
        ('threshold', {}, 2.0, [1, 0, 1, 1, 0]),
        ('threshold', {}, 0.0, [1, 1, 1, 1, 1]),
        ('threshold', {}, 4.0, [0, 0, 0, 1, 0]),
        # the two lowest are 1.0 (position 1) and 1.5 (position 4)
        ('fixed', dict(num_pruned=2), 0.2, [1, 0, 1, 1, 0]),
        ('fixed', dict(num_pruned=0), 0.2, [1, 1, 1, 1, 1]),
        ('fixed', dict(num_pruned=np.int64(1)), 0.2, [1, 0, 1, 1, 1]),
        # capped at len(A)
        ('fixed', dict(num_pruned=9), 0.2, [0, 0, 0, 0, 0]),
    ])
def test_keep_mask_on_a(method, params, tau, expected):
    mask = keep_mask(A, method=method, tau=tau, **params)
    assert mask.dtype == bool
    assert mask.tolist() == [bool(e) for e in expected]


def test_keep_mask_fixed_breaks_ties_by_position():
    # three 0.1s tie for the two lowest places: the earlier two go first
    mask = keep_mask([0.3, 0.1, 0.2, 0.1, 0.1], method='fixed', num_pruned=2)
    assert mask.tolist() == [True, False, True, False, True]


# Classic quantile mapping on [0.4, 0.1, 0.3, 0.2], n = 4:
# empirical CDF p = [1, 0.25, 0.75, 0.5]; p = 1 is capped at 1 - 1/(2n) =
# 0.875.
#
# EQM, rate 1: -ln(1 - p) = [ln 8, ln(4/3), ln 4, ln 2]; min-max with range
# ln 8 - ln(4/3) = ln 6 gives [1, 0, ln 3 / ln 6, ln 1.5 / ln 6]
#                          = [1, 0, 0.6131, 0.2263].
#
# GQM, Gamma(2, 1): the inverse of F(x) = 1 - e^-x (1 + x) at
# p = [0.875, 0.25, 0.75, 0.5] is x = [3.6070, 0.9613, 2.6926, 1.6783]
# (test_gamma_quantiles_used_below checks F(x) = p), so after min-max:
# [1, 0, 1.7313/2.6457, 0.7170/2.6457] = [1, 0, 0.6544, 0.2710].
QM_INPUT = [0.4, 0.1, 0.3, 0.2]


def test_gamma_quantiles_used_below():
    x = np.array([3.6070, 0.9613, 2.6926, 1.6783])
    cdf = 1 - np.exp(-x) * (1 + x)
    assert cdf == pytest.approx([0.875, 0.25, 0.75, 0.5], abs=1e-4)


@pytest.mark.parametrize(
    'method, params, tau, expected',
    [
        ('eqm', {}, 0.2, [1, 0, 1, 1]),
        ('eqm', {}, 0.25, [1, 0, 1, 0]),
        ('eqm', {}, 0.62, [1, 0, 0, 0]),
        # the rate cancels in min-max normalisation
        ('eqm', dict(rate=5.0), 0.25, [1, 0, 1, 0]),
        ('gqm', {}, 0.25, [1, 0, 1, 1]),
        ('gqm', {}, 0.28, [1, 0, 1, 0]),
        ('gqm', {}, 0.65, [1, 0, 1, 0]),
        ('gqm', {}, 0.66, [1, 0, 0, 0]),
        # Gamma with shape 1 is the Exponential: the EQM numbers again
        ('gqm', dict(shape=1.0, scale=3.0), 0.25, [1, 0, 1, 0]),
        ('gqm', dict(shape=1.0), 0.62, [1, 0, 0, 0]),
    ])
def test_keep_mask_classic_quantile_mapping(method, params, tau, expected):
    mask = keep_mask(QM_INPUT, method=method, tau=tau, **params)
    assert mask.tolist() == [bool(e) for e in expected]


def test_keep_mask_classic_quantile_mapping_ties():
    # [0.2, 0.2, 0.5]: p = [2/3, 2/3, 1 -> 5/6]; the two tied values map to
    # the same quantile, the minimum, so both score 0.
    assert keep_mask([0.2, 0.5, 0.2], method='eqm', tau=0.1).tolist() == \
        [False, True, False]


def test_keep_mask_agrees_with_ebqm_scores():
    rng = np.random.default_rng(0)
    a = rng.gamma(2.0, 0.1, size=50)
    for tau in (0.0, 0.2, 0.5, 1.0):
        assert np.array_equal(keep_mask(a, tau=tau), ebqm(a) >= tau)


@pytest.mark.parametrize('method', PRUNING_METHODS)
def test_keep_mask_unrankable_or_empty(method):
    params = {'num_pruned': 0} if method == 'fixed' else {}
    empty = keep_mask([], method=method, tau=0.5, **params)
    assert empty.dtype == bool and empty.shape == (0, )
    # one divergence, or all equal: nothing to rank, nothing pruned
    # (threshold compares raw values; 0.7 >= 0.5)
    for divergences in ([0.7], [0.7, 0.7, 0.7]):
        mask = keep_mask(divergences, method=method, tau=0.5, **params)
        assert mask.all()


def test_keep_mask_accepts_torch():
    mask = keep_mask(torch.tensor(A, dtype=torch.float64), tau=0.2)
    assert mask.tolist() == [True, False, True, True, True]


@pytest.mark.parametrize(
    'method, tau, params, match',
    [
        ('foo', 0.2, {}, r"method must be one of \['ebqm', .*\], got 'foo'"),
        ('ebqm', 1.5, {}, r'tau must be in \[0, 1\], got 1.5'),
        ('gqm', -0.1, {}, r'tau must be in \[0, 1\], got -0.1'),
        ('threshold', -1.0, {}, r"tau must be in \[0, inf\) for method "
         r"'threshold'"),
        ('ebqm', 0.2, dict(gamma=1.5), r'gamma must be in \(0, 1\], got 1.5'),
        ('ebqm-sigmoid', 0.2, dict(gamma=0.0), r'gamma must be in \(0, 1\]'),
        ('ebqm', 0.2, dict(alpha=0.0), r'alpha must be a finite number > 0'),
        ('ebqm', 0.2, dict(beta=-2), r'beta must be a finite number > 0'),
        ('ebqm', 0.2, dict(delta=1.0),
         r"unknown parameter\(s\) \['delta'\] for method 'ebqm'; "
         r"allowed: \['alpha', 'beta', 'gamma'\]"),
        ('threshold', 0.2, dict(gamma=0.5),
         r"unknown parameter\(s\) \['gamma'\] for method 'threshold'; "
         r'allowed: \[\]'),
        ('eqm', 0.2, dict(shape=2.0),
         r"unknown parameter\(s\) \['shape'\] for method 'eqm'; "
         r"allowed: \['rate'\]"),
        ('eqm', 0.2, dict(rate=0), r'rate must be a finite number > 0'),
        ('gqm', 0.2, dict(scale=-1), r'scale must be a finite number > 0'),
        ('ebqm-normal', 0.2, dict(std=0), r'std must be a finite number > 0'),
        ('ebqm-normal', 0.2, dict(mean=float('nan')),
         r'mean must be a finite number'),
        ('ebqm-gamma', 0.2, dict(shape=-1), r'shape must be a finite number'),
        ('ebqm-softmax', 0.2, dict(temperature=0),
         r'temperature must be a finite number > 0'),
        ('ebqm-sigmoid', 0.2, dict(steepness=-10),
         r'steepness must be a finite number > 0'),
        ('ebqm-sigmoid', 0.2, dict(centre='middle'),
         r'centre must be a finite number'),
        ('fixed', 0.2, {}, r"method 'fixed' needs num_pruned"),
        ('fixed', 0.2, dict(num_pruned=-1),
         r'num_pruned must be an int >= 0, got -1'),
        ('fixed', 0.2, dict(num_pruned=1.5),
         r'num_pruned must be an int >= 0, got 1.5'),
        ('fixed', 0.2, dict(num_pruned=True),
         r'num_pruned must be an int >= 0, got True'),
    ])
def test_keep_mask_rejects_bad_parameters(method, tau, params, match):
    with pytest.raises(ValueError, match=match):
        keep_mask(A, method=method, tau=tau, **params)


@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -float('inf')])
@pytest.mark.parametrize('method', ['ebqm', 'threshold', 'eqm'])
def test_keep_mask_rejects_non_finite_divergences(method, bad):
    with pytest.raises(ValueError, match=r'divergences must be finite'):
        keep_mask([0.1, bad, 0.3], method=method)


def test_mapped_divergences_are_what_keep_mask_thresholds():
    from mmela.pruning import mapped_divergences
    a = np.array([0.4, 0.1, 0.3, 0.2, 0.9])
    np.testing.assert_array_equal(mapped_divergences(a), ebqm(a))
    np.testing.assert_array_equal(mapped_divergences(a, 'threshold'), a)
    np.testing.assert_array_equal(
        mapped_divergences(a, 'fixed', num_pruned=1), a)
    for method in ('ebqm-sigmoid', 'gqm'):
        np.testing.assert_array_equal(
            keep_mask(a, method, tau=0.3),
            mapped_divergences(a, method) >= 0.3)
    with pytest.raises(ValueError, match='method must be one of'):
        mapped_divergences(a, 'nope')
