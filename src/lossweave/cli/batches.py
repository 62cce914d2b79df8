"""Plain shuffled batches drawn from ``(seed, epoch)``, so that a resumed run sees the same batches.

``fit(x, y, shuffle=True)`` shuffles with the backend's global random state,
which a run resumed in a new process does not have; these batches depend on
the seed and the epoch only. Imported after ``--backend`` is applied (it
imports Keras).
"""

import keras
import numpy as np


class ShuffledBatches(keras.utils.PyDataset):
    """Batches of ``batch_size`` rows of ``(x, y)``, in an order drawn from ``(seed, epoch)``.

    Every row is served once per epoch (the last batch may be smaller, as in
    ``fit``). Set ``epoch`` (or give ``fit`` the :class:`FollowEpoch` callback)
    to draw a given epoch's batches.

    Args:
        x: array of rows.
        y: array or dict of arrays with as many rows.
        batch_size: rows per batch, >= 1.
        seed: seed of every epoch's order.

    Example:
        >>> batches = ShuffledBatches(np.arange(5.0)[:, None], {"label": np.arange(5)}, batch_size=2, seed=0)
        >>> len(batches), sorted(np.concatenate([batches[i][1]["label"] for i in range(3)]).tolist())
        (3, [0, 1, 2, 3, 4])
        >>> first = batches[0][1]["label"].tolist(); batches.epoch = 1
        >>> batches[0][1]["label"].tolist() != first or batches[1][1]["label"].tolist() != [2, 3]
        True
    """

    def __init__(self, x, y, *, batch_size, seed):
        super().__init__()
        self.x, self.y = x, y
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.rows = len(x)
        self.epoch = 0
        self._order = (None, None)  # (epoch, permutation) of the last epoch drawn

    def __len__(self):
        return -(-self.rows // self.batch_size)

    def order(self, epoch):
        """The row permutation of ``epoch``."""
        if self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.rows))
        return self._order[1]

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"ShuffledBatches: batch index {index} out of range 0..{len(self) - 1}.")
        rows = self.order(self.epoch)[index * self.batch_size:(index + 1) * self.batch_size]
        return self.x[rows], keras.tree.map_structure(lambda a: a[rows], self.y)


class FollowEpoch(keras.callbacks.Callback):
    """Sets ``batches.epoch`` to ``fit``'s epoch at the start of every epoch (before its batches are drawn)."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.epoch = int(epoch)
