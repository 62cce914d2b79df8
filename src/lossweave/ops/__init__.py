"""Pure, stateless functions over ``keras.ops``: usable in ``fit`` and in custom loops."""

from lossweave.ops.center import (
    center_loss,
    center_loss_and_update,
    center_update,
    center_update_rows,
)
from lossweave.ops import aggregators
from lossweave.ops import adaptive_margin, distances, margin, pairs, sampling, weighting
from lossweave.ops import ranking, self_supervised
from lossweave.ops import large_margin
from lossweave.ops import tuple_losses
from lossweave.ops.labels import class_indices, finite_rows, label_layout
from lossweave.ops.pair_similarity import (
    circle_loss,
    multi_similarity_loss,
    multi_similarity_mining,
    nt_xent_loss,
    nt_xent_views_loss,
    supcon_loss,
)
from lossweave.ops.proxy import proxy_anchor_loss, proxy_distances, proxy_nca_loss
from lossweave.ops.sampling import sample_classes
from lossweave.ops.softmax import logits_accuracy, softmax_cross_entropy

__all__ = [
    "adaptive_margin",
    "aggregators",
    "center_loss",
    "center_loss_and_update",
    "center_update",
    "center_update_rows",
    "circle_loss",
    "class_indices",
    "distances",
    "finite_rows",
    "label_layout",
    "large_margin",
    "margin",
    "logits_accuracy",
    "multi_similarity_loss",
    "multi_similarity_mining",
    "nt_xent_loss",
    "nt_xent_views_loss",
    "pairs",
    "proxy_anchor_loss",
    "proxy_distances",
    "proxy_nca_loss",
    "ranking",
    "sample_classes",
    "sampling",
    "self_supervised",
    "softmax_cross_entropy",
    "supcon_loss",
    "tuple_losses",
    "weighting",
]
