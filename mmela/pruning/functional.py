"""The maths of ELA pruning: redundancy (paper Eq. 11) and masks (Algorithm 1).

Pure functions on numpy arrays (torch tensors are accepted and converted), with
no OpenMMLab imports, so they can be checked against hand-computed numbers and
reused outside a training loop.

* :func:`padded_kl` measures how much block ``l+1`` retrieves differently from
  block ``l`` (Eq. 11).
* :func:`ebqm` turns the vector of those divergences into scores in [0, 1]
  (Algorithm 1, Enhanced Beta Quantile Mapping).
* :func:`keep_mask` thresholds the scores of any of the methods compared in
  the paper's ablations (Tables 4-6) into a mask: True keeps the retrieval.

To try a new quantile mapping, write a function ``f(x, **params)`` from the
normalised candidates ``x`` in [0, 1] to scores in [0, 1] and add it to
:data:`EBQM_MAPPINGS`; ``keep_mask(a, method=<its name>)`` then uses it.
"""
import numbers
from typing import Callable, Dict, NamedTuple, Tuple

import numpy as np
from scipy import special, stats

# Distributions handed to padded_kl may come from float32 softmaxes averaged
# over many iterations, so "sums to 1" is checked loosely.
_SUM_TOLERANCE = 1e-4


class Mapping(NamedTuple):
    """A CDF-like map from normalised divergences to pruning scores.

    Attributes:
        fn (Callable): ``fn(x, **params) -> scores``, elementwise.
        defaults (dict): Every parameter of ``fn`` with its default.
        positive (tuple[str]): The parameters that must be > 0.
    """
    fn: Callable[..., np.ndarray]
    defaults: Dict[str, float]
    positive: Tuple[str, ...] = ()


# ---------------------------------------------------------------- mappings --
# EBQM applies these to the min-max normalised candidates x in [0, 1]
# (Algorithm 1 line 6 and the Table 6 ablation). The paper does not give the
# alternatives' parameters; our defaults make each prune, at tau = 0.2, the
# low end of the normalised range as Beta(2, 5) does: below x = 0.14 (Beta),
# 0.16 (Gamma), 0.20 (softmax), 0.29 (Normal), 0.36 (sigmoid).


def _beta_cdf(x, alpha, beta):
    """Beta CDF ``F_Beta(x; alpha, beta)`` (Eq. 17), the paper's choice."""
    return stats.beta.cdf(x, alpha, beta)


def _normal_cdf(x, mean, std):
    """Normal CDF; ``x = 0`` maps to ``Phi(-mean / std)``, not exactly 0."""
    return stats.norm.cdf(x, loc=mean, scale=std)


def _gamma_cdf(x, shape, scale):
    """Gamma CDF (Appendix A notation: shape alpha, scale beta).

    With shape 2 and scale 0.2, ``x = 1`` maps to ``1 - 6 e^-5 = 0.96``.
    """
    return stats.gamma.cdf(x, shape, scale=scale)


def _softmax_over_max(x, temperature):
    """Softmax over the candidates, divided by its largest entry.

    Plain softmax sums to 1, so its entries shrink with the number of
    candidates and a fixed tau would mean different things for different
    networks. Divided by the largest entry, the score is
    ``exp((x - max x) / T) = exp((x - 1) / T)``: the top candidate scores 1
    whatever the count.
    """
    weights = special.softmax(x / temperature)
    return weights / weights.max()


def _sigmoid(x, centre, steepness):
    """Logistic ``1 / (1 + exp(-steepness * (x - centre)))``."""
    return special.expit(steepness * (x - centre))


EBQM_MAPPINGS: Dict[str, Mapping] = {
    'ebqm': Mapping(_beta_cdf, dict(alpha=2.0, beta=5.0),
                    positive=('alpha', 'beta')),
    'ebqm-normal': Mapping(_normal_cdf, dict(mean=0.5, std=0.25),
                           positive=('std', )),
    'ebqm-gamma': Mapping(_gamma_cdf, dict(shape=2.0, scale=0.2),
                          positive=('shape', 'scale')),
    'ebqm-softmax': Mapping(_softmax_over_max, dict(temperature=0.5),
                            positive=('temperature', )),
    'ebqm-sigmoid': Mapping(_sigmoid, dict(centre=0.5, steepness=10.0),
                            positive=('steepness', )),
}

# Classic quantile mapping (Appendix A, Table 5) sends the empirical CDF of all
# divergences through the inverse CDF of a target distribution.


def _gamma_ppf(p, shape, scale):
    """Inverse Gamma CDF (GQM)."""
    return stats.gamma.ppf(p, shape, scale=scale)


def _exponential_ppf(p, rate):
    """Inverse Exponential CDF ``-ln(1 - p) / rate`` (EQM)."""
    return stats.expon.ppf(p, scale=1.0 / rate)


QUANTILE_MAPPINGS: Dict[str, Mapping] = {
    'gqm': Mapping(_gamma_ppf, dict(shape=2.0, scale=1.0),
                   positive=('shape', 'scale')),
    'eqm': Mapping(_exponential_ppf, dict(rate=1.0), positive=('rate', )),
}

PRUNING_METHODS: Tuple[str, ...] = (*EBQM_MAPPINGS, *QUANTILE_MAPPINGS,
                                    'threshold', 'fixed')

_EBQM_DEFAULT_GAMMA = 0.5

# ------------------------------------------------------------ public API --


def padded_kl(p, q, eps: float = 1e-8) -> float:
    """KL divergence between adjacent layers' attention (paper Eq. 11).

    ``p`` (block ``l``) has ``l`` entries and ``q`` (block ``l+1``) has
    ``l+1``. ``p`` is padded with ``eps`` for the layer it cannot see::

        sum_{i<=l} p_i log(p_i / q_i) + eps log(eps / q_{l+1})

    Terms with ``p_i == 0`` contribute 0. Entries of ``q`` are clamped from
    below by ``eps`` before the logarithm: a ``q_i == 0`` where ``p_i > 0``
    would give an infinite divergence, which says "not redundant" as clearly
    as a large finite one and keeps the window average finite. ``p`` is not
    renormalised after padding.

    Args:
        p (array-like): Distribution of block ``l``; numpy array, list or
            torch tensor (any device, any float dtype), 1-D.
        q (array-like): Distribution of block ``l+1``, one entry longer.
        eps (float): The padding, also the floor of ``q``. Default: 1e-8.

    Returns:
        float: The divergence, >= about ``-eps``.

    Raises:
        ValueError: If either argument is not a finite 1-D distribution
            (non-negative, summing to 1 within 1e-4), if ``len(q) !=
            len(p) + 1``, or if ``eps`` is not a finite number > 0.
    """
    _check_positive('eps', eps)
    p = _as_distribution(p, 'p')
    q = _as_distribution(q, 'q')
    if len(q) != len(p) + 1:
        raise ValueError(f'q must have len(p) + 1 = {len(p) + 1} entries, '
                         f'got {len(q)}')
    q = np.maximum(q, eps)
    seen = p > 0
    divergence = np.sum(p[seen] * np.log(p[seen] / q[:-1][seen]))
    return float(divergence + eps * np.log(eps / q[-1]))


def ebqm(divergences,
         gamma: float = _EBQM_DEFAULT_GAMMA,
         alpha: float = 2.0,
         beta: float = 5.0) -> np.ndarray:
    """Enhanced Beta Quantile Mapping (paper Algorithm 1).

    1. ``Q`` = the ``gamma``-quantile of the divergences (``np.quantile``,
       linear interpolation); the candidates are ``S = {a_j <= Q}``.
    2. The candidates are min-max normalised among themselves to [0, 1].
    3. They are mapped through the Beta CDF ``F_Beta(x; alpha, beta)``.

    Divergences above ``Q`` are never pruned: they score 1.0. If all
    candidates are equal (which includes a single candidate) they cannot be
    ranked against each other, so they also score 1.0 and nothing is pruned.
    The paper does not give ``gamma``; 0.5 (at most half the retrievals can
    be pruned in one window) is our default.

    Args:
        divergences (array-like): 1-D, e.g. :func:`padded_kl` of every
            adjacent pair, averaged over a window.
        gamma (float): Quantile that selects the candidates, in (0, 1].
            Default: 0.5.
        alpha (float): Beta shape alpha, > 0. Default: 2.0.
        beta (float): Beta shape beta, > 0. Default: 5.0.

    Returns:
        np.ndarray: float64 scores in [0, 1], same length as the input.

    Raises:
        ValueError: On NaN or inf divergences or a parameter out of range.
    """
    return _ebqm_scores(_as_divergences(divergences), 'ebqm',
                        dict(gamma=gamma, alpha=alpha, beta=beta))


def keep_mask(divergences,
              method: str = 'ebqm',
              tau: float = 0.2,
              **params) -> np.ndarray:
    """Which retrievals to keep, given the divergences of adjacent pairs.

    Entry ``l`` of the mask decides the retrieval of the block that follows
    pair ``l``: it is ``m_{l+1} = 1[score_l >= tau]`` of paper Section 3.4,
    and True keeps the retrieval.

    Methods and their ``params`` (defaults in brackets):

    - ``'ebqm'``: Algorithm 1 (see :func:`ebqm`); keep where the score
      ``>= tau``. ``gamma`` [0.5], ``alpha`` [2.0], ``beta`` [5.0]; the paper
      uses alpha, beta, tau = 5, 1, 0.3 on CIFAR and 2, 5, 0.25 / 0.2 on
      ImageNet / COCO.
    - ``'ebqm-normal'``, ``'ebqm-gamma'``, ``'ebqm-softmax'``,
      ``'ebqm-sigmoid'``: Algorithm 1 with the Beta CDF replaced (Table 6).
      All take ``gamma`` [0.5], plus respectively: Normal CDF ``mean`` [0.5],
      ``std`` [0.25]; Gamma CDF ``shape`` [2.0], ``scale`` [0.2]; softmax
      over the candidates divided by its maximum, i.e.
      ``exp((x - 1) / temperature)``, ``temperature`` [0.5]; logistic
      ``1 / (1 + exp(-steepness (x - centre)))``, ``centre`` [0.5],
      ``steepness`` [10.0].
    - ``'gqm'``, ``'eqm'``: classic quantile mapping (Appendix A, Table 5) of
      all divergences: empirical CDF ``p_i = #{a_j <= a_i} / n``, the inverse
      CDF of a Gamma (``shape`` [2.0], ``scale`` [1.0]) or Exponential
      (``rate`` [1.0]) target, then min-max normalisation to [0, 1]; keep
      where ``>= tau``. The largest divergence has ``p = 1``, whose inverse
      CDF is infinite, so ``p`` is capped at ``1 - 1/(2n)``, half an
      empirical-CDF step below 1. (A tiny cap such as ``1 - 1e-6`` would put
      the largest value so far out that the others crowd near 0: with 16
      divergences under EQM, all of them below 0.2.)
      After min-max normalisation the Gamma ``scale`` and the Exponential
      ``rate`` cancel out; they are accepted to match Appendix A.
    - ``'threshold'``: keep where the raw divergence ``>= tau`` (Table 4).
      Here ``tau`` is in KL units and may be any value in [0, inf).
    - ``'fixed'``: prune exactly the ``num_pruned`` (required, int >= 0)
      lowest divergences, ties broken by position (earlier pruned first),
      and keep the rest (Table 4). ``num_pruned`` larger than the number of
      divergences prunes them all. ``tau`` is not used.

    As in :func:`ebqm`, divergences that cannot be ranked (a single one, or
    all equal) are all kept by the mapping methods.

    Args:
        divergences (array-like): 1-D divergences of adjacent pairs.
        method (str): One of :data:`PRUNING_METHODS`. Default: 'ebqm'.
        tau (float): Threshold, in [0, 1] except for 'threshold'.
            Default: 0.2 (the paper's COCO value).
        **params: The method's parameters listed above.

    Returns:
        np.ndarray: bool mask, same length as the input.

    Raises:
        ValueError: On NaN or inf divergences, an unknown method, an unknown
            parameter for the method, or a parameter out of range.
    """
    _check_method(method)
    _check_tau(tau, method)
    if method == 'fixed':
        params = _resolve_params(method, params, dict(num_pruned=None))
        return _fixed_keep_mask(_as_divergences(divergences),
                                params['num_pruned'])
    return mapped_divergences(divergences, method, **params) >= tau


def mapped_divergences(divergences, method: str = 'ebqm',
                       **params) -> np.ndarray:
    """The values :func:`keep_mask` compares with ``tau``.

    For the mapping methods these are the scores in [0, 1] (non-candidates
    and unrankable divergences score 1.0); for ``'threshold'`` and
    ``'fixed'`` they are the raw divergences. The pruning hook logs them next
    to the divergences. Arguments as :func:`keep_mask`.
    """
    _check_method(method)
    a = _as_divergences(divergences)
    if method in ('threshold', 'fixed'):
        _resolve_params(method, params,
                        dict(num_pruned=None) if method == 'fixed' else {})
        return a
    if method in QUANTILE_MAPPINGS:
        return _quantile_mapping_scores(a, method, params)
    return _ebqm_scores(a, method, params)


# ------------------------------------------------------------- internals --


def _ebqm_scores(a: np.ndarray, method: str, params: dict) -> np.ndarray:
    """Algorithm 1 with the mapping ``EBQM_MAPPINGS[method]``."""
    mapping = EBQM_MAPPINGS[method]
    params = _resolve_params(
        method, params, dict(gamma=_EBQM_DEFAULT_GAMMA, **mapping.defaults))
    gamma = params.pop('gamma')
    if not (_is_real(gamma) and 0 < gamma <= 1):
        raise ValueError(f'gamma must be in (0, 1], got {gamma!r}')
    _check_mapping_params(mapping, params)

    scores = np.ones_like(a)
    if a.size == 0:
        return scores
    candidates = a <= np.quantile(a, gamma)
    normalised = _min_max(a[candidates])
    if normalised is not None:
        scores[candidates] = mapping.fn(normalised, **params)
    return scores


def _quantile_mapping_scores(a: np.ndarray, method: str,
                             params: dict) -> np.ndarray:
    """Appendix A's quantile mapping, normalised to [0, 1]."""
    mapping = QUANTILE_MAPPINGS[method]
    params = _resolve_params(method, params, mapping.defaults)
    _check_mapping_params(mapping, params)

    n = a.size
    if n == 0:
        return np.ones_like(a)
    # Empirical CDF p_i = #{a_j <= a_i} / n: with the divergences sorted,
    # the count is the right insertion point of a_i.
    ecdf = np.searchsorted(np.sort(a), a, side='right') / n
    mapped = mapping.fn(np.minimum(ecdf, 1 - 1 / (2 * n)), **params)
    normalised = _min_max(mapped)
    return np.ones_like(a) if normalised is None else normalised


def _fixed_keep_mask(a: np.ndarray, num_pruned) -> np.ndarray:
    if num_pruned is None:
        raise ValueError("method 'fixed' needs num_pruned (an int >= 0)")
    if not (_is_integer(num_pruned) and num_pruned >= 0):
        raise ValueError(f'num_pruned must be an int >= 0, got '
                         f'{num_pruned!r}')
    keep = np.ones(a.shape, dtype=bool)
    keep[np.argsort(a, kind='stable')[:num_pruned]] = False
    return keep


def _min_max(x: np.ndarray):
    """``x`` scaled to [0, 1], or None when its range is zero (or empty)."""
    if x.size == 0 or x.max() == x.min():
        return None
    return (x - x.min()) / (x.max() - x.min())


def _resolve_params(method: str, given: dict, defaults: dict) -> dict:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f'unknown parameter(s) {unknown} for method '
                         f'{method!r}; allowed: {sorted(defaults)}')
    return {**defaults, **given}


def _check_mapping_params(mapping: Mapping, params: dict) -> None:
    for name, value in params.items():
        if name in mapping.positive:
            _check_positive(name, value)
        elif not (_is_real(value) and np.isfinite(value)):
            raise ValueError(f'{name} must be a finite number, got {value!r}')


def _check_method(method: str) -> None:
    if method not in PRUNING_METHODS:
        raise ValueError(f'method must be one of {list(PRUNING_METHODS)}, '
                         f'got {method!r}')


def _check_tau(tau, method: str) -> None:
    if method == 'threshold':
        if not (_is_real(tau) and 0 <= tau < np.inf):
            raise ValueError(f"tau must be in [0, inf) for method "
                             f"'threshold' (KL units), got {tau!r}")
    elif not (_is_real(tau) and 0 <= tau <= 1):
        raise ValueError(f'tau must be in [0, 1], got {tau!r}')


def _check_positive(name: str, value) -> None:
    if not (_is_real(value) and 0 < value < np.inf):
        raise ValueError(f'{name} must be a finite number > 0, got {value!r}')


def _is_real(value) -> bool:
    # bool is an int subclass; True as a shape parameter is a config mistake.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _as_float64(values, name: str) -> np.ndarray:
    """A finite 1-D float64 copy of a list, numpy array or torch tensor."""
    if hasattr(values, 'detach'):  # a torch.Tensor, without importing torch
        values = values.detach().cpu().double().numpy()
    array = np.array(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f'{name} must be 1-D, got shape {array.shape}')
    if not np.all(np.isfinite(array)):
        raise ValueError(f'{name} must be finite, got NaN or inf')
    return array


def _as_divergences(values) -> np.ndarray:
    return _as_float64(values, 'divergences')


def _as_distribution(values, name: str) -> np.ndarray:
    dist = _as_float64(values, name)
    if np.any(dist < 0):
        raise ValueError(f'{name} must be non-negative, got min '
                         f'{dist.min():g}')
    if abs(dist.sum() - 1) > _SUM_TOLERANCE:
        raise ValueError(f'{name} must sum to 1 (within {_SUM_TOLERANCE:g}), '
                         f'got {dist.sum():g}')
    return dist
