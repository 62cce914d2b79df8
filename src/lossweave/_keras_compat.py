"""The private Keras pieces lossweave still needs, in one place, with the versions they were written for.

Everything else of the train step is on Keras's public surface
(``keras.StatelessScope``, ``keras.utils.unpack_x_y_sample_weight``,
``stateless_call``, ``optimizer.stateless_apply``). What remains here has no
public API in Keras 3.15:

- ``scale_loss_for_distribution`` / ``unscale_loss_for_distribution``: a
  loss divided (multiplied) by the number of ``tf.distribute`` replicas, as
  Keras's own ``compute_loss`` and train step do (a no-op elsewhere);
- the ``keras.Model`` attributes a train step of one's own needs to behave as
  Keras's does, read or written only through the functions below:
  ``training_kwargs`` (``_call_has_training_arg``: call with ``training=``
  only where ``call`` takes it), ``track_loss`` (``_loss_tracker``: the
  ``loss`` Keras logs), ``compute_loss`` (``_compute_loss``: Keras's loss with
  its distribution scaling, TensorFlow step), ``update_metrics``
  (``_update_metrics_variables``: the JAX step's stateless metrics) and
  ``write_jax_state`` (``_jax_state``: the state Keras's JAX trainer syncs
  into the variables after an epoch), ``inbound_nodes`` (a layer's
  ``_inbound_nodes``: where it is called in a functional graph) and
  ``keras_history`` / ``producing_layer`` (a symbolic tensor's ``_keras_history``).

``pyproject.toml`` declares the Keras range that CI installs and tests;
importing lossweave outside it fails here with what to do.
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



def training_kwargs(model):
    """``{"training": True}`` when ``model.call`` takes ``training``, else ``{}`` (as Keras's steps call it)."""
    return {"training": True} if model._call_has_training_arg else {}


def track_loss(model, loss, batch_size):
    """Add ``loss`` (of a batch of ``batch_size``) to the ``loss`` entry Keras logs for ``model``."""
    model._loss_tracker.update_state(loss, sample_weight=batch_size)


def compute_loss(model, **kwargs):
    """Keras's ``Model._compute_loss``: ``compute_loss`` plus the tf.distribute scaling of the loss."""
    return model._compute_loss(**kwargs)


def update_metrics(model, metrics_variables, loss, x, y, y_pred, sample_weight):
    """JAX: ``(logs, new metrics variables)`` of a step, statelessly, as Keras's JAX trainer computes them."""
    return model._update_metrics_variables(metrics_variables, loss, x, y, y_pred, sample_weight)


def write_jax_state(model, keys, state):
    """JAX: give ``model`` the step state ``state`` (one list per key) and sync it into its variables."""
    model._jax_state = dict(zip(keys, state))
    model._jax_state_synced = False
    model.jax_state_sync()


def inbound_nodes(layer):
    """The nodes where ``layer`` is called in a functional graph (``node.input_tensors``: its inputs there)."""
    return layer._inbound_nodes


def keras_history(tensor):
    """``(operation, node index, tensor index)`` of a symbolic (functional-graph) tensor, else ``None``."""
    return getattr(tensor, "_keras_history", None)


def producing_layer(tensor):
    """The layer whose call made the symbolic ``tensor``."""
    return keras_history(tensor)[0]


__all__ = [
    "TESTED",
    "inbound_nodes",
    "keras_history",
    "producing_layer",
    "compute_loss",
    "scale_loss_for_distribution",
    "track_loss",
    "training_kwargs",
    "unscale_loss_for_distribution",
    "update_metrics",
    "write_jax_state",
]
