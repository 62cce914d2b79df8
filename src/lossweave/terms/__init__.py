"""Stateful loss terms: Keras Layers that read a model output and a target."""

from lossweave.terms.base import Term
from lossweave.terms.center import CenterLoss
from lossweave.terms.loss import Loss, SoftmaxCrossEntropy

__all__ = ["CenterLoss", "Loss", "SoftmaxCrossEntropy", "Term"]
