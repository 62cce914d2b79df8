"""The private Keras pieces lossweave still needs, in one place, with the versions they were written for.

Everything else of the train step is on Keras's public surface
(``keras.StatelessScope``, ``keras.utils.unpack_x_y_sample_weight``,
``stateless_call``, ``optimizer.stateless_apply``). What remains here has no
public API in Keras 3.15:

- ``scale_loss_for_distribution`` / ``unscale_loss_for_distribution``: a
  loss divided (multiplied) by the number of ``tf.distribute`` replicas, as
  Keras's own ``compute_loss`` and train step do (a no-op elsewhere).

The trainers also read and write some of ``keras.Model``'s private attributes
(``_loss_tracker``, ``_jax_state``, ``_compute_loss``,
``_update_metrics_variables``, ``_call_has_training_arg``): see
``lossweave.trainer``. ``pyproject.toml`` declares the Keras range that CI
installs and tests; importing lossweave outside it fails here with what to do.
"""

import keras

TESTED = ((3, 15), (3, 16))  # [lowest, first untested) minor versions of Keras


def _minor(version):
    return tuple(int(part) for part in version.split(".")[:2])


if not TESTED[0] <= _minor(keras.__version__) < TESTED[1]:
    raise ImportError(
        f"lossweave: received Keras {keras.__version__}; lossweave's train step uses private Keras "
        f"pieces written and tested for Keras >= {'.'.join(map(str, TESTED[0]))}, < "
        f"{'.'.join(map(str, TESTED[1]))}. Install a version in that range: "
        f"pip install 'keras>={'.'.join(map(str, TESTED[0]))},<{'.'.join(map(str, TESTED[1]))}'."
    )

from keras.src.losses.loss import scale_loss_for_distribution, unscale_loss_for_distribution  # noqa: E402

__all__ = ["TESTED", "scale_loss_for_distribution", "unscale_loss_for_distribution"]
