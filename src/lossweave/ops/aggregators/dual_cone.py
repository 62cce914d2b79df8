"""UPGrad and DualProj (Quinton & Rey 2024): projections onto the dual cone of the term gradients."""

import numpy as np
from keras import ops

from lossweave import arguments
from lossweave.ops.aggregators._common import apply_weights, as_gramian
from lossweave.ops.aggregators._qp import lower_bounded_qp


def _preference(what, pref, k):
    """``(K,)`` float32 preferences: ``1/K`` each by default; concrete ones are checked."""
    if pref is None:
        return ops.full((k,), 1.0 / k, dtype="float32")
    if not ops.is_tensor(pref):
        values = np.asarray(pref, dtype="float64")
        if values.shape != (k,) or not np.all(np.isfinite(values)) or values.min() < 0 or values.max() <= 0:
            raise ValueError(
                f"{what}: received pref={values.tolist()!r}; expected K = {k} finite weights >= 0, "
                f"not all 0, in the order of the gramian's rows (None: 1/K each, the paper's mean)."
            )
    pref = ops.cast(ops.convert_to_tensor(pref), "float32")
    if tuple(pref.shape) != (k,):
        raise ValueError(f"{what}: received pref of shape {tuple(pref.shape)}; expected ({k},), one per term.")
    return pref


def dual_cone_gramian(gramian, norm_eps=1e-4, reg_eps=1e-4):
    """The Gramian the dual-cone QPs are solved on: torchjd's normalisation and regularisation.

    ``G / tr(G) + reg_eps I``, or ``reg_eps I`` when ``tr(G) < norm_eps``
    (``normalize`` and ``regularize`` of torchjd's ``_utils/gramian.py``).
    Dividing by the trace, the squared Frobenius norm of the Jacobian,
    changes no solution; it makes ``reg_eps`` relative, so that the QP is
    positive definite whatever the gradients' scale. The ridge is the
    Gramian of the Jacobian with ``sqrt(reg_eps) I`` appended: the
    projection is the exact one for those augmented gradients, and the
    update is non-conflicting up to it, ``g_k . d >= -reg_eps tr(G) w_k``.

    Args:
        gramian: ``(K, K)`` Gramian of the term gradients.
        norm_eps: below this trace the gradients count as zero.
        reg_eps: the ridge, relative to the trace.

    Returns:
        ``(K, K)`` float32, symmetric positive definite.

    Example:
        >>> import numpy as np
        >>> np.round(np.asarray(dual_cone_gramian([[3., 1.], [1., 1.]], reg_eps=0.5)), 3).tolist()
        [[1.25, 0.25], [0.25, 0.75]]
    """
    gramian = as_gramian(gramian, "dual_cone_gramian")
    norm_eps = arguments.number(norm_eps, "norm_eps", "dual_cone_gramian", low=0.0)
    # > 0: the solver needs a positive definite Gramian (zero, duplicated and linearly
    # dependent gradients make it singular).
    reg_eps = arguments.positive(reg_eps, "reg_eps", "dual_cone_gramian")
    k = gramian.shape[0]
    trace = ops.sum(ops.diagonal(gramian))
    usable = ops.logical_and(trace >= norm_eps, trace > 0)  # norm_eps = 0: no 0 / 0
    normalised = ops.where(usable, gramian / ops.where(usable, trace, ops.ones_like(trace)), ops.zeros_like(gramian))
    return normalised + reg_eps * ops.eye(k)


def upgrad_weights(gramian, pref=None, norm_eps=1e-4, reg_eps=1e-4):
    """UPGrad weights: the mean of each gradient's projection onto the dual cone of all of them.

    Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization",
    arXiv:2406.16232 (2024). The projection onto the dual cone of the rows of
    J is ``pi_J(x) = argmin_{y: J y >= 0} ||y - x||^2`` (Eq. 3), and
    ``A_UPGrad(J) = 1/K sum_i pi_J(g_i)`` (Eq. 4). By Prop. 1 (Eq. 5),
    ``pi_J(J^T u) = J^T w`` with ``w = argmin_{v >= u} v^T G v``, so with
    ``w_i`` the solution for ``u = e_i`` the weights are ``1/K sum_i w_i``
    (Eq. 6); a preference vector ``p`` replaces the mean by ``sum_i p_i
    w_i`` (``u = p_i e_i``), as the paper allows and torchjd implements.
    The update is non-conflicting (``J d >= 0``), linear under scaling (a
    positive rescaling of a row rescales its projection) and weighted.

    The QPs are solved on ``dual_cone_gramian(G, norm_eps, reg_eps)``
    (torchjd's ``UPGradWeighting``: ``G / tr(G) + reg_eps I``, with its
    defaults), so the update is non-conflicting up to the ridge:
    ``g_k . d >= -reg_eps tr(G) w_k``, and linear under scaling only up to
    it: the ridge is relative to the trace, so it weighs on a gradient whose
    squared norm nears ``reg_eps`` of the total (the update moved 6 % from
    linear with norms spread over e^4; 3e-4 with ``reg_eps = 1e-7``).
    When ``tr(G) < norm_eps`` (every
    gradient tiny, in absolute terms) the weights are ``p`` itself, the mean:
    lower ``norm_eps`` for models whose gradients are that small.

    The solver (``lossweave.ops.aggregators._qp``) runs inside the compiled
    step: for K <= 8 exactly, by enumerating the 2^K faces of ``v >= u`` in
    one batched ``ops.solve`` (no loop); above, Lawson & Hanson's active-set
    method, exact when it stops (at most 1.8 K iterations measured, budget
    3 K). Accuracy, measured in float32 against scipy's NNLS in float64 over
    random Jacobians (conflicting, aligned, with a zero, a duplicated row,
    rank 2; 3-1000 parameters), K = 2..16: the update within 1.5e-6 of
    ``max_k ||g_k||`` and ``min_k g_k . d`` within 5e-8 of
    ``max_k ||g_k||^2``; the weights themselves within 3e-4 of their largest
    at K <= 8 and 2e-3 at K = 16, the float32 limit of the ridge's condition
    number (1e4) along directions the update does not see. Time of one call
    at K = 2 / 4 / 6 / 10 (best of 3 x 100, two loaded CPU cores): 0.015 /
    0.024 / 0.23 / 0.36 ms in ``jax.jit``, 1.0 / 0.7 / 1.9 / 2.0 ms in
    ``tf.function``, 1.5 / 0.9 / 1.1 / 7.4 ms in PyTorch (eager). The
    weights are constants for autodiff.

    Args:
        gramian: ``(K, K)`` Gramian ``G_ij = g_i . g_j`` of the term gradients.
        pref: ``(K,)`` preferences ``>= 0`` (None: ``1/K`` each, the paper's mean).
        norm_eps: trace below which the gradients count as zero (torchjd: 1e-4).
        reg_eps: ridge relative to the trace, ``> 0`` (torchjd: 1e-4).

    Returns:
        ``(K,)`` float32 weights, each ``>= p_k``.

    Example:
        >>> g = [[4., -2.], [-2., 2.]]        # g_1 = (2, 0), g_2 = (-1, 1): they conflict
        >>> [round(float(w), 3) for w in upgrad_weights(g)]
        [0.75, 1.0]
    """
    gramian = ops.stop_gradient(as_gramian(gramian, "upgrad_weights"))
    k = gramian.shape[0]
    pref = _preference("upgrad_weights", pref, k)
    regularised = dual_cone_gramian(gramian, norm_eps, reg_eps)
    # Row i: the projection of p_i g_i, u = p_i e_i.
    return ops.sum(lower_bounded_qp(regularised, pref[:, None] * ops.eye(k)), axis=0)


def upgrad(jacobian, pref=None, norm_eps=1e-4, reg_eps=1e-4):
    """The UPGrad update ``upgrad_weights(J J^T, ...) @ J`` (Quinton & Rey 2024, Eq. 4).

    Arguments as in ``upgrad_weights``.

    Example:
        >>> [round(float(v), 3) for v in upgrad([[2., 0.], [-1., 1.]])]
        [0.5, 1.0]
    """
    return apply_weights(upgrad_weights, jacobian, "upgrad", pref=pref, norm_eps=norm_eps, reg_eps=reg_eps)


def dualproj_weights(gramian, pref=None, norm_eps=1e-4, reg_eps=1e-4):
    """DualProj weights: the mean gradient projected onto the dual cone of the gradients.

    Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization",
    arXiv:2406.16232 (2024), Appendix C.3, Eq. 29: ``A_DualProj(J) = 1/K
    pi_J(J^T 1)``, the projection of the mean (``pi_J`` of Eq. 3), first
    proposed for continual learning by Lopez-Paz & Ranzato, "Gradient
    Episodic Memory", NeurIPS 2017, Eq. 11. By Prop. 1 the weights are
    ``argmin_{v >= p} v^T G v`` for ``p = 1/K`` (or a preference vector,
    torchjd's ``pref_vector``). Non-conflicting and weighted; not linear
    under scaling (the paper's counter-example is in the tests).

    Same Gramian, solver, accuracy and timing as ``upgrad_weights`` (one
    QP instead of K).

    Args:
        gramian: ``(K, K)`` Gramian of the term gradients.
        pref: ``(K,)`` weights of the combination that is projected, ``>= 0``
            (None: ``1/K`` each, the mean).
        norm_eps: trace below which the gradients count as zero (torchjd: 1e-4).
        reg_eps: ridge relative to the trace, ``> 0`` (torchjd: 1e-4).

    Returns:
        ``(K,)`` float32 weights, each ``>= p_k``.

    Example:
        >>> g = [[4., -2.], [-2., 2.]]        # g_1 = (2, 0), g_2 = (-1, 1)
        >>> [round(float(w), 2) for w in dualproj_weights(g)]
        [0.5, 0.5]
        >>> g = [[4., -8.], [-8., 32.]]       # g_1 = (2, 0), g_2 = (-4, 4): the mean conflicts
        >>> [round(float(w), 2) for w in dualproj_weights(g)]
        [1.0, 0.5]
    """
    gramian = ops.stop_gradient(as_gramian(gramian, "dualproj_weights"))
    pref = _preference("dualproj_weights", pref, gramian.shape[0])
    regularised = dual_cone_gramian(gramian, norm_eps, reg_eps)
    return lower_bounded_qp(regularised, pref[None])[0]


def dualproj(jacobian, pref=None, norm_eps=1e-4, reg_eps=1e-4):
    """The DualProj update ``dualproj_weights(J J^T, ...) @ J`` (Quinton & Rey 2024, Eq. 29).

    Arguments as in ``dualproj_weights``.

    Example:
        >>> [round(float(v), 2) + 0.0 for v in dualproj([[2., 0.], [-4., 4.]])]   # the paper's a = 2
        [0.0, 2.0]
    """
    return apply_weights(dualproj_weights, jacobian, "dualproj", pref=pref, norm_eps=norm_eps, reg_eps=reg_eps)
