"""A callback that evaluates the embedding of a validation set during ``fit``."""

import keras
import numpy as np

from lossweave import arguments
from lossweave.metrics import _checks
from lossweave.metrics.evaluation import evaluate_embeddings
from lossweave.metrics.verification import verification_pairs


@keras.saving.register_keras_serializable(package="lossweave")
class EmbeddingEvaluation(keras.callbacks.Callback):
    """Log retrieval and verification figures of an embedding every few epochs.

    At the end of every ``every``-th epoch the model embeds ``x`` with
    ``model.predict`` and :func:`lossweave.metrics.evaluate_embeddings` scores
    the result against ``labels``; each figure is written into the epoch's
    ``logs`` as ``prefix + key`` (``"val_nn_top1"``, ``"val_recall@1"``,
    ``"val_map@r"``, ``"val_verification_accuracy"``, ...), so ``History``,
    ``CSVLogger``, ``EarlyStopping(monitor="val_map@r", mode="max")`` and
    ``ModelCheckpoint`` see them (put this callback before those in the
    ``callbacks`` list). Epochs in between log nothing, as with
    ``fit(validation_freq=...)``.

    With ``reference_x`` and ``reference_labels`` the retrieval figures search
    the embedding of ``reference_x`` (a gallery, embedded again at every
    evaluation) for the queries ``x`` instead of leave-one-out over ``x``;
    queries whose class the gallery lacks are skipped and counted in
    ``"val_queries_without_reference"`` (see ``evaluate_embeddings``).

    Works on a plain model and on a :class:`lossweave.Objective` (whose
    ``predict`` returns the wrapped model's outputs): with a dict of outputs
    ``output`` names the embedding; a list of outputs is matched against the
    (wrapped) model's ``output_names``; a single output is used as is.

    The figures are those of Musgrave et al., "A Metric Learning Reality
    Check", ECCV 2020 (Recall@k, MAP@R, R-precision, NMI, AMI) and the LFW
    protocol of Huang et al., UMass Tech. Rep. 07-49, 2007 (pair
    verification).

    Args:
        x: validation inputs (anything ``model.predict`` accepts).
        labels: ``(n,)`` integer class of each validation sample.
        every: evaluate at the end of every ``every``-th epoch (1-based:
            epochs ``every``, ``2 * every``, ...).
        output: name of the embedding output when the model returns several;
            None for a single-output model.
        metric: ``"cosine"`` or ``"euclidean"``.
        prefix: prefix of the keys in the logs.
        ks: the ``k`` of the Recall@k figures.
        batch_size: batch size of ``predict`` (Keras's default if None).
        pairs: verification pairs, as in ``evaluate_embeddings``: None to draw
            ``num_pairs`` once (the same pairs every epoch), a tuple
            ``(index_a, index_b, issame)``, or False for no verification.
        num_pairs: number of pairs to draw when ``pairs`` is None.
        far: the FAR of the ``tar@far=...`` figure.
        seed: seed of the drawn pairs and of k-means.
        reference_x: optional gallery inputs (anything ``model.predict``
            accepts) for query / reference retrieval.
        reference_labels: ``(m,)`` integer class of each gallery sample;
            with ``reference_x`` only.
        r_precision: also log ``r_precision``.
        clustering: also log ``nmi`` and ``ami`` (one k-means per evaluation).

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((4,))
        >>> emb = keras.layers.Dense(3)(inputs)
        >>> model = keras.Model(inputs, {"embedding": emb, "logits": keras.layers.Dense(2)(emb)})
        >>> model.compile(optimizer="adam",
        ...               loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
        >>> x, y = np.random.rand(40, 4).astype("float32"), np.arange(40) % 2
        >>> history = model.fit(x, {"logits": y}, epochs=2, verbose=0,
        ...                     callbacks=[EmbeddingEvaluation(x, y, every=2, num_pairs=100)])
        >>> len(history.history["val_map@r"])
        1
    """

    def __init__(
        self,
        x,
        labels,
        every=1,
        output="embedding",
        metric="cosine",
        prefix="val_",
        ks=(1,),
        batch_size=None,
        pairs=None,
        num_pairs=6000,
        far=1e-3,
        seed=0,
        reference_x=None,
        reference_labels=None,
        r_precision=False,
        clustering=False,
    ):
        super().__init__()
        who = "EmbeddingEvaluation"
        if output is not None and not isinstance(output, str):
            raise ValueError(
                f"EmbeddingEvaluation: expected output to be an output name or None; received {output!r}."
            )
        if not isinstance(prefix, str):
            raise ValueError(f"EmbeddingEvaluation: expected a string prefix; received {prefix!r}.")
        _checks.check_metric(metric, who)
        if (reference_x is None) != (reference_labels is None):
            raise ValueError(
                "EmbeddingEvaluation: expected reference_x and reference_labels together (the "
                "gallery and its classes), or neither for leave-one-out retrieval on x; received "
                f"only {'reference_x' if reference_labels is None else 'reference_labels'}."
            )
        self.x = x
        self.labels = labels
        self.every = arguments.positive_int(every, "every", who)
        self.output = output
        self.metric = metric
        self.prefix = prefix
        self.ks = _checks.check_ks(ks, who)
        self.batch_size = arguments.optional(arguments.positive_int, batch_size, "batch_size", who)
        self.pairs = pairs
        self.num_pairs = arguments.integer(num_pairs, "num_pairs", who, low=2)
        self.far = arguments.number(far, "far", who, low=0.0, high=1.0)
        self.seed = arguments.seed(seed, who)
        self.reference_x = reference_x
        self.reference_labels = reference_labels
        self.r_precision = arguments.boolean(r_precision, "r_precision", who)
        self.clustering = arguments.boolean(clustering, "clustering", who)
        self._labels = _checks.as_labels(labels)
        self._reference_labels = (
            None if reference_labels is None
            else _checks.as_labels(reference_labels, what="reference_labels")
        )
        if self._reference_labels is not None and not np.isin(self._labels, self._reference_labels).any():
            raise ValueError(
                "EmbeddingEvaluation: no class of `labels` appears in `reference_labels`, so no "
                "query has a correct answer in the gallery; pass a gallery of the same classes."
            )
        # Drawn now, so that bad labels fail before training, and the same pairs serve every epoch.
        self._pairs = (
            verification_pairs(self._labels, num_pairs=self.num_pairs, seed=self.seed) if pairs is None else pairs
        )

    # ------------------------------------------------------------- outputs
    def _output_names(self):
        names = getattr(self.model, "output_names", None)
        inner = getattr(self.model, "model", None)  # lossweave.Objective wraps the user's model
        if not names and isinstance(inner, keras.Model):
            names = getattr(inner, "output_names", None)
        return list(names or [])

    def _select(self, outputs):
        """The embedding among the model's predicted outputs, as a NumPy array."""
        if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
            outputs = outputs[0]
        if isinstance(outputs, (list, tuple)):
            names = self._output_names()
            if len(names) != len(outputs):
                raise ValueError(
                    f"EmbeddingEvaluation: the model returned a list of {len(outputs)} outputs "
                    "whose names are unknown; return a dict of named outputs."
                )
            outputs = dict(zip(names, outputs))
        if isinstance(outputs, dict):
            if self.output is None and len(outputs) == 1:
                return np.asarray(next(iter(outputs.values())))
            if self.output not in outputs:
                raise ValueError(
                    f"EmbeddingEvaluation: output={self.output!r}, but the model returns outputs "
                    f"{sorted(outputs)}; set `output` to the embedding's name."
                )
            return np.asarray(outputs[self.output])
        return np.asarray(outputs)

    def embed(self, x=None):
        """The embedding of ``x`` (default: the callback's ``x``) under the current weights, ``(n, dim)``."""
        outputs = self.model.predict(self.x if x is None else x, batch_size=self.batch_size, verbose=0)
        embedding = self._select(outputs)
        if embedding.ndim > 2:
            embedding = embedding.reshape(embedding.shape[0], -1)
        return embedding

    def evaluate(self):
        """``evaluate_embeddings`` of the current embedding of ``x`` (keys without prefix)."""
        reference = {}
        if self.reference_x is not None:
            reference = {"reference_embeddings": self.embed(self.reference_x),
                         "reference_labels": self._reference_labels}
        return evaluate_embeddings(
            self.embed(), self._labels, metric=self.metric, ks=self.ks, pairs=self._pairs, far=self.far,
            seed=self.seed, r_precision=self.r_precision, clustering=self.clustering, **reference,
        )

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        figures = self.evaluate()
        if logs is not None:
            logs.update({self.prefix + key: value for key, value in figures.items()})

    def get_config(self):
        """Constructor arguments (``x``, ``labels``, ``pairs`` and the reference set as given, not JSON)."""
        return {
            "x": self.x,
            "labels": self.labels,
            "every": self.every,
            "output": self.output,
            "metric": self.metric,
            "prefix": self.prefix,
            "ks": self.ks,
            "batch_size": self.batch_size,
            "pairs": self.pairs,
            "num_pairs": self.num_pairs,
            "far": self.far,
            "seed": self.seed,
            "reference_x": self.reference_x,
            "reference_labels": self.reference_labels,
            "r_precision": self.r_precision,
            "clustering": self.clustering,
        }
