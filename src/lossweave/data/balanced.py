"""Class-balanced batches for metric learning: P classes x K samples per batch.

Pair losses (contrastive, triplet, multi-similarity, ...) need positives in
every batch: with plain shuffling a batch of 32 digits from 10 classes has
about 3 of each, and a batch from 1,000 classes almost none. The "PK" batch
of Hermans, Beyer & Leibe ("In Defense of the Triplet Loss for Person
Re-Identification", arXiv:1703.07737, 2017, Sec. 2) draws P classes and K
samples of each.
"""

import heapq
import operator

import keras
import numpy as np

from lossweave import arguments
from lossweave.data import _arrays

WHO = "ClassBalancedBatches"


def batches_per_epoch(chunks_per_class, classes_per_batch):
    """The most batches of P distinct classes that ``chunks_per_class`` chunks can fill.

    A batch holds at most one chunk of a class, so ``B`` batches take at most
    ``min(m_c, B)`` of class ``c``'s ``m_c`` chunks: ``B`` is feasible only if
    ``sum_c min(m_c, B) >= P B``. The largest such ``B`` is returned (the
    left side minus the right is concave in ``B`` and 0 at ``B = 0``, so the
    feasible ``B`` form an interval and a bisection finds its end). Dealing
    chunks to the classes with the most chunks left first reaches it.

    Example:
        >>> batches_per_epoch([3, 3, 3], 2), batches_per_epoch([9, 1, 1], 2)
        (4, 2)
    """
    chunks = np.asarray(chunks_per_class, dtype="int64")
    low, high = 0, int(chunks.sum()) // classes_per_batch
    while low < high:
        middle = (low + high + 1) // 2
        if np.minimum(chunks, middle).sum() >= classes_per_batch * middle:
            low = middle
        else:
            high = middle - 1
    return low


@keras.saving.register_keras_serializable(package="lossweave")
class ClassBalancedBatches(keras.utils.PyDataset):
    """Batches of ``classes_per_batch`` (P) classes x ``samples_per_class`` (K) samples, for ``fit``.

    The PK batches of Hermans, Beyer & Leibe, "In Defense of the Triplet Loss
    for Person Re-Identification", arXiv:1703.07737, 2017 (Sec. 2: P classes,
    K images each), the batches that pair losses need (every sample has K - 1 positives in
    its batch), built so that an epoch goes through the data:

    1. **Chunks.** At the start of epoch ``e`` each class's samples are
       shuffled and dealt into chunks of K. A last chunk with fewer than K
       samples is completed with other samples of its class (drawn without
       replacement), so every sample is in at least one chunk. A class with
       fewer than K samples makes one chunk: all of its samples, plus samples
       of it drawn with replacement up to K.
    2. **Batches.** Chunks are grouped P per batch, never two of one class:
       each batch takes one chunk from each of the P classes with the most
       chunks left (ties broken at random). This fills the most batches
       possible, ``B = max {B : sum_c min(m_c, B) >= P B}`` for ``m_c`` chunks
       of class ``c`` (:func:`batches_per_epoch`); ``len()`` is ``B``.
    3. **Leftovers.** Chunks that cannot make a batch of P distinct classes
       are left out of this epoch: fewer than P chunks when the classes have
       equal chunk counts; more when they are unbalanced (a class far larger
       than the others has more chunks than there are batches). Each epoch
       shuffles anew, so different samples are left out each time.
    4. **Order.** The batches are shuffled; within a batch the P classes are
       in random order and each class's K samples are consecutive, so
       ``labels.reshape(P, K)`` has one class per row.

    Everything is NumPy, drawn from ``numpy.random.default_rng([seed,
    epoch])``: the same seed gives the same batches on every backend, each
    epoch has its own order, and the batch at ``(epoch, index)`` depends on
    nothing else (not on the batches served before), which is what makes a
    run resumable. ``on_epoch_end`` moves to the next epoch once every batch
    of the current one has been served between ``on_epoch_begin`` and
    ``on_epoch_end`` (Keras calls both around each epoch): the extra calls of
    ``fit`` before training (TensorFlow's look at the first batches, the
    model-building pass of JAX and PyTorch, the reset of the data) and an
    epoch interrupted by an exception do not count, so the next ``fit``
    restarts that epoch, as ``keras.callbacks.BackupAndRestore`` does. (With
    ``use_multiprocessing=True`` the batches are served in other processes;
    there any ``on_epoch_end`` after an ``on_epoch_begin`` moves on.) Leave
    ``fit``'s ``steps_per_epoch`` unset: an epoch is ``len()`` batches.

    Pass ``shuffle=False`` to ``fit``: the batches are shuffled already, and
    ``fit``'s default ``shuffle=True`` would permute their order once more
    with Python's ``random`` module. Use another instance (or plain arrays)
    for ``validation_data``: evaluation calls ``on_epoch_end`` too.

    Resuming: the position is the epoch (``get_state()`` /
    ``set_state(state)``, the ``epoch`` attribute, or ``epoch=`` in the
    constructor); Keras itself restarts an interrupted epoch from its first
    batch. Add ``lossweave.data.SyncEpoch(batches)`` to the callbacks of any
    run that may be resumed (``fit(..., initial_epoch=E)``,
    ``keras.callbacks.BackupAndRestore``): it sets the epoch to ``fit``'s at
    the start of every epoch, so a resumed run sees the batches the
    uninterrupted run would have seen. Without it the count goes on from
    where this object stopped (a new object starts at ``epoch``), and a JAX
    or PyTorch ``fit`` of a model whose epochs have a single batch moves one
    epoch ahead in its model-building pass.

    Args:
        x: inputs: an array, or a dict of arrays (a multi-input model), with
            one row per sample.
        y: targets: integer class labels ``(n,)`` or ``(n, 1)`` (integer
            dtype, or floats of integer value), or a dict of target arrays
            of which ``labels_key`` names the class labels. Each batch has
            the same structure as ``y``.
        classes_per_batch: P, distinct classes per batch, at most the number
            of classes.
        samples_per_class: K, samples of each class per batch, at least 1.
        seed: non-negative integer seed of every epoch's draw.
        labels_key: the key of the class labels when ``y`` is a dict.
        epoch: the epoch to start from (see "Resuming").
        workers, use_multiprocessing, max_queue_size: as in
            ``keras.utils.PyDataset``.

    Raises:
        ValueError: P larger than the number of classes, P or K below 1,
            labels that are not integers, ``x`` and ``y`` (or the arrays of a
            dict) with different numbers of rows, or no samples.

    Example:
        >>> import numpy as np
        >>> y = np.repeat(np.arange(4), [6, 6, 6, 2])  # class 3 has fewer than K samples
        >>> x = np.arange(20, dtype="float32")[:, None]
        >>> batches = ClassBalancedBatches(x, y, classes_per_batch=2, samples_per_class=3, seed=0)
        >>> len(batches)  # chunks per class: 2, 2, 2, 1; 3 batches of 2 classes, 1 chunk left over
        3
        >>> xb, yb = batches[0]
        >>> xb.shape, [len(set(row)) for row in yb.reshape(2, 3).tolist()]  # one class per row
        ((6, 1), [1, 1])
        >>> batches.on_epoch_begin()  # as fit does: serve every batch, then the next epoch
        >>> _ = [batches[i] for i in range(len(batches))]
        >>> batches.on_epoch_end()
        >>> batches.get_state()
        {'seed': 0, 'epoch': 1}
    """

    def __init__(
        self,
        x,
        y,
        classes_per_batch,
        samples_per_class,
        seed=0,
        labels_key="label",
        epoch=0,
        workers=1,
        use_multiprocessing=False,
        max_queue_size=10,
    ):
        super().__init__(
            workers=arguments.positive_int(workers, "workers", WHO),
            use_multiprocessing=arguments.boolean(use_multiprocessing, "use_multiprocessing", WHO),
            max_queue_size=arguments.positive_int(max_queue_size, "max_queue_size", WHO),
        )
        self.classes_per_batch = arguments.positive_int(classes_per_batch, "classes_per_batch", WHO)
        self.samples_per_class = arguments.positive_int(samples_per_class, "samples_per_class", WHO)
        self.seed = arguments.integer(seed, "seed", WHO, low=0)
        self.labels_key = labels_key
        self.x, n_x = _arrays.as_rows(x, "x", WHO)
        self.y, n_y = _arrays.as_rows(y, "y", WHO)
        if n_x != n_y:
            raise ValueError(f"{WHO}: x has {n_x} rows and y has {n_y}; expected one target row "
                             "per input row.")
        if n_x == 0:
            raise ValueError(f"{WHO}: x and y have no rows; expected at least one sample per class.")
        labels = _arrays.class_labels(self.y, labels_key, WHO)
        self.classes, inverse = np.unique(labels, return_inverse=True)
        if self.classes_per_batch > self.classes.size:
            raise ValueError(
                f"{WHO}: classes_per_batch={self.classes_per_batch}, but y has only "
                f"{self.classes.size} classes; a batch holds distinct classes, so use at most "
                f"classes_per_batch={self.classes.size}."
            )
        order = np.argsort(inverse.reshape(-1), kind="stable")
        counts = np.bincount(inverse.reshape(-1))
        self._members = np.split(order, np.cumsum(counts)[:-1])  # sample rows of each class
        k = self.samples_per_class
        self._chunks_per_class = np.maximum(1, -(-counts // k))  # ceil(n_c / K), at least 1
        self._num_batches = batches_per_epoch(self._chunks_per_class, self.classes_per_batch)
        self._in_epoch = False  # between on_epoch_begin and on_epoch_end
        self._served = np.zeros(self._num_batches, dtype=bool)  # in an epoch, this epoch
        self.epoch = epoch  # checked by the setter
        self._cache = (None, None)  # (epoch, its index table)

    # ------------------------------------------------------------ position
    def get_state(self):
        """The position, ``{"seed": seed, "epoch": epoch}``, e.g. for a checkpoint's metadata."""
        return {"seed": self.seed, "epoch": self.epoch}

    def set_state(self, state):
        """Continue from a :meth:`get_state` dict (its seed must be this dataset's)."""
        if not isinstance(state, dict) or "epoch" not in state:
            raise ValueError(f"{WHO}.set_state: expected a dict from get_state() with 'epoch' (and "
                             f"'seed'); received {state!r}.")
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"{WHO}.set_state: the state was saved with seed={state['seed']!r}, "
                             f"but this dataset has seed={self.seed}; its batches would differ. "
                             "Build the dataset with the saved seed.")
        self.epoch = state["epoch"]  # checked by the setter

    @property
    def epoch(self):
        """The epoch whose batches are served (settable: a new epoch starts unserved)."""
        return self._epoch

    @epoch.setter
    def epoch(self, value):
        self._epoch = arguments.integer(value, "epoch", WHO, low=0)
        self._served[:] = False

    def on_epoch_begin(self):
        self._in_epoch = True

    def on_epoch_end(self):
        # Keras also calls this after passes that are not epochs (EpochIterator.reset after
        # JAX/PyTorch's model-building batch) and after an interrupted epoch; only an epoch
        # whose every batch was served moves on.
        if self._in_epoch and (self._served.all() or self.use_multiprocessing):
            self.epoch = self._epoch + 1
        self._in_epoch = False

    # ------------------------------------------------------------- batches
    def __len__(self):
        return self._num_batches

    def __getitem__(self, index):
        index = operator.index(index)
        if not 0 <= index < self._num_batches:
            raise IndexError(f"{WHO}: batch index {index} out of range; an epoch has "
                             f"{self._num_batches} batches (0..{self._num_batches - 1}).")
        rows = self.indices()[index]
        if self._in_epoch:
            self._served[index] = True
        return _arrays.take(self.x, rows), _arrays.take(self.y, rows)

    def indices(self, epoch=None):
        """The sample rows of every batch of ``epoch`` (default: the current one).

        Returns:
            int64 array ``(len(self), P * K)``: row ``b`` holds the rows of
            ``x``/``y`` in batch ``b``, class by class.
        """
        epoch = self.epoch if epoch is None else arguments.integer(epoch, "epoch", WHO, low=0)
        cached_epoch, table = self._cache
        if cached_epoch != epoch:
            table = self._draw(epoch)
            self._cache = (epoch, table)
        return table

    def _draw(self, epoch):
        rng = np.random.default_rng([self.seed, epoch])
        k, p = self.samples_per_class, self.classes_per_batch
        chunks = []  # per class: (m_c, K) sample rows
        for members in self._members:
            shuffled = rng.permutation(members)
            if shuffled.size < k:  # too few samples: all of them, then repeats
                extra = rng.choice(shuffled, k - shuffled.size, replace=True)
                chunks.append(np.concatenate([shuffled, extra])[None, :])
                continue
            full = shuffled.size // k * k
            dealt = shuffled[:full].reshape(-1, k)
            rest = shuffled[full:]
            if rest.size:  # complete the last chunk with other samples of the class
                fill = rng.choice(shuffled[:full], k - rest.size, replace=False)
                dealt = np.concatenate([dealt, np.concatenate([rest, fill])[None, :]])
            chunks.append(dealt)
        first_chunk = np.concatenate([[0], np.cumsum(self._chunks_per_class)[:-1]])
        table = np.concatenate(chunks)

        # Largest-first: the P classes with the most chunks left, random among ties
        # (a fresh random key each time a class goes back on the heap).
        keys = rng.random(table.shape[0] + len(chunks))
        heap = [(-int(m), keys[c], c) for c, m in enumerate(self._chunks_per_class)]
        heapq.heapify(heap)
        used = np.zeros(len(chunks), dtype="int64")
        batches = np.empty((self._num_batches, p), dtype="int64")
        drawn = len(chunks)
        for b in range(self._num_batches):
            picked = [heapq.heappop(heap) for _ in range(p)]
            for j, (negative_left, _, c) in enumerate(picked):
                batches[b, j] = first_chunk[c] + used[c]
                used[c] += 1
                if negative_left < -1:
                    heapq.heappush(heap, (negative_left + 1, keys[drawn], c))
                    drawn += 1
        batches = rng.permuted(batches[rng.permutation(self._num_batches)], axis=1)
        return table[batches].reshape(self._num_batches, p * k)

    def get_config(self):
        """Constructor arguments (``x`` and ``y`` as arrays, not JSON)."""
        return {
            "x": self.x,
            "y": self.y,
            "classes_per_batch": self.classes_per_batch,
            "samples_per_class": self.samples_per_class,
            "seed": self.seed,
            "labels_key": self.labels_key,
            "epoch": self.epoch,
            "workers": self.workers,
            "use_multiprocessing": self.use_multiprocessing,
            "max_queue_size": self.max_queue_size,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="lossweave")
class SyncEpoch(keras.callbacks.Callback):
    """Keeps a :class:`ClassBalancedBatches` on the epoch number of ``fit``.

    At the start of every epoch it sets ``batches.epoch`` to ``fit``'s epoch,
    so the batches of epoch ``e`` are the same whether the run went straight
    through or was resumed with ``fit(initial_epoch=e)`` or
    ``keras.callbacks.BackupAndRestore`` (which restores ``fit``'s epoch, not
    the dataset's). Keras builds an epoch's iterator after this hook, so the
    first batch of the epoch is drawn for the right epoch.

    Args:
        batches: the :class:`ClassBalancedBatches` given to ``fit``.

    Example:
        >>> import keras, numpy as np
        >>> y = np.arange(24) % 4
        >>> batches = ClassBalancedBatches(np.ones((24, 2), "float32"), y, classes_per_batch=2,
        ...                                samples_per_class=2)
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4)])
        >>> model.compile(optimizer="sgd",
        ...               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> _ = model.fit(batches, epochs=3, initial_epoch=1, shuffle=False, verbose=0,
        ...               callbacks=[SyncEpoch(batches)])
        >>> batches.epoch  # epochs 1 and 2 were drawn as epochs 1 and 2, then on_epoch_end
        3
    """

    def __init__(self, batches):
        super().__init__()
        if not isinstance(batches, ClassBalancedBatches):
            raise ValueError(f"SyncEpoch: expected the ClassBalancedBatches given to fit; "
                             f"received {type(batches).__name__}.")
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        if self.batches.epoch != epoch:
            self.batches.epoch = int(epoch)

    def get_config(self):
        """Constructor arguments (the dataset object itself, not JSON)."""
        return {"batches": self.batches}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
