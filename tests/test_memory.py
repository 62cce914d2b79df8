"""CrossBatchMemory (XBM, Wang et al., CVPR 2020): the ring buffer and the pairs against it."""

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import one_backend, to_numpy
from test_pairs import np_contrastive, np_triplet

DIM = 3


class RingBuffer:
    """The memory as a NumPy queue: the last `size` rows written, oldest overwritten first."""

    def __init__(self, size):
        self.x = np.zeros((size, DIM))
        self.y = -np.ones(size, int)
        self.position, self.filled, self.size = 0, 0, size

    def write(self, x, y):
        for row, label in zip(x, y):
            self.x[self.position], self.y[self.position] = row, label
            self.position = (self.position + 1) % self.size
            self.filled = min(self.filled + 1, self.size)

    def reference(self, x, y):
        """The batch, then the filled slots (in slot order), as the wrapper concatenates them."""
        filled = np.arange(self.size) < self.filled
        return (np.concatenate([x, self.x]), np.concatenate([y, self.y]),
                np.concatenate([np.ones(len(x), bool), filled]))


def _batch(n, seed, classes=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, DIM)).astype("float32"), rng.integers(0, classes, n)


def _state(term):
    return (to_numpy(term.memory_embeddings).copy(), to_numpy(term.memory_labels).copy(),
            int(to_numpy(term.position)), int(to_numpy(term.filled)))


def _assert_equal_to(term, ring):
    x, y, position, filled = _state(term)
    np.testing.assert_allclose(x, ring.x, rtol=1e-6, atol=1e-6)
    assert y.tolist() == ring.y.tolist() and position == ring.position and filled == ring.filled


@pytest.mark.parametrize("batch", [3, 7])
def test_ring_buffer_wraps_around(batch):
    term = lw.terms.CrossBatchMemory(lw.terms.ContrastiveLoss(), memory_size=5)
    ring = RingBuffer(5)
    for step in range(4):  # 12 or 28 rows through 5 slots
        x, y = _batch(batch, seed=step)
        term(x, y, training=True)
        ring.write(x, y)
        _assert_equal_to(term, ring)
    assert to_numpy(term.memory_embeddings).dtype == np.float32
    assert to_numpy(term.memory_labels).dtype == np.int32


CASES = {
    "contrastive": (lambda: lw.terms.ContrastiveLoss(neg_margin=1.5),
                    lambda x, y, **ref: np_contrastive(x, y, neg_margin=1.5, **ref)),
    "semi-hard": (lambda: lw.terms.TripletLoss(margin=0.5),
                  lambda x, y, **ref: np_triplet(x, y, 0.5, "semi-hard", **ref)),
    "batch-hard": (lambda: lw.terms.TripletLoss(mining="batch-hard", soft=True),
                   lambda x, y, **ref: np_triplet(x, y, mining="batch-hard", soft=True, **ref)),
    "batch-all": (lambda: lw.terms.TripletLoss(mining="batch-all", distance="squared_euclidean"),
                  lambda x, y, **ref: np_triplet(x, y, mining="batch-all", metric="squared_euclidean", **ref)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_pairs_against_the_memory_equal_the_reference_on_the_concatenated_set(name):
    make, reference = CASES[name]
    term = lw.terms.CrossBatchMemory(make(), memory_size=8)
    ring = RingBuffer(8)
    for step in range(3):  # empty memory, partly filled, wrapped
        x, y = _batch(5, seed=10 + step)
        w = np.random.default_rng(step).uniform(0.5, 2.0, 5)
        ref_x, ref_y, ref_mask = ring.reference(x, y)
        expected = reference(x, y, w=w, ref_x=ref_x, ref_y=ref_y, ref_mask=ref_mask)
        got = float(to_numpy(term(x, y, sample_weight=w, training=True)))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        ring.write(x, y)
    # The first step, with an empty memory, is the wrapped term's in-batch loss.
    fresh = lw.terms.CrossBatchMemory(make(), memory_size=8)
    x, y = _batch(5, seed=10)
    np.testing.assert_allclose(float(to_numpy(fresh(x, y, training=True))), float(to_numpy(make()(x, y))),
                               rtol=1e-5, atol=1e-6)


def test_no_write_on_a_failed_check_and_none_outside_training():
    term = lw.terms.CrossBatchMemory(lw.terms.TripletLoss(mining="batch-hard"), memory_size=6)
    x, y = _batch(4, seed=0)
    term(x, y, training=True)
    before = _state(term)
    bad_labels = np.array([0, -1, 1, 2])
    with pytest.raises(lw.InvalidInputError, match=r"1 row\(s\) with an invalid label \(first: -1(\.0)?\)"):
        term(x, bad_labels, training=True)
    bad_x = x.copy()
    bad_x[1, 0] = np.inf
    with pytest.raises(lw.InvalidInputError, match=r"1 row\(s\) with NaN/Inf features"):
        term(bad_x, y, training=True)
    term(x + 1.0, y, training=False)  # evaluation reads the memory, writes nothing
    after = _state(term)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_rows_of_weight_zero_are_stored_as_no_partner():
    term = lw.terms.CrossBatchMemory(lw.terms.ContrastiveLoss(), memory_size=4)
    x, y = _batch(3, seed=1)
    term(x, y, sample_weight=np.array([1.0, 0.0, 1.0]), training=True)
    _, labels, position, filled = _state(term)
    assert labels.tolist() == [y[0], -1, y[2], -1] and (position, filled) == (3, 3)
    # missing= labels get weight 0: the same.
    missing = lw.terms.CrossBatchMemory(lw.terms.ContrastiveLoss(), memory_size=4, missing=-1)
    missing(x, np.array([y[0], -1, y[2]]), training=True)
    assert to_numpy(missing.memory_labels).tolist() == [y[0], -1, y[2], -1]


@one_backend
def test_terms_without_a_reference_set_are_refused():
    for term in (lw.terms.LiftedStructureLoss(), lw.terms.NPairsLoss(),
                 lw.terms.SiameseContrastiveLoss(target="same"), lw.terms.CenterLoss(3)):
        with pytest.raises(ValueError, match=r"does not take a reference set"):
            lw.terms.CrossBatchMemory(term, memory_size=4)
    with pytest.raises(ValueError, match=r"`memory_size` must be an int >= 1; received 0"):
        lw.terms.CrossBatchMemory(lw.terms.TripletLoss(), memory_size=0)


@one_backend
def test_config_nests_the_wrapped_term():
    term = lw.terms.CrossBatchMemory(lw.terms.TripletLoss(margin=0.3, mining="batch-all"), memory_size=16,
                                     name="xbm")
    config = term.get_config()
    assert config["term"]["class_name"] == "TripletLoss" and config["memory_size"] == 16
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(term))
    assert type(clone.term) is lw.terms.TripletLoss and clone.term.get_config() == term.term.get_config()
    assert clone.get_config() == config


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    y = np.tile(np.arange(4), n // 4)
    return (rng.normal(size=(n, 6)) + 2.0 * np.eye(6)[y]).astype("float32"), y


def _objective():
    inputs = keras.Input((6,))
    model = keras.Model(inputs, {"embedding": keras.layers.Dense(DIM)(inputs)})
    terms = {
        "xbm": lw.terms.CrossBatchMemory(lw.terms.ContrastiveLoss(), memory_size=40, name="xbm"),
        "center": lw.terms.CenterLoss(num_classes=4),
    }
    objective = lw.Objective(model, terms, weighting=lw.weighting.Fixed({"center": 0.1}))
    objective.compile(optimizer=keras.optimizers.Adam(0.01))
    return objective


def test_trains_beside_center_loss_skips_a_failed_step_and_survives_a_keras_round_trip(tmp_path):
    objective = _objective()
    x, y = _data()
    history = objective.fit(x, {"label": y}, epochs=3, batch_size=16, verbose=0, shuffle=False)
    assert np.all(np.isfinite(history.history["loss/xbm"]))
    assert history.history["loss/xbm"][-1] < history.history["loss/xbm"][0]
    xbm = objective.terms["xbm"]
    x_mem, y_mem, position, filled = _state(xbm)
    assert filled == 40 and position == (9 * 16) % 40  # 9 steps of 16 rows wrapped the 40 slots
    # The memory holds the last 40 embeddings the model produced (from before each step's update).
    assert set(y_mem.tolist()) <= set(range(4))
    # A step whose check fails writes nothing (the compiled step of the same objective).
    before = _state(xbm)
    bad = y.astype("float32")
    bad[3] = 1.5
    with pytest.raises(lw.InvalidInputError, match=r"CrossBatchMemory 'xbm'.*first: 1\.5"):
        objective.fit(x[:16], {"label": bad[:16]}, epochs=1, batch_size=16, verbose=0)
    for a, b in zip(before, _state(xbm)):
        np.testing.assert_array_equal(a, b)
    path = str(tmp_path / "xbm.keras")
    objective.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(_state(xbm), _state(loaded.terms["xbm"])):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(to_numpy(loaded.terms["center"].centers), to_numpy(objective.terms["center"].centers))
    # Both continue identically from the saved state (memory, weights and centers).
    for o in (objective, loaded):
        o.fit(x, {"label": y}, epochs=1, batch_size=16, verbose=0, shuffle=False)
    assert int(to_numpy(loaded.terms["xbm"].position)) == (12 * 16) % 40
    for a, b in zip(objective.weights, loaded.weights):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-5, atol=1e-6, err_msg=a.path)


def np_multi_hot_contrastive(x, y, ref_x, ref_y, ref_mask, w, neg_margin, min_jaccard):
    """Hadsell et al. Eq. 4 (with 1/2) over the pairs of multi-hot rows against [batch; memory]: Jaccard positives."""
    d = np.sqrt(((x[:, None, :].astype("float64") - ref_x[None, :, :]) ** 2).sum(-1))
    total, count = 0.0, 0
    for i in range(len(x)):
        for j in range(len(ref_x)):
            if j == i or not ref_mask[j] or not y[i].any() or not ref_y[j].any():
                continue
            shared, union = (y[i] & ref_y[j]).sum(), (y[i] | ref_y[j]).sum()
            if shared == 0:
                total, count = total + w[i] * 0.5 * max(neg_margin - d[i, j], 0.0) ** 2, count + 1
            elif shared / union >= min_jaccard:
                total, count = total + w[i] * 0.5 * d[i, j] ** 2, count + 1
    return total / count if count else 0.0


def test_multi_hot_labels_pair_against_a_memory_of_label_rows():
    classes, size = 4, 8
    term = lw.terms.CrossBatchMemory(lw.terms.ContrastiveLoss(neg_margin=1.5, min_jaccard=0.5), memory_size=size,
                                     multi_hot_classes=classes)
    memory_x, memory_y, filled = np.zeros((size, DIM)), -np.ones((size, classes), int), 0
    rng = np.random.default_rng(5)
    for step in range(3):  # empty memory, partly filled, wrapped
        x = rng.normal(size=(5, DIM)).astype("float32")
        y = (rng.uniform(size=(5, classes)) < 0.4).astype("int32")
        y[0] = 0  # no class: in no pair, stored as no partner
        y[1] = [1, 1, 0, 0]
        w = rng.uniform(0.5, 2.0, 5)
        ref_x, ref_y = np.concatenate([x, memory_x]), np.concatenate([y, memory_y]).astype(bool)
        ref_mask = np.concatenate([np.ones(5, bool), (np.arange(size) < filled) & (memory_y >= 0).all(1)])
        expected = np_multi_hot_contrastive(x, y.astype(bool), ref_x, ref_y, ref_mask, w, 1.5, 0.5)
        got = float(to_numpy(term(x, y, sample_weight=w, training=True)))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        for row in range(5):  # the ring buffer; a row without a class is stored as no partner (zeros, all -1)
            slot, labelled = (step * 5 + row) % size, y[row].any()
            memory_x[slot], memory_y[slot] = (x[row], y[row]) if labelled else (0.0, -1)
        filled = min(filled + 5, size)
        np.testing.assert_allclose(to_numpy(term.memory_embeddings), memory_x, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(to_numpy(term.memory_labels), memory_y)
    assert term.get_config()["multi_hot_classes"] == classes
    assert "multi_hot_classes" not in lw.terms.CrossBatchMemory(lw.terms.ContrastiveLoss(), 4).get_config()
    with pytest.raises(ValueError, match=r"expected multi-hot rows of shape \(batch, 4\)"):
        term(x, np.arange(5), training=True)
    with pytest.raises(ValueError, match=r"Give multi_hot_classes"):
        lw.terms.CrossBatchMemory(lw.terms.ContrastiveLoss(), 4)(x, y, training=True)


def test_margin_loss_with_its_learned_beta_trains_inside_the_memory():
    """MarginLoss makes its beta in build, not on first use: the compiled step of CrossBatchMemory makes none."""
    inputs = keras.Input((6,))
    model = keras.Model(inputs, {"embedding": keras.layers.Dense(DIM)(inputs)})
    margin = lw.terms.MarginLoss(learn_beta=True)
    objective = lw.Objective(model, {"xbm": lw.terms.CrossBatchMemory(margin, memory_size=32, name="xbm")})
    objective.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y = _data(16)
    history = objective.fit(x, {"label": y}, epochs=1, batch_size=16, verbose=0).history
    assert np.isfinite(history["loss"][0]) and int(to_numpy(objective.terms["xbm"].filled)) == 16
    assert float(to_numpy(margin.betas)[0]) != 1.2  # beta was trained in the step
