"""NumPy backend (inference only in Keras): plain array updates; the base's eager checks."""

import numpy as np

from lossweave._backend._common import Backend


class NumpyBackend(Backend):
    """Row updates with ``np.add.at`` on a copy that is assigned back; everything else the base's."""

    name = "numpy"

    def _add_rows(self, variable, indices, updates):
        table = np.array(variable.value)
        np.add.at(table, np.asarray(indices), np.asarray(updates, table.dtype))
        variable.assign(table)
