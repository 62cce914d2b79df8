"""TensorFlow Addons' metric-learning losses (end-of-life, not installable beside Keras 3) against ours.

Each TF Addons function is transcribed to NumPy from ``tensorflow_addons/losses``
(``contrastive.py``, ``npairs.py``, ``lifted.py``, ``metric_learning.py``'s
``pairwise_distance``; the triplet losses are in ``docs/pair_losses.md``'s
example and ``tests/test_pairs.py``) and compared with the lossweave term the
migration table of ``docs/pair_losses.md`` names, on the same inputs. The
formulas are backend-independent: one backend; the cross-backend agreement
test carries our side to the others.
"""

import numpy as np
import pytest

import lossweave as lw
from tests.conftest import one_backend

pytestmark = one_backend

_RNG = np.random.default_rng(3)
X = _RNG.normal(size=(12, 6)).astype("float32")
LABELS = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 3])


def tfa_pairwise_distance(x):
    """``metric_learning.pairwise_distance(x, squared=False)``: Euclidean, 0 on the diagonal."""
    sq = np.maximum((x ** 2).sum(1)[:, None] + (x ** 2).sum(1)[None] - 2.0 * x @ x.T, 0.0)
    d = np.where(sq <= 0.0, 0.0, np.sqrt(sq))
    return d * (1.0 - np.eye(len(x)))


def tfa_contrastive_loss(same, distance, margin=1.0):
    """``contrastive_loss``: one value per given pair; a Keras ``Loss`` takes their mean."""
    return same * distance ** 2 + (1.0 - same) * np.maximum(margin - distance, 0.0) ** 2


def tfa_npairs_loss(labels, similarity):
    """``npairs_loss``: softmax cross-entropy of each row of ``a @ b.T`` against its same-label row, normalised."""
    target = (labels[:, None] == labels[None]).astype("float64")
    target /= target.sum(1, keepdims=True)
    logits = similarity - similarity.max(1, keepdims=True)
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return float(-(target * log_softmax).sum(1).mean())


def tfa_lifted_struct_loss(labels, x, margin=1.0):
    """``lifted_struct_loss``: Oh Song et al. Eq. 4 with the Caffe layer's shared row maxima."""
    d = tfa_pairwise_distance(x.astype("float64"))
    same = labels[:, None] == labels[None]
    diff, neg = margin - d, (~same).astype("float64")
    low = diff.min(1, keepdims=True)
    row_max = ((diff - low) * neg).max(1, keepdims=True) + low
    pair_max = np.maximum(row_max, row_max.T)
    # loss_exp_left[i, j] = sum_k exp(diff[j, k] - pair_max[i, j]) neg[j, k]
    left = np.einsum("ijk,jk->ij", np.exp(diff[None] - pair_max[:, :, None]), neg)
    loss = pair_max + np.log(left + left.T) + d
    positives = same.astype("float64") - np.eye(len(labels))
    return float(0.25 * (np.maximum(loss * positives, 0.0) ** 2).sum() / (positives.sum() / 2.0))


def test_contrastive_on_given_pairs_is_twice_ours():
    """TF Addons drops Hadsell et al.'s 1/2 (Eq. 4): its value is twice ``SiameseContrastiveLoss``'s."""
    left, right = X[:6], X[6:]
    same = np.array([1, 0, 1, 0, 0, 1], "float32")
    distance = np.sqrt(((left - right) ** 2).sum(1))
    expected = float(tfa_contrastive_loss(same, distance).mean())
    ours = lw.terms.SiameseContrastiveLoss(target="same")((left, right), same)
    np.testing.assert_allclose(2.0 * float(ours), expected, rtol=1e-5)


def test_npairs_equals_ours_on_interleaved_pairs():
    """``npairs_loss(y, a @ b.T)`` on pairs of distinct labels is ``NPairsLoss(l2_reg=0)`` on ``[a0, b0, a1, ...]``."""
    a, b = X[:6], X[6:]
    pair_labels = np.arange(6)
    expected = tfa_npairs_loss(pair_labels, a.astype("float64") @ b.T.astype("float64"))
    batch = np.stack([a, b], axis=1).reshape(12, -1)
    got = float(lw.terms.NPairsLoss(l2_reg=0.0)(batch, np.repeat(pair_labels, 2)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("margin", [1.0, 3.0])
def test_lifted_struct_equals_ours(margin):
    """Every anchor has a negative: TF Addons' lifted_struct_loss is ``LiftedStructureLoss(margin)``."""
    expected = tfa_lifted_struct_loss(LABELS, X, margin)
    assert expected > 0.0
    got = float(lw.terms.LiftedStructureLoss(margin=margin)(X, LABELS))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
