"""lossweave.data.ClassBalancedBatches: PK batches (Hermans et al. 2017), epochs, resuming, fit.

The NumPy tests check the documented construction against independent
references: an exhaustive search for the most batches of P distinct classes,
and counts of how often each sample is drawn. The fit tests run on every
backend: the batches fit trains on are those of ``indices(epoch)``, and a run
resumed with ``SyncEpoch`` sees (and learns) what the straight run did.
"""

import functools
import itertools

import keras
import numpy as np
import pytest
from conftest import one_backend

import lossweave as lw
from lossweave.data import ClassBalancedBatches, SyncEpoch
from lossweave.data.balanced import batches_per_epoch


def _data(counts, dim=3, seed=0, shuffle=True):
    """Rows whose first feature is the row number, labels with ``counts[c]`` samples of class c."""
    y = np.repeat(np.arange(len(counts)), counts)
    if shuffle:
        np.random.default_rng(seed).shuffle(y)
    x = np.concatenate([np.arange(y.size)[:, None], np.zeros((y.size, dim - 1))], axis=1)
    return x.astype("float32"), y


@functools.lru_cache(maxsize=None)
def _most_batches(chunks, p):
    """Exhaustive search: the most batches of p distinct classes from these chunk counts."""
    best = 0
    for picked in itertools.combinations([c for c, m in enumerate(chunks) if m > 0], p):
        left = list(chunks)
        for c in picked:
            left[c] -= 1
        best = max(best, 1 + _most_batches(tuple(sorted(left)), p))
    return best


def _occurrences(batches, epoch):
    return np.bincount(batches.indices(epoch).reshape(-1), minlength=len(batches.y))


# ------------------------------------------------------------------ structure
@one_backend
@pytest.mark.parametrize("counts, p, k", [([8] * 6, 3, 4), ([10, 7, 12, 3, 9], 2, 4),
                                          ([2, 2, 2, 2], 4, 3), ([30, 5, 5, 5], 3, 2)])
def test_every_batch_is_p_classes_of_k_consecutive_samples(counts, p, k):
    x, y = _data(counts)
    batches = ClassBalancedBatches(x, y, classes_per_batch=p, samples_per_class=k, seed=3)
    assert len(batches) > 0
    for index in range(len(batches)):
        xb, yb = batches[index]
        assert xb.shape == (p * k, 3) and yb.shape == (p * k,)
        np.testing.assert_array_equal(yb, y[xb[:, 0].astype(int)])  # rows keep their labels
        groups = yb.reshape(p, k)
        assert np.all(groups == groups[:, :1])  # one class per group of K
        assert len(set(groups[:, 0])) == p  # P distinct classes


@one_backend
def test_an_epoch_deals_every_sample_once_when_the_chunks_divide_evenly():
    # 6 classes x 12 samples, K = 4: 3 chunks each, 18 chunks = 6 batches of P = 3, nothing left.
    x, y = _data([12] * 6)
    batches = ClassBalancedBatches(x, y, classes_per_batch=3, samples_per_class=4, seed=1)
    assert len(batches) == 6
    for epoch in range(3):
        np.testing.assert_array_equal(_occurrences(batches, epoch), np.ones(72, int))


@one_backend
def test_last_chunk_of_a_class_is_completed_from_its_own_samples():
    # 10 samples, K = 4: chunks of 4, 4 and 2 + 2 others of the class (without replacement).
    counts = [10] * 4
    x, y = _data(counts)
    batches = ClassBalancedBatches(x, y, classes_per_batch=4, samples_per_class=4, seed=0)
    assert len(batches) == 3  # 3 chunks per class, one of each class in every batch
    for epoch in range(4):
        seen = _occurrences(batches, epoch)
        assert seen.min() == 1  # nothing left out
        for c in range(4):
            assert sorted(seen[y == c].tolist()) == [1] * 8 + [2] * 2  # two repeats per class


@one_backend
def test_a_class_smaller_than_k_is_completed_with_replacement():
    x, y = _data([2, 9, 9])
    batches = ClassBalancedBatches(x, y, classes_per_batch=3, samples_per_class=5, seed=4)
    small = np.flatnonzero(y == 0)
    for epoch in range(5):
        table = batches.indices(epoch)
        rows = [r for b in table for r in b.reshape(3, 5) if y[r[0]] == 0]
        assert len(rows) == 1  # the small class makes one chunk
        assert set(rows[0]) == set(small)  # both of its samples, then repeats of them


@one_backend
@pytest.mark.parametrize("seed", range(12))
def test_batches_per_epoch_is_the_most_an_exhaustive_search_finds(seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 14, size=rng.integers(2, 6))
    k = int(rng.integers(1, 5))
    p = int(rng.integers(1, len(counts) + 1))
    chunks = np.maximum(1, -(-counts // k))
    expected = _most_batches(tuple(sorted(chunks.tolist())), p)
    assert batches_per_epoch(chunks, p) == expected
    x, y = _data(counts.tolist(), seed=seed)
    batches = ClassBalancedBatches(x, y, classes_per_batch=p, samples_per_class=k, seed=seed)
    assert len(batches) == expected
    table = batches.indices()
    assert table.shape == (expected, p * k)
    # No chunk is used twice: a class appears in at most its number of chunks of batches.
    per_class = np.array([[y[b[0]] for b in row.reshape(p, k)] for row in table])
    for c, m in enumerate(chunks):
        assert np.sum(per_class == c) <= m
    # Left out: fewer than P chunks when the classes' chunk counts are equal.
    if len(set(chunks.tolist())) == 1:
        assert chunks.sum() - p * expected < p


@one_backend
def test_unbalanced_classes_leave_the_surplus_of_the_large_class_out():
    # Class 0 has 40 chunks, the others 2 each: a batch holds one chunk of class 0, so
    # B = 4 (sum_c min(m_c, B) >= 2B) and 36 of its chunks wait for other epochs.
    x, y = _data([80, 4, 4])
    batches = ClassBalancedBatches(x, y, classes_per_batch=2, samples_per_class=2, seed=0)
    assert len(batches) == 4
    seen = [set(np.flatnonzero(_occurrences(batches, e)[: len(y)] * (y == 0))) for e in range(6)]
    assert all(len(s) == 8 for s in seen)  # 4 batches x 2 samples of class 0
    assert len(set.union(*seen)) > 8  # a different part of class 0 each epoch


# -------------------------------------------------------------- seeds, epochs
@one_backend
def test_same_seed_same_batches_other_seed_or_epoch_other_batches():
    x, y = _data([9, 11, 8, 12, 10])
    make = functools.partial(ClassBalancedBatches, x, y, classes_per_batch=3, samples_per_class=3)
    a, b, c = make(seed=5), make(seed=5), make(seed=6)
    for epoch in range(3):
        np.testing.assert_array_equal(a.indices(epoch), b.indices(epoch))
        assert not np.array_equal(a.indices(epoch), c.indices(epoch))
    assert not np.array_equal(a.indices(0), a.indices(1))
    # An epoch depends on (seed, epoch) only: epoch 2 drawn directly, or after 0 and 1.
    fresh = make(seed=5, epoch=2)
    np.testing.assert_array_equal(fresh.indices(), a.indices(2))
    np.testing.assert_array_equal(fresh[1][0], x[a.indices(2)[1]])


@one_backend
def test_epoch_moves_on_only_after_every_batch_of_an_epoch_was_served():
    x, y = _data([6] * 4)
    batches = ClassBalancedBatches(x, y, classes_per_batch=2, samples_per_class=3, seed=0)
    first = batches.indices().copy()
    batches.on_epoch_end()  # fit's reset before the first epoch: no epoch has begun
    assert batches.epoch == 0
    batches.on_epoch_begin()
    batches[0]  # JAX/PyTorch build the model from one batch, then reset
    batches.on_epoch_end()
    assert batches.epoch == 0
    batches.on_epoch_begin()
    for index in range(len(batches)):
        np.testing.assert_array_equal(batches[index][1], y[first[index]])
    batches.on_epoch_end()
    assert batches.epoch == 1 and not np.array_equal(batches.indices(), first)
    batches[0]  # served outside an epoch (TensorFlow's look at the first batches): not counted
    batches.on_epoch_begin()
    batches.on_epoch_end()
    assert batches.epoch == 1


@one_backend
def test_state_and_config_round_trip():
    x, y = _data([7, 7, 7])
    batches = ClassBalancedBatches(x, y, classes_per_batch=2, samples_per_class=2, seed=9, epoch=4)
    assert batches.get_state() == {"seed": 9, "epoch": 4}
    other = ClassBalancedBatches(x, y, classes_per_batch=2, samples_per_class=2, seed=9)
    other.set_state(batches.get_state())
    np.testing.assert_array_equal(other.indices(), batches.indices())
    with pytest.raises(ValueError, match="seed=1.*seed=9"):
        other.set_state({"seed": 1, "epoch": 2})
    with pytest.raises(ValueError, match="get_state"):
        other.set_state(3)
    config = batches.get_config()
    again = ClassBalancedBatches.from_config(config)
    assert again.get_config().keys() == config.keys()
    for key, value in config.items():
        if key not in ("x", "y"):
            assert getattr(again, key) == value, key
    np.testing.assert_array_equal(again.indices(), batches.indices())
    assert keras.saving.get_registered_object("lossweave>ClassBalancedBatches") is ClassBalancedBatches
    assert keras.saving.get_registered_object("lossweave>SyncEpoch") is SyncEpoch
    assert SyncEpoch.from_config(SyncEpoch(batches).get_config()).batches is batches
    assert lw.data.ClassBalancedBatches is ClassBalancedBatches


@one_backend
def test_dict_inputs_and_targets():
    x, y = _data([5, 6, 7])
    inputs = {"image": x, "extra": np.arange(len(y))[:, None] * 10}
    targets = {"label": y[:, None].astype("float32"), "parity": (y % 2).astype("int32")}
    batches = ClassBalancedBatches(inputs, targets, classes_per_batch=2, samples_per_class=3, seed=2)
    xb, yb = batches[1]
    assert set(xb) == {"image", "extra"} and set(yb) == {"label", "parity"}
    rows = batches.indices()[1]
    np.testing.assert_array_equal(xb["extra"][:, 0], rows * 10)
    np.testing.assert_array_equal(yb["label"][:, 0], y[rows])
    assert yb["label"].dtype == np.float32 and yb["parity"].dtype == np.int32  # as given
    by_key = ClassBalancedBatches(x, {"id": y}, classes_per_batch=2, samples_per_class=3, seed=2,
                                  labels_key="id")
    np.testing.assert_array_equal(by_key.indices(), batches.indices())


@one_backend
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"classes_per_batch": 4}, r"classes_per_batch=4, but y has only 3 classes.*at most"),
        ({"samples_per_class": 0}, r"`samples_per_class` must be an int >= 1; received 0"),
        ({"classes_per_batch": 0}, r"`classes_per_batch` must be an int >= 1"),
        ({"samples_per_class": True}, r"`samples_per_class` must be an int >= 1; received True"),
        ({"seed": -1}, r"`seed` must be an int >= 0; received -1"),
        ({"y": np.array([0.5] * 12)}, r"integer class labels in y; received 0.5 at index 0"),
        ({"y": np.array(["a"] * 12)}, r"integer class labels in y; received dtype <U1"),
        ({"y": np.eye(3)[np.arange(12) % 3]}, r"shape \(n,\) or \(n, 1\).*argmax"),
        ({"y": np.arange(11) % 3}, r"x has 12 rows and y has 11"),
        ({"x": {"a": np.zeros((12, 1)), "b": np.zeros((10, 1))}}, r"'a': 12, 'b': 10"),
        ({"y": {"class": np.arange(12) % 3}}, r"labels key 'label'.*\['class'\].*labels_key="),
        ({"x": [[0.0]] * 12}, r"array or a dict of arrays; received a list"),
        ({"x": np.zeros((0, 2)), "y": np.zeros(0, int)}, r"no rows"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    arguments = {"x": np.zeros((12, 2)), "y": np.arange(12) % 3, "classes_per_batch": 2,
                 "samples_per_class": 2}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ClassBalancedBatches(**arguments)


@one_backend
def test_index_out_of_range_and_bad_sync_target():
    x, y = _data([4, 4])
    batches = ClassBalancedBatches(x, y, classes_per_batch=2, samples_per_class=2)
    with pytest.raises(IndexError, match="batch index 2 out of range; an epoch has 2 batches"):
        batches[2]
    with pytest.raises(ValueError, match="expected the ClassBalancedBatches"):
        SyncEpoch(x)


# ------------------------------------------------------------------------ fit
CLASSES, FEATURES = 4, 5


class _Recording(ClassBalancedBatches):
    """Remembers the rows of every batch served during an epoch, by epoch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.served = {}

    def __getitem__(self, index):
        if self._in_epoch:
            self.served.setdefault(self.epoch, []).append(self.indices()[index])
        return super().__getitem__(index)


def _objective():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((FEATURES,))
    embedding = keras.layers.Dense(3)(inputs)
    model = keras.Model(inputs, {"embedding": embedding, "logits": keras.layers.Dense(CLASSES)(embedding)})
    objective = lw.Objective(model, {
        "softmax": lw.terms.SoftmaxCrossEntropy(on="logits"),
        "center": lw.terms.CenterLoss(num_classes=CLASSES, alpha=0.5, on="embedding"),
    }, weighting=lw.weighting.Fixed({"center": 0.1}))
    objective.compile(optimizer=keras.optimizers.Adam(0.01))
    return objective


def _batches():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(CLASSES), [9, 8, 7, 6])
    x = (rng.normal(size=(y.size, FEATURES)) + np.eye(CLASSES, FEATURES)[y]).astype("float32")
    return _Recording(x, {"label": y}, classes_per_batch=2, samples_per_class=4, seed=7)


def test_fit_trains_on_the_drawn_batches_and_resumes_with_sync_epoch():
    straight, data = _objective(), _batches()
    history = straight.fit(data, epochs=3, shuffle=False, verbose=0, callbacks=[SyncEpoch(data)])
    assert len(history.history["loss"]) == 3 and data.epoch == 3
    assert sorted(data.served) == [0, 1, 2]
    for epoch, rows in data.served.items():  # each epoch's batches, in order, once
        np.testing.assert_array_equal(np.stack(rows), data.indices(epoch))

    resumed, first = _objective(), _batches()
    resumed.fit(first, epochs=1, shuffle=False, verbose=0)
    later = _batches()  # a new process: the dataset starts at epoch 0, fit at epoch 1
    resumed.fit(later, epochs=3, initial_epoch=1, shuffle=False, verbose=0, callbacks=[SyncEpoch(later)])
    assert sorted(later.served) == [1, 2]
    for epoch in (1, 2):
        np.testing.assert_array_equal(np.stack(later.served[epoch]), np.stack(data.served[epoch]))
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
