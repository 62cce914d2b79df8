"""Property tests (hypothesis) of the center-loss ops against Wen et al. 2016, Eq. 2-4."""

import keras
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import numpy_center_loss, numpy_center_update, to_numpy
from lossweave import ops as lw_ops

FEATURE_DTYPES = ["float32", "float16", "bfloat16"]
LABEL_DTYPES = ["int32", "int64", "float32"]
# float16 rounds features to 2^-11 relative; bfloat16 to 2^-8.
ATOL = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 2e-2}
EXAMPLES = 12


@st.composite
def batches(draw, multiplicity=None):
    """(features as float64 after rounding to dtype, labels, centers, alpha, dtypes)."""
    # Few distinct shapes: JAX compiles every op once per shape.
    classes = draw(st.sampled_from([1, 3, 6]))
    dim = draw(st.sampled_from([1, 4]))
    kind = multiplicity or draw(st.sampled_from(["random", "same", "distinct"]))
    if kind == "distinct":
        batch = draw(st.sampled_from(sorted({1, classes})))
        labels = np.array(draw(st.permutations(range(classes)))[:batch])
    else:
        batch = draw(st.sampled_from([1, 5, 12]))
        if kind == "same":
            labels = np.full(batch, draw(st.integers(0, classes - 1)))
        else:
            labels = np.array(draw(st.lists(st.integers(0, classes - 1), min_size=batch, max_size=batch)))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    dtype = draw(st.sampled_from(FEATURE_DTYPES))
    x = rng.normal(scale=2.0, size=(batch, dim)).astype("float32")
    x = to_numpy(keras.ops.cast(keras.ops.cast(x, dtype), "float32")).astype("float64")  # what the op sees
    c = rng.normal(size=(classes, dim)).astype("float32")
    alpha = draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0, width=32))
    label_dtype = draw(st.sampled_from(LABEL_DTYPES))
    return x, labels, c, float(alpha), dtype, label_dtype


def _inputs(x, labels, dtype, label_dtype):
    return keras.ops.cast(x.astype("float32"), dtype), keras.ops.convert_to_tensor(labels.astype(label_dtype))


@settings(max_examples=EXAMPLES, deadline=None)
@given(batches())
def test_update_equals_numpy_reference(case):
    x, y, c, alpha, dtype, label_dtype = case
    features, labels = _inputs(x, y, dtype, label_dtype)
    got = to_numpy(lw_ops.center_update(features, labels, c, alpha))
    np.testing.assert_allclose(got, numpy_center_update(x, y, c.astype("float64"), alpha), atol=ATOL["float32"] * 10)
    loss, new = lw_ops.center_loss_and_update(features, labels, c, alpha)
    np.testing.assert_allclose(to_numpy(new), got, atol=1e-6)
    assert abs(float(to_numpy(loss)) - numpy_center_loss(x, y, c.astype("float64"))) <= 1e-4 * (
        1 + numpy_center_loss(x, y, c.astype("float64"))
    )


@settings(max_examples=EXAMPLES, deadline=None)
@given(batches())
def test_absent_classes_never_move_and_alpha_zero_changes_nothing(case):
    x, y, c, alpha, dtype, label_dtype = case
    features, labels = _inputs(x, y, dtype, label_dtype)
    new = to_numpy(lw_ops.center_update(features, labels, c, alpha))
    absent = np.setdiff1d(np.arange(len(c)), y)
    np.testing.assert_array_equal(new[absent], c[absent])
    still = to_numpy(lw_ops.center_update(features, labels, c, 0.0))
    np.testing.assert_array_equal(still, c)


@settings(max_examples=EXAMPLES, deadline=None)
@given(batches(), st.randoms(use_true_random=False))
def test_permuting_the_batch_does_not_change_update_or_loss(case, random):
    x, y, c, alpha, dtype, label_dtype = case
    order = list(range(len(y)))
    random.shuffle(order)
    a = _inputs(x, y, dtype, label_dtype)
    b = _inputs(x[order], y[order], dtype, label_dtype)
    np.testing.assert_allclose(
        to_numpy(lw_ops.center_update(*b, c, alpha)), to_numpy(lw_ops.center_update(*a, c, alpha)), atol=1e-5
    )
    np.testing.assert_allclose(
        float(to_numpy(lw_ops.center_loss(*b, c))), float(to_numpy(lw_ops.center_loss(*a, c))), rtol=1e-5
    )
    # The per-row form: indices and deltas follow the rows.
    idx_a, d_a = lw_ops.center_update_rows(*a, c, alpha)
    idx_b, d_b = lw_ops.center_update_rows(*b, c, alpha)
    np.testing.assert_array_equal(to_numpy(idx_b), to_numpy(idx_a)[order])
    np.testing.assert_allclose(to_numpy(d_b), to_numpy(d_a)[order], atol=1e-6)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    st.sampled_from([1, 3, 6]).flatmap(lambda k: st.tuples(st.just(k), st.integers(0, k - 1))),
    st.sampled_from([1, 4]),
    st.integers(0, 2**31 - 1),
    st.sampled_from(FEATURE_DTYPES),
    st.sampled_from(LABEL_DTYPES),
)
def test_alpha_one_with_one_sample_goes_halfway(classes_label, dim, seed, dtype, label_dtype):
    """Eq. 4 with n_j = 1, alpha = 1: c - (c - x) / (1 + 1), the midpoint."""
    classes, label = classes_label
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1, dim)).astype("float32")
    c = rng.normal(size=(classes, dim)).astype("float32")
    features, labels = _inputs(x, np.array([label]), dtype, label_dtype)
    seen = to_numpy(keras.ops.cast(features, "float32")).astype("float64")
    new = to_numpy(lw_ops.center_update(features, labels, c, 1.0))
    np.testing.assert_allclose(new[label], (c[label] + seen[0]) / 2, atol=1e-6)
    idx, deltas = lw_ops.center_update_rows(features, labels, c, 1.0)
    assert int(to_numpy(idx)[0]) == label
    np.testing.assert_allclose(to_numpy(deltas)[0], (seen[0] - c[label]) / 2, atol=1e-6)


@settings(max_examples=EXAMPLES, deadline=None)
@given(batches(), st.booleans())
def test_loss_is_nonnegative_and_zero_iff_features_are_their_centers(case, at_centers):
    x, y, c, _, dtype, label_dtype = case
    if at_centers:
        # Features equal to their centers (rounded to the features' dtype first).
        c = to_numpy(keras.ops.cast(keras.ops.cast(c, dtype), "float32"))
        x = c[y].astype("float64")
    features, labels = _inputs(x, y, dtype, label_dtype)
    loss = float(to_numpy(lw_ops.center_loss(features, labels, c)))
    assert loss >= 0.0
    reference = numpy_center_loss(x, y, c.astype("float64"))
    assert (loss == 0.0) == (reference == 0.0)
    assert (loss == 0.0) == at_centers or (not at_centers and reference == 0.0)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    st.sampled_from([1, 3, 6]).flatmap(
        lambda k: st.tuples(st.just(k), st.lists(st.integers(0, k - 1), min_size=4, max_size=4))
    ),
    st.sampled_from(["sparse", "column", "one_hot"]),
    st.sampled_from(LABEL_DTYPES),
)
def test_class_indices_of_every_layout(classes_labels, layout, dtype):
    classes, labels = classes_labels
    labels = np.array(labels)
    if layout == "column":
        given_labels = labels[:, None]
    elif layout == "one_hot":
        if classes == 1:
            return  # width 1 is read as a sparse column
        given_labels = np.eye(classes)[labels]
    else:
        given_labels = labels
    idx, valid = lw_ops.class_indices(given_labels.astype(dtype), classes)
    np.testing.assert_array_equal(to_numpy(idx), labels)
    assert to_numpy(valid).all()
    # Out of range and negative sparse labels are flagged, and point at class 0.
    bad = np.array([classes, -1, classes + 3]).astype(dtype)
    idx, valid = lw_ops.class_indices(bad, classes)
    assert not to_numpy(valid).any()
    np.testing.assert_array_equal(to_numpy(idx), [0, 0, 0])
