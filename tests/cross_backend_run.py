"""Compute every term and weighting strategy under one backend (KERAS_BACKEND) into an .npz.

``python tests/cross_backend_run.py OUT.npz``. ``test_cross_backend.py`` runs it
under TensorFlow, JAX and PyTorch and compares the files key by key; keys are
``<case>|<quantity>`` and every case below gives its name to one test.

Everything starts from the same NumPy arrays (inputs, labels, variables, term
gradients), so the backends must agree to float32 round-off:

- terms: two training calls on two batches: the loss, its gradient with
  respect to the inputs and to the term's trainable variables, and every
  non-trainable variable after each call (centers, memory, counters);
- loss-level strategies: three training steps of ``combine``: the total, the
  weights and the state after each step; then the gradient of the total with
  respect to the losses (evaluation, at the final state);
- gradient-level strategies: three steps of ``aggregate_rows`` on the same
  per-term gradients of three shared variables: the updates, the weights and
  the state after each step.

Seeded draws are the backend's own (``keras.random``: different generators),
so what they drive is compared only where it is deterministic: seed-generator
states are never compared; PCGrad and GradVac run with two terms (one other
term: no order to draw); class-sampling terms see a batch holding every class
(every class is then sampled, only the slots' order is drawn, and the loss
does not depend on it); RLW's training weights and GradDrop's choices on
mixed-sign elements are stored under ``drawn|`` keys, which the test checks
per backend (RLW: a softmax, the total its weighted sum; GradDrop: each
element one of its two sign choices) but not across backends.
"""

import sys

import keras
import numpy as np
from keras import ops

import lossweave as lw
from lossweave.trainer import gramian

BACKEND = keras.backend.backend()
N, DIM, CLASSES = 8, 3, 4
_rng = np.random.default_rng(11)
X = [_rng.normal(size=(N, DIM)).astype("float32") for _ in range(2)]
VIEWS = [x + 0.3 * _rng.normal(size=(N, DIM)).astype("float32") for x in X]
LOGITS = [_rng.normal(size=(N, CLASSES)).astype("float32") for _ in range(2)]
LABELS = [np.array([0, 1, 2, 3, 0, 1, 2, 3]), np.array([1, 1, 0, 2, 3, 3, 2, 0])]  # every class in each
SAME = [np.array([1, 0, 1, 0, 1, 1, 0, 0]), np.array([0, 1, 1, 0, 0, 1, 1, 0])]


def _sce():
    return lw.terms.Loss(keras.losses.SparseCategoricalCrossentropy(from_logits=True), on="logits")


# name -> (term factory, what it reads: "embedding", "logits", "views", or "siamese" (two outputs, 0/1 target)).
TERMS = {
    "SoftmaxCrossEntropy": (lambda: lw.terms.SoftmaxCrossEntropy(), "logits"),
    "Loss": (_sce, "logits"),
    "CenterLoss": (lambda: lw.terms.CenterLoss(CLASSES, alpha=0.5), "embedding"),
    "CenterLoss-gradient": (lambda: lw.terms.CenterLoss(CLASSES, update="gradient"), "embedding"),
    "MarginSoftmax": (lambda: lw.terms.MarginSoftmax(CLASSES, scale=16.0), "embedding"),
    "NormFace": (lambda: lw.terms.NormFace(CLASSES, learn_scale=True), "embedding"),
    "CosFace": (lambda: lw.terms.CosFace(CLASSES, scale=16.0), "embedding"),
    "ArcFace": (lambda: lw.terms.ArcFace(CLASSES, scale=16.0), "embedding"),
    "ArcFace-easy_margin": (lambda: lw.terms.ArcFace(CLASSES, scale=16.0, easy_margin=True), "embedding"),
    "ArcFace-sampling": (
        lambda: lw.terms.ArcFace(CLASSES, scale=16.0, sample_rate=0.5, seed=1, negative_threshold=0.4), "embedding"
    ),
    "CombinedMargin": (lambda: lw.terms.CombinedMargin(CLASSES, scale=16.0), "embedding"),
    "SubCenterArcFace": (lambda: lw.terms.SubCenterArcFace(CLASSES, sub_centers=2, scale=16.0), "embedding"),
    "SphereFace": (lambda: lw.terms.SphereFace(CLASSES, base=10.0), "embedding"),
    "LargeMarginSoftmax": (lambda: lw.terms.LargeMarginSoftmax(CLASSES, base=10.0, gamma=0.5, power=1.0), "embedding"),
    "AdaFace": (lambda: lw.terms.AdaFace(CLASSES, scale=16.0, update_rate=0.5, initial_mean=1.5, initial_std=1.0),
                "embedding"),
    "MagFace": (lambda: lw.terms.MagFace(CLASSES, scale=16.0, lower_norm=0.5, upper_norm=3.0, lambda_g=2.0,
                                         check_lambda=False), "embedding"),
    "CurricularFace": (lambda: lw.terms.CurricularFace(CLASSES, scale=16.0, update_rate=0.5), "embedding"),
    "AdaCos": (lambda: lw.terms.AdaCos(CLASSES), "embedding"),
    "AdaCos-sampling": (lambda: lw.terms.AdaCos(CLASSES, sample_rate=0.5, seed=1), "embedding"),
    # ElasticFace's draws are each backend's own: sigma = 0 makes them the mean on every backend (the
    # "+" ordering of equal margins is then moot); the draws are checked per backend in test_elastic.
    "ElasticArcFace": (lambda: lw.terms.ElasticArcFace(CLASSES, scale=16.0, sigma=0.0, plus=True, seed=1), "embedding"),
    "ElasticCosFace-sampling": (
        lambda: lw.terms.ElasticCosFace(CLASSES, scale=16.0, sigma=0.0, sample_rate=0.5, seed=1), "embedding"
    ),
    "ProxyAnchorLoss": (lambda: lw.terms.ProxyAnchorLoss(CLASSES), "embedding"),
    "ProxyNCALoss": (lambda: lw.terms.ProxyNCALoss(CLASSES), "embedding"),
    "ProxyNCALoss-plus-sampling": (
        lambda: lw.terms.ProxyNCALoss(CLASSES, temperature=1 / 9, include_positive=True, sample_rate=0.5, seed=1),
        "embedding",
    ),
    "ContrastiveLoss": (lambda: lw.terms.ContrastiveLoss(neg_margin=2.0), "embedding"),
    "SiameseContrastiveLoss": (
        lambda: lw.terms.SiameseContrastiveLoss(neg_margin=2.0, on=("left", "right"), target="same"), "siamese"
    ),
    "TripletLoss-semi-hard": (lambda: lw.terms.TripletLoss(margin=1.0), "embedding"),
    "TripletLoss-batch-hard-soft": (lambda: lw.terms.TripletLoss(mining="batch-hard", soft=True), "embedding"),
    "TripletLoss-batch-all": (
        lambda: lw.terms.TripletLoss(margin=0.5, mining="batch-all", distance="cosine"), "embedding"
    ),
    "LiftedStructureLoss": (lambda: lw.terms.LiftedStructureLoss(), "embedding"),
    "NPairsLoss": (lambda: lw.terms.NPairsLoss(), "embedding"),
    "MultiSimilarityLoss": (lambda: lw.terms.MultiSimilarityLoss(), "embedding"),
    "CircleLoss": (lambda: lw.terms.CircleLoss(relaxation=0.4, scale=80.0), "embedding"),
    "SupConLoss": (lambda: lw.terms.SupConLoss(temperature=0.2), "embedding"),
    "NTXentLoss": (lambda: lw.terms.NTXentLoss(temperature=0.5, on="embedding"), "embedding"),
    "TwoViewNTXentLoss": (lambda: lw.terms.TwoViewNTXentLoss(temperature=0.5), "views"),
    "CrossBatchMemory": (
        lambda: lw.terms.CrossBatchMemory(lw.terms.TripletLoss(mining="batch-hard"), memory_size=12), "embedding"
    ),
    # Distances, reducers and miners (lossweave.distances / reducers / miners), each through a loss.
    "ContrastiveLoss-normalized-nonzero-pairmargin": (
        lambda: lw.terms.ContrastiveLoss(neg_margin=1.5, distance=lw.distances.EuclideanDistance(True),
                                         reducer=lw.reducers.AvgNonZeroReducer(),
                                         miner=lw.miners.PairMarginMiner(0.1, 1.2)), "embedding"
    ),
    "TripletLoss-lp-threshold-tripletmargin": (
        lambda: lw.terms.TripletLoss(margin=0.5, distance=lw.distances.LpDistance(p=1.0, normalize_embeddings=True),
                                     reducer=lw.reducers.ThresholdReducer(low=0.05),
                                     miner=lw.miners.TripletMarginMiner(0.5, "all")), "embedding"
    ),
    "TripletLoss-dot-peranchor-easyhard": (
        lambda: lw.terms.TripletLoss(margin=0.3, distance=lw.distances.CosineSimilarity(),
                                     reducer=lw.reducers.PerAnchorReducer(),
                                     miner=lw.miners.BatchEasyHardMiner("easy", "semihard")), "embedding"
    ),
    "MultiSimilarityLoss-classweighted-hdc": (
        lambda: lw.terms.MultiSimilarityLoss(
            mining=False, reducer=lw.reducers.ClassWeightedReducer([1.0, 2.0, 0.5, 1.5]), miner=lw.miners.HDCMiner(0.6)
        ), "embedding"
    ),
    "ContrastiveLoss-angularminer": (
        lambda: lw.terms.ContrastiveLoss(neg_margin=1.5, miner=lw.miners.AngularMiner(30.0)), "embedding"
    ),
    "SupConLoss-squared-divisor": (
        lambda: lw.terms.SupConLoss(distance=lw.distances.SquaredEuclideanDistance(normalize_embeddings=True),
                                    reducer=lw.reducers.DivisorReducer(5.0)), "embedding"
    ),
    "ProxyNCALoss-distance": (
        lambda: lw.terms.ProxyNCALoss(CLASSES, distance=lw.distances.DotProductSimilarity(normalize_embeddings=True)),
        "embedding",
    ),
    # The tuple losses of lossweave.terms.tuple_losses (issue 23, item 4).
    "NCALoss": (lambda: lw.terms.NCALoss(), "embedding"),
    "MarginLoss": (lambda: lw.terms.MarginLoss(nu=0.1, num_classes=CLASSES, triplets=True), "embedding"),
    "TupletMarginLoss": (lambda: lw.terms.TupletMarginLoss(scale=8.0), "embedding"),
    "AngularLoss": (lambda: lw.terms.AngularLoss(), "embedding"),
    "GeneralizedLiftedStructureLoss": (lambda: lw.terms.GeneralizedLiftedStructureLoss(), "embedding"),
    "IntraPairVarianceLoss": (lambda: lw.terms.IntraPairVarianceLoss(), "embedding"),
    "SNRContrastiveLoss": (lambda: lw.terms.SNRContrastiveLoss(zero_mean_weight=0.1), "embedding"),
    "FastAPLoss": (lambda: lw.terms.FastAPLoss(), "embedding"),
    "SoftTripleLoss": (lambda: lw.terms.SoftTripleLoss(CLASSES, centers_per_class=3), "embedding"),
    # Ranking and two-view self-supervised losses (issue 23, item 4, second half).
    "SoftNearestNeighborLoss": (lambda: lw.terms.SoftNearestNeighborLoss(temperature=0.5), "embedding"),
    "HistogramLoss": (lambda: lw.terms.HistogramLoss(n_bins=20), "embedding"),
    "RankedListLoss": (lambda: lw.terms.RankedListLoss(positive_temperature=1.0), "embedding"),
    "PNPLoss-Ds": (lambda: lw.terms.PNPLoss(variant="Ds", anneal=0.1), "embedding"),
    "InstanceLoss": (lambda: lw.terms.InstanceLoss(scale=8.0), "embedding"),
    "SelfSupervisedLoss": (lambda: lw.terms.SelfSupervisedLoss(lw.terms.SupConLoss(temperature=0.5)), "views"),
    "VICRegLoss": (lambda: lw.terms.VICRegLoss(), "views"),
    "BarlowTwinsLoss": (lambda: lw.terms.BarlowTwinsLoss(redundancy_lambda=0.05), "views"),
}

NAMES3 = ["a", "b", "c"]
LOSS_STEPS = np.array([[1.2, 0.8, 2.0], [1.0, 0.7, 1.5], [0.9, 0.75, 1.1]], "float32")

LOSS_LEVEL = {
    "Weighting": lambda: lw.weighting.Weighting(),
    "Fixed": lambda: lw.weighting.Fixed({"a": 0.5, "b": lw.schedules.LinearWarmup(0.3, steps=2)}, default=2.0),
    "Convex": lambda: lw.weighting.Convex("a", "b", alpha=lw.schedules.Cosine(0.9, 0.1, steps=2)),
    "Convex-trainable": lambda: lw.weighting.Convex("b", "c", alpha=0.3, learn_alpha=True),
    "Uncertainty": lambda: lw.weighting.Uncertainty({"a": "classification"}),
    "Uncertainty-nonnegative": lambda: lw.weighting.Uncertainty(nonnegative=True),
    "DWA": lambda: lw.weighting.DWA(steps_per_epoch=1),
    "RLW": lambda: lw.weighting.RLW(seed=1),
    "GLS": lambda: lw.weighting.GLS(),
    "FAMO": lambda: lw.weighting.FAMO(beta=0.5, gamma=0.01),
    "Scaled": lambda: lw.weighting.Scaled(lw.weighting.Uncertainty({"a": "classification"}), {"b": 3.0}),
    "LogLosses": lambda: lw.weighting.LogLosses(lw.weighting.Uncertainty({"b": "classification"})),
}

# Three shared variables; (K, *shape) rows per step.
ENTRIES = [("trunk/kernel", (3, 2)), ("trunk/bias", (2,)), ("top/kernel", (2, 2))]

# name -> (factory, K, rows): "mixed" signs, or "agreeing" (all K terms share each element's sign).
# A case is named after its class, then "-" and what sets it apart.
GRADIENT_LEVEL = {
    "Sum": (lambda: lw.weighting.Sum(), 3, "mixed"),
    "Mean": (lambda: lw.weighting.Mean(), 3, "mixed"),
    "MGDA": (lambda: lw.weighting.MGDA(), 3, "mixed"),
    "MGDA-loss+": (lambda: lw.weighting.MGDA(normalization="loss+"), 3, "mixed"),
    "PCGrad": (lambda: lw.weighting.PCGrad(seed=0), 2, "mixed"),
    "CAGrad": (lambda: lw.weighting.CAGrad(c=0.5, rescale=1), 3, "mixed"),
    "NashMTL": (lambda: lw.weighting.NashMTL(update_weights_every=2, max_norm=1.5), 3, "mixed"),
    "UPGrad": (lambda: lw.weighting.UPGrad(preference={"a": 2.0}), 3, "mixed"),
    "DualProj": (lambda: lw.weighting.DualProj(), 3, "mixed"),
    "IMTLG": (lambda: lw.weighting.IMTLG(), 3, "mixed"),
    "AlignedMTL": (lambda: lw.weighting.AlignedMTL(), 3, "mixed"),
    "AlignedMTL-median": (lambda: lw.weighting.AlignedMTL(scale_mode="median", preference={"b": 2.0}), 3, "mixed"),
    "ConFIG": (lambda: lw.weighting.ConFIG(), 3, "mixed"),
    "ConFIG-harmonic": (lambda: lw.weighting.ConFIG(length="harmonic"), 3, "mixed"),
    "GradVac": (lambda: lw.weighting.GradVac(beta=0.5, grouping="layer", seed=0), 2, "mixed"),
    "GradDrop": (lambda: lw.weighting.GradDrop(leak=[0.2, 0.0, 0.5], seed=0), 3, "agreeing"),
    "GradDrop-mixed": (lambda: lw.weighting.GradDrop(leak=[0.2, 0.0, 0.5], seed=0), 3, "mixed"),
    "MoCo": (lambda: lw.weighting.MoCo(beta=0.5, gamma=0.2, rho=0.1), 3, "mixed"),
    "DBMTL": (lambda: lw.weighting.DBMTL(beta=0.8, beta_sigma=0.5), 3, "mixed"),
    "GradNorm": (lambda: lw.weighting.GradNorm(alpha=1.0, learning_rate=0.1), 3, "mixed"),
    "Scaled-mgda": (lambda: lw.weighting.Scaled(lw.weighting.MGDA(), {"a": 4.0, "c": 0.5}), 3, "mixed"),
    "LogLosses-nash": (lambda: lw.weighting.LogLosses(lw.weighting.NashMTL(max_norm=0.0)), 3, "mixed"),
}
DRAWN = {"RLW", "GradDrop-mixed"}  # compared per backend only (see the module docstring)

# The cases compared across backends (GradDrop-mixed has drawn results only).
CASES = sorted([*TERMS, *LOSS_LEVEL, *GRADIENT_LEVEL])
CASES.remove("GradDrop-mixed")


def gradient_rows(k, kind, step):
    """The (K, *shape) rows of each entry at ``step`` (the same NumPy arrays on every backend)."""
    rng = np.random.default_rng(100 + 10 * k + step)
    rows = [rng.normal(size=(k, *shape)).astype("float32") for _, shape in ENTRIES]
    if kind == "agreeing":
        signs = [np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype("float32") for _, shape in ENTRIES]
        rows = [np.abs(r) * s[None] for r, s in zip(rows, signs)]
    return rows


# ------------------------------------------------------------------ helpers
def _numpy(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float32")


def _state(layer):
    """The non-trainable state to compare: not seed-generator states (each backend draws its own)."""
    return [v for v in layer.non_trainable_variables if "seed_generator_state" not in v.path]


def _inputs(reads, batch):
    """(list of float arrays, how to structure them, labels) of one batch."""
    if reads == "logits":
        return [LOGITS[batch]], lambda t: t[0], LABELS[batch]
    if reads == "views":
        return [X[batch], VIEWS[batch]], tuple, LABELS[batch]
    if reads == "siamese":
        return [X[batch], VIEWS[batch]], tuple, SAME[batch]
    return [X[batch]], lambda t: t[0], LABELS[batch]


def _set_variables(term, seed):
    """Every float variable from NumPy (a scalar, NormFace's learned scale, to 8)."""
    rng = np.random.default_rng(seed)
    for v in term.variables:
        if "float" in str(v.dtype) and "seed_generator_state" not in v.path:
            value = np.full(v.shape, 8.0) if len(v.shape) == 0 else rng.normal(size=tuple(v.shape))
            v.assign(value.astype("float32"))


def _term_step(term, arrays, structure, labels):
    """``(loss, input gradients, variable gradients)`` of one training call; the call updates the state."""
    trainable = term.trainable_variables
    if BACKEND == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in arrays]
        with tf.GradientTape() as tape:
            for t in tensors:
                tape.watch(t)
            loss = term(structure(tensors), labels, training=True)
        grads = tape.gradient(
            loss, tensors + [v.value for v in trainable], unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        return loss, grads[: len(tensors)], grads[len(tensors):]
    if BACKEND == "torch":
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
        loss = term(structure(tensors), labels, training=True)
        targets = tensors + [v.value for v in trainable]
        grads = torch.autograd.grad(loss, targets, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, targets)]
        return loss.detach(), grads[: len(tensors)], grads[len(tensors):]
    import jax

    state = term.non_trainable_variables
    step = getattr(term, "_cross_backend_step", None)
    if step is None:  # one compile per term (both batches have the same shapes)

        def loss_of(trainable_values, input_values, state_values, y):
            return term.stateless_call(trainable_values, state_values, structure(input_values), y, training=True)

        step = term._cross_backend_step = jax.jit(jax.value_and_grad(loss_of, argnums=(0, 1), has_aux=True))
    (loss, new_state), (variable_grads, input_grads) = step(
        [v.value for v in trainable], list(arrays), [v.value for v in state], labels
    )
    for variable, value in zip(state, new_state):
        variable.assign(value)
    return loss, input_grads, variable_grads


def run_terms(out):
    for name, (factory, reads) in TERMS.items():
        term = factory()
        arrays, structure, _ = _inputs(reads, 0)
        term.build(structure([a.shape for a in arrays]))
        _set_variables(term, seed=len(name))
        for batch in range(2):
            arrays, structure, labels = _inputs(reads, batch)
            loss, input_grads, variable_grads = _term_step(term, arrays, structure, labels)
            out[f"{name}|loss{batch}"] = _numpy(loss)
            for i, g in enumerate(input_grads):
                out[f"{name}|grad{batch}/input{i}"] = _numpy(g)
            for v, g in zip(term.trainable_variables, variable_grads):
                out[f"{name}|grad{batch}/{v.path}"] = _numpy(g)
            for v in _state(term):
                out[f"{name}|state{batch}/{v.path}"] = _numpy(v)


def _losses(names, vector):
    return {n: ops.convert_to_tensor(vector[i]) for i, n in enumerate(names)}


def _total_gradient(weighting, vector, step):
    """d total / d losses at the current state, in evaluation (which changes no state)."""

    def total(v):
        return weighting.combine({n: v[i] for i, n in enumerate(NAMES3)}, step=step, training=False)[0]

    if BACKEND == "tensorflow":
        import tensorflow as tf

        v = tf.constant(vector)
        with tf.GradientTape() as tape:
            tape.watch(v)
            value = total(v)
        return tape.gradient(value, v)
    if BACKEND == "torch":
        import torch

        v = torch.tensor(vector, requires_grad=True)
        return torch.autograd.grad(total(v), v)[0]
    import jax

    return jax.grad(total)(vector)


def run_loss_level(out):
    for name, factory in LOSS_LEVEL.items():
        weighting = factory()
        weighting.setup(NAMES3)
        for v in weighting.trainable_variables:  # learned weights away from their initial value
            v.assign(np.linspace(0.3, -0.2, int(np.prod(v.shape)), dtype="float32").reshape(v.shape))
        prefix = "drawn|" if name in DRAWN else ""
        for step, vector in enumerate(LOSS_STEPS):
            total, weights = weighting.combine(_losses(NAMES3, vector), step=step, training=True)
            out[f"{prefix}{name}|total{step}"] = _numpy(total)
            out[f"{prefix}{name}|weights{step}"] = np.stack([_numpy(weights[n]) for n in NAMES3])
            for v in _state(weighting):
                out[f"{name}|state{step}/{v.path}"] = _numpy(v)
        out[f"{name}|evaluation_total"] = _numpy(
            weighting.combine(_losses(NAMES3, LOSS_STEPS[-1]), step=3, training=False)[0]
        )
        out[f"{name}|evaluation_gradient"] = _numpy(_total_gradient(weighting, LOSS_STEPS[-1], 3))


def _aggregate(weighting, rows, losses, step, k):
    """One training step of ``aggregate_rows`` (its state updated); compiled once per strategy on JAX."""
    if BACKEND != "jax":
        return weighting.aggregate_rows(rows, gramian(rows, k), losses, step, True)
    import jax

    state = weighting.non_trainable_variables
    compiled = getattr(weighting, "_cross_backend_step", None)
    if compiled is None:  # eager JAX compiles every op of the solvers one by one: slower

        def pure(values, rows, losses, step):
            with keras.StatelessScope(state_mapping=list(zip(state, values))) as scope:
                updates, weights = weighting.aggregate_rows(rows, gramian(rows, k), losses, step, True)
            return updates, weights, [scope.get_current_value(v) for v in state]

        compiled = weighting._cross_backend_step = jax.jit(pure)
    updates, weights, values = compiled([v.value for v in state], rows, losses, np.int32(step))
    for variable, value in zip(state, values):
        variable.assign(value)
    return updates, weights


def run_gradient_level(out):
    for name, (factory, k, kind) in GRADIENT_LEVEL.items():
        weighting = factory()
        weighting.setup(NAMES3[:k])
        weighting.build_rows(ENTRIES)
        prefix = "drawn|" if name in DRAWN else ""
        for step in range(3):
            rows = [ops.convert_to_tensor(r) for r in gradient_rows(k, kind, step)]
            losses = ops.convert_to_tensor(LOSS_STEPS[step, :k])
            updates, weights = _aggregate(weighting, rows, losses, step, k)
            out[f"{prefix}{name}|update{step}"] = np.concatenate([_numpy(u).ravel() for u in updates])
            if name not in DRAWN:  # GradDrop's kept fractions follow its draws
                out[f"{name}|weights{step}"] = _numpy(weights)
            for v in _state(weighting):
                out[f"{name}|state{step}/{v.path}"] = _numpy(v)


def run_fit(out):
    """Center loss after a short fit of a small model: the whole train step, not one call."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(64, 10)).astype("float32")
    y = rng.integers(0, 5, 64)
    inputs = keras.Input((10,))
    emb = keras.layers.Dense(3)(keras.layers.Dense(8, activation="tanh")(inputs))
    model = keras.Model(inputs, {"embedding": emb, "logits": keras.layers.Dense(5)(emb)})
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32") for w in model.get_weights()])
    objective = lw.Objective(
        model,
        {"softmax": lw.terms.SoftmaxCrossEntropy(on="logits"), "center": lw.terms.CenterLoss(5, on="embedding")},
        weighting=lw.weighting.Fixed({"center": 0.1}),
    )
    objective.compile(optimizer=keras.optimizers.SGD(0.1))
    objective.fit(x, {"label": y}, batch_size=16, epochs=3, shuffle=False, verbose=0)
    out["fit|centers"] = _numpy(objective.terms["center"].centers)


def main(path):
    out = {}
    run_terms(out)
    run_loss_level(out)
    run_gradient_level(out)
    run_fit(out)
    np.savez(path, backend=np.array(BACKEND), **out)


if __name__ == "__main__":
    main(sys.argv[1])
