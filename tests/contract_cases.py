"""Every public class constructed with a non-default value for every constructor argument.

``tests/test_contract.py`` round-trips each entry through its config and a
saved ``.keras`` file and compares the objects attribute by attribute; it fails
when a public class has no entry here, or when an ``__init__`` argument (its
own or one a base class takes through ``**kwargs``: ``on``, ``target``,
``validate``, ``missing``, Layer's ``name`` and ``dtype``) is given its default
value or not given at all. A new class or argument joins by being listed.

The model the terms read (``contract_model``) has the outputs ``features``
(batch, 3), ``scores`` (batch, 4) and ``other`` (batch, 3); no default ``on``
is one of these names, so every ``on`` below is non-default. Weightings combine
two terms, ``a`` and ``b``.
"""

import keras
from keras import ops

import lossweave as lw
from lossweave.terms.pairs import TupleArguments

CLASSES, DIM = 4, 3
DTYPE = "mixed_bfloat16"  # a Layer dtype other than the float32 every term and strategy defaults to


@keras.saving.register_keras_serializable(package="lossweave_tests")
def contract_ramp(t):
    """A registered step -> value function (a lambda cannot be loaded in safe mode)."""
    return ops.minimum(t / 10.0, 1.0)


class Fresh:
    """An argument made anew for every construction (a Layer has one parent)."""

    def __init__(self, make):
        self.make = make


def arguments(case):
    """``(cls, kwargs)`` of ``case``, with its ``Fresh`` arguments made now."""
    cls, kwargs = CASES[case]
    return cls, {k: v.make() if isinstance(v, Fresh) else v for k, v in kwargs.items()}


def build(case):
    """The object of ``case``."""
    cls, kwargs = arguments(case)
    return cls(**kwargs)


def layer(name):
    """Layer arguments: a name and a dtype other than the defaults (Keras names a layer after its class)."""
    return {"name": f"given_{name}", "dtype": DTYPE}


def labelled(on="features", **extra):
    """Term arguments shared by the labelled terms: all non-default."""
    return {"on": on, "target": "ids", "validate": False, "missing": -1, **extra}


SAMPLING = {"sample_rate": 0.5, "seed": 7, "negative_threshold": 0.4}

TERMS = {
    "term": (lw.terms.Term, {"on": "scores", "target": "ids", "missing": -2.0, "validate": False, **layer("term")}),
    "loss": (
        lw.terms.Loss,
        {"loss": keras.losses.MeanSquaredError(reduction="sum"), "on": "scores", "target": "score",
         "missing": -2.0, "validate": False, **layer("loss")},
    ),
    "softmax": (lw.terms.SoftmaxCrossEntropy, {**labelled("scores"), **layer("softmax")}),
    "center": (
        lw.terms.CenterLoss,
        {"num_classes": CLASSES, "alpha": 0.25, "update": "gradient", "centers_initializer": "ones",
         **labelled(), **layer("center")},
    ),
    "margin_softmax": (
        lw.terms.MarginSoftmax,
        {"num_classes": CLASSES, "scale": 8.0, "sub_centers": 2, "class_weights_initializer": "he_normal",
         **SAMPLING, **labelled(), **layer("margin_softmax")},
    ),
    "normface": (
        lw.terms.NormFace,
        {"num_classes": CLASSES, "scale": 10.0, "learn_scale": True, "sub_centers": 2,
         "class_weights_initializer": "he_normal", **SAMPLING, **labelled(), **layer("normface")},
    ),
    "cosface": (
        lw.terms.CosFace,
        {"num_classes": CLASSES, "scale": 30.0, "cosine_margin": 0.2, "sub_centers": 2,
         "class_weights_initializer": "he_normal", **SAMPLING, **labelled(), **layer("cosface")},
    ),
    "arcface": (
        lw.terms.ArcFace,
        {"num_classes": CLASSES, "scale": 30.0, "angular_margin": 0.3, "easy_margin": True, "sub_centers": 2,
         "class_weights_initializer": "he_normal", **SAMPLING, **labelled(), **layer("arcface")},
    ),
    "combined_margin": (
        lw.terms.CombinedMargin,
        {"num_classes": CLASSES, "scale": 30.0, "multiplicative_margin": 1.5, "angular_margin": 0.2, "cosine_margin": 0.1, "sub_centers": 2,
         "class_weights_initializer": "he_normal", **SAMPLING, **labelled(), **layer("combined_margin")},
    ),
    "subcenter_arcface": (
        lw.terms.SubCenterArcFace,
        {"num_classes": CLASSES, "sub_centers": 2, "scale": 32.0, "angular_margin": 0.4, "easy_margin": True,
         "class_weights_initializer": "he_normal", **SAMPLING, **labelled(), **layer("subcenter_arcface")},
    ),
    "elastic_arcface": (
        lw.terms.ElasticArcFace,
        {"num_classes": CLASSES, "scale": 30.0, "angular_margin": 0.4, "sigma": 0.02, "plus": True,
         "plus_order": "paper", "sub_centers": 2, "class_weights_initializer": "he_normal", **SAMPLING, **labelled(),
         **layer("elastic_arcface")},
    ),
    "elastic_cosface": (
        lw.terms.ElasticCosFace,
        {"num_classes": CLASSES, "scale": 30.0, "cosine_margin": 0.3, "sigma": 0.03, "plus": True,
         "plus_order": "paper", "sub_centers": 2, "class_weights_initializer": "he_normal", **SAMPLING, **labelled(),
         **layer("elastic_cosface")},
    ),
    "adaface": (
        lw.terms.AdaFace,
        {"num_classes": CLASSES, "scale": 32.0, "margin": 0.3, "h": 0.5, "update_rate": 0.99, "initial_mean": 10.0,
         "initial_std": 5.0, "sub_centers": 2, "class_weights_initializer": "he_normal", **SAMPLING, **labelled(),
         **layer("adaface")},
    ),
    "magface": (
        lw.terms.MagFace,
        {"num_classes": CLASSES, "scale": 32.0, "lower_norm": 5.0, "upper_norm": 50.0, "lower_margin": 0.4,
         "upper_margin": 0.7, "lambda_g": 5.0, "easy_margin": False, "check_lambda": False, "sub_centers": 2,
         "class_weights_initializer": "he_normal", **SAMPLING, **labelled(), **layer("magface")},
    ),
    "curricular_face": (
        lw.terms.CurricularFace,
        {"num_classes": CLASSES, "scale": 32.0, "angular_margin": 0.4, "update_rate": 0.99, "initial_t": 0.1,
         "sub_centers": 2, "class_weights_initializer": "he_normal", **SAMPLING, **labelled(),
         **layer("curricular_face")},
    ),
    "adacos": (
        lw.terms.AdaCos,
        {"num_classes": CLASSES, "scale": 5.0, "dynamic": False, "sub_centers": 2,
         "class_weights_initializer": "he_normal", **SAMPLING, **labelled(), **layer("adacos")},
    ),
    "sphereface": (
        lw.terms.SphereFace,
        {"num_classes": CLASSES, "multiplicative_margin": 3, "base": 100.0, "gamma": 0.2, "power": 2.0, "lambda_min": 1.0,
         "sub_centers": 2, "class_weights_initializer": "he_normal", **SAMPLING, **labelled(),
         **layer("sphereface")},
    ),
    "large_margin_softmax": (
        lw.terms.LargeMarginSoftmax,
        {"num_classes": CLASSES, "multiplicative_margin": 3, "scale": 2.0, "base": 100.0, "gamma": 0.2, "power": 2.0,
         "lambda_min": 1.0, "class_weights_initializer": "he_normal", "sample_rate": 0.5, "seed": 7, **labelled(),
         **layer("large_margin_softmax")},
    ),
    "proxy_anchor": (
        lw.terms.ProxyAnchorLoss,
        {"num_classes": CLASSES, "delta": 0.2, "scale": 16.0,
         "proxies_initializer": keras.initializers.RandomNormal(stddev=0.5, seed=3),
         "distance": lw.distances.CosineDistance(), **SAMPLING,
         **labelled(), **layer("proxy_anchor")},
    ),
    "proxy_nca": (
        lw.terms.ProxyNCALoss,
        {"num_classes": CLASSES, "temperature": 1 / 9, "include_positive": True, "squared": False,
         "proxies_initializer": "he_uniform",
         "distance": lw.distances.LpDistance(p=2.0, power=2.0, normalize_embeddings=True), **SAMPLING,
         **labelled(), **layer("proxy_nca")},
    ),
    "pair_term": (lw.terms.PairTerm, {**labelled(), **layer("pair_term")}),
    "contrastive": (
        lw.terms.ContrastiveLoss,
        {"pos_margin": 0.1, "neg_margin": 2.0, "distance": "cosine", "reducer": lw.reducers.AvgNonZeroReducer(),
         "miner": lw.miners.PairMarginMiner(0.1, 1.5), "hinge": "linear", "reduce_parts": True, **labelled(),
         **layer("contrastive")},
    ),
    "contrastive_siamese": (
        lw.terms.SiameseContrastiveLoss,
        {"pos_margin": 0.2, "neg_margin": 1.5, "distance": "squared_euclidean", **labelled(("features", "other")),
         **layer("contrastive_siamese")},
    ),
    "triplet": (
        lw.terms.TripletLoss,
        {"margin": 0.5, "mining": "batch-hard", "distance": "squared_euclidean", "soft": True, "average": "all",
         "reducer": lw.reducers.ThresholdReducer(low=0.1, high=3.0),
         "miner": lw.miners.BatchEasyHardMiner("hard", "semihard"),
         **labelled(), **layer("triplet")},
    ),
    "lifted": (
        lw.terms.LiftedStructureLoss,
        {"margin": 0.5, "distance": lw.distances.LpDistance(p=1.5), "reducer": lw.reducers.DivisorReducer(4.0),
         "miner": lw.miners.HDCMiner(0.7), **labelled(), **layer("lifted")},
    ),
    "npairs": (
        lw.terms.NPairsLoss,
        {"l2_reg": 0.01, "distance": "cosine_similarity", "reducer": lw.reducers.PerAnchorReducer(True),
         **labelled(), **layer("npairs")},
    ),
    "multi_similarity": (
        lw.terms.MultiSimilarityLoss,
        {"alpha": 3.0, "beta": 40.0, "base": 0.5, "epsilon": 0.2, "mining": False,
         "distance": lw.distances.DotProductSimilarity(normalize_embeddings=True),
         "reducer": lw.reducers.ClassWeightedReducer([1.0, 2.0, 0.5, 1.0]),
         "miner": lw.miners.MultiSimilarityMiner(0.3), **labelled(), **layer("multi_similarity")},
    ),
    "circle": (
        lw.terms.CircleLoss,
        {"relaxation": 0.4, "scale": 80.0, "distance": lw.distances.DotProductSimilarity(),
         "reducer": lw.reducers.AvgNonZeroReducer(), "miner": lw.miners.TripletMarginMiner(0.3, "semihard"),
         **labelled(), **layer("circle")},
    ),
    "supcon": (
        lw.terms.SupConLoss,
        {"temperature": 0.2, "distance": lw.distances.EuclideanDistance(normalize_embeddings=True),
         "reducer": lw.reducers.PerAnchorReducer(), "miner": lw.miners.BatchHardMiner(), **labelled(),
         **layer("supcon")},
    ),
    "ntxent_views": (
        lw.terms.TwoViewNTXentLoss,
        {"temperature": 0.5, "distance": lw.distances.SNRDistance(normalize_embeddings=True),
         "reducer": lw.reducers.MeanReducer(), **labelled(("features", "other")), **layer("ntxent_views")},
    ),
    "ntxent": (
        lw.terms.NTXentLoss,
        {"temperature": 0.3, "distance": lw.distances.SquaredEuclideanDistance(normalize_embeddings=True),
         "reducer": lw.reducers.AvgNonZeroReducer(), "miner": lw.miners.SemiHardNegativeMiner(), **labelled(),
         **layer("ntxent")},
    ),
    "nca": (
        lw.terms.NCALoss,
        {"scale": 2.0, "distance": lw.distances.EuclideanDistance(normalize_embeddings=True),
         "reducer": lw.reducers.PerAnchorReducer(), "miner": lw.miners.PairMarginMiner(0.1, 1.5), **labelled(),
         **layer("nca")},
    ),
    "margin_loss": (
        lw.terms.MarginLoss,
        {"margin": 0.3, "beta": 1.0, "nu": 0.01, "learn_beta": False, "num_classes": CLASSES, "triplets": True,
         "distance": "squared_euclidean", "reducer": lw.reducers.MeanReducer(), "miner": lw.miners.BatchHardMiner(),
         **labelled(), **layer("margin_loss")},
    ),
    "tuplet_margin": (
        lw.terms.TupletMarginLoss,
        {"angular_margin": 0.2, "scale": 32.0, "distance": lw.distances.DotProductSimilarity(normalize_embeddings=True),
         "reducer": lw.reducers.AvgNonZeroReducer(), "miner": lw.miners.MultiSimilarityMiner(0.2), **labelled(),
         **layer("tuplet_margin")},
    ),
    "angular": (
        lw.terms.AngularLoss,
        {"angle": 45.0, "reducer": lw.reducers.AvgNonZeroReducer(), "miner": lw.miners.HDCMiner(0.7), **labelled(),
         **layer("angular")},
    ),
    "generalized_lifted": (
        lw.terms.GeneralizedLiftedStructureLoss,
        {"pos_margin": 0.1, "neg_margin": 0.8, "distance": "cosine", "reducer": lw.reducers.DivisorReducer(4.0),
         "miner": lw.miners.TripletMarginMiner(0.3, "hard"), **labelled(), **layer("generalized_lifted")},
    ),
    "intra_pair_variance": (
        lw.terms.IntraPairVarianceLoss,
        {"pos_eps": 0.05, "neg_eps": 0.02, "distance": "euclidean", "reducer": lw.reducers.AvgNonZeroReducer(),
         "miner": lw.miners.PairMarginMiner(0.1, 1.5), **labelled(), **layer("intra_pair_variance")},
    ),
    "snr_contrastive": (
        lw.terms.SNRContrastiveLoss,
        {"pos_margin": 0.1, "neg_margin": 0.9, "zero_mean_weight": 0.1,
         "distance": lw.distances.SNRDistance(normalize_embeddings=True), "reducer": lw.reducers.MeanReducer(),
         "miner": lw.miners.BatchEasyHardMiner("hard", "hard"), **labelled(), **layer("snr_contrastive")},
    ),
    "soft_triple": (
        lw.terms.SoftTripleLoss,
        {"num_classes": CLASSES, "centers_per_class": 3, "scale": 16.0, "gamma": 0.2, "cosine_margin": 0.05,
         "tau": 0.1, "proxies_initializer": "he_normal", **SAMPLING, **labelled(), **layer("soft_triple")},
    ),
    "fast_ap": (
        lw.terms.FastAPLoss,
        {"num_bins": 8, "reducer": lw.reducers.PerAnchorReducer(), **labelled(), **layer("fast_ap")},
    ),
    "self_supervised": (
        lw.terms.SelfSupervisedLoss,
        {"loss": Fresh(lambda: lw.terms.NTXentLoss(temperature=0.3, name="inner_ntxent")), "symmetric": False,
         **labelled(("features", "other")), **layer("self_supervised")},
    ),
    "vicreg": (
        lw.terms.VICRegLoss,
        {"invariance_lambda": 5.0, "variance_mu": 10.0, "covariance_v": 2.0, "eps": 1e-3,
         **labelled(("features", "other")), **layer("vicreg")},
    ),
    "barlow_twins": (
        lw.terms.BarlowTwinsLoss,
        {"redundancy_lambda": 0.01, "eps": 1e-4, **labelled(("features", "other")), **layer("barlow_twins")},
    ),
    "soft_nearest_neighbor": (
        lw.terms.SoftNearestNeighborLoss,
        {"temperature": 0.5, "distance": lw.distances.CosineSimilarity(), "reducer": lw.reducers.PerAnchorReducer(),
         "miner": lw.miners.PairMarginMiner(0.1, 1.5), **labelled(), **layer("soft_nearest_neighbor")},
    ),
    "histogram": (
        lw.terms.HistogramLoss,
        {"n_bins": 20, "distance": lw.distances.DotProductSimilarity(normalize_embeddings=True),
         "reducer": lw.reducers.AvgNonZeroReducer(), "miner": lw.miners.HDCMiner(0.7), **labelled(),
         **layer("histogram")},
    ),
    "ranked_list": (
        lw.terms.RankedListLoss,
        {"margin": 0.6, "negative_temperature": 5.0, "imbalance": 0.3, "boundary": 1.1, "positive_temperature": 2.0,
         "distance": "euclidean", "reducer": lw.reducers.ThresholdReducer(low=0.01),
         "miner": lw.miners.BatchHardMiner(), **labelled(), **layer("ranked_list")},
    ),
    "pnp": (
        lw.terms.PNPLoss,
        {"variant": "Ib", "anneal": 0.05, "alpha": 2.0, "b": 3.0, "count_self": True, "distance": "cosine",
         "reducer": lw.reducers.DivisorReducer(3.0), "miner": lw.miners.MultiSimilarityMiner(0.2), **labelled(),
         **layer("pnp")},
    ),
    "instance": (
        lw.terms.InstanceLoss,
        {"scale": 16.0, "distance": lw.distances.DotProductSimilarity(normalize_embeddings=True),
         "reducer": lw.reducers.PerAnchorReducer(), **labelled(), **layer("instance")},
    ),
    "xbm": (
        lw.terms.CrossBatchMemory,
        {"term": Fresh(lambda: lw.terms.TripletLoss(margin=0.3, mining="batch-hard", name="inner")), "memory_size": 6,
         **labelled(), **layer("xbm")},
    ),
}

# min_jaccard (the positives of multi-hot labels) is a keyword of every tuple loss (TupleArguments) but those
# whose pairs are fixed by position, which refuse it (tests/test_multilabel.py);
# multi_hot_classes makes XBM's label memory (memory, classes) rows.
for _cls, _kwargs in TERMS.values():
    if issubclass(_cls, TupleArguments) and not _cls.pairs_by_position:
        _kwargs["min_jaccard"] = 0.5
TERMS["xbm"][1]["multi_hot_classes"] = CLASSES

WEIGHTINGS = {
    "weighting": (lw.weighting.Weighting, layer("weighting")),
    "fixed": (
        lw.weighting.Fixed,
        {"weights": {"a": 0.5, "b": lw.schedules.LinearWarmup(0.2, steps=3)}, "default": 0.25, **layer("fixed")},
    ),
    "convex": (
        lw.weighting.Convex,
        {"first": "b", "second": "a", "alpha": 0.25, "learn_alpha": True, **layer("convex")},
    ),
    "uncertainty": (
        lw.weighting.Uncertainty, {"kinds": {"a": "classification"}, "nonnegative": True, **layer("uncertainty")}
    ),
    "dwa": (lw.weighting.DWA, {"steps_per_epoch": 3, "temperature": 1.5, **layer("dwa")}),
    "rlw": (lw.weighting.RLW, {"seed": 3, **layer("rlw")}),
    "gls": (lw.weighting.GLS, layer("gls")),
    "famo": (
        lw.weighting.FAMO, {"beta": 0.05, "gamma": 0.01, "min_loss": -1.0, "epsilon": 1e-6, **layer("famo")}
    ),
    "gradient_weighting": (lw.weighting.GradientWeighting, layer("gradient_weighting")),
    "sum": (lw.weighting.Sum, layer("sum")),
    "mean": (lw.weighting.Mean, layer("mean")),
    "mgda": (lw.weighting.MGDA, {"normalization": "loss+", "iterations": 20, **layer("mgda")}),
    "pcgrad": (lw.weighting.PCGrad, {"seed": 4, **layer("pcgrad")}),
    "cagrad": (lw.weighting.CAGrad, {"c": 0.3, "rescale": 1, **layer("cagrad")}),
    "nash_mtl": (
        lw.weighting.NashMTL, {"update_weights_every": 2, "max_norm": 2.0, "iterations": 10, **layer("nash_mtl")}
    ),
    "upgrad": (
        lw.weighting.UPGrad, {"preference": {"a": 2.0}, "norm_eps": 1e-6, "reg_eps": 1e-3, **layer("upgrad")}
    ),
    "dualproj": (
        lw.weighting.DualProj, {"preference": {"b": 0.5}, "norm_eps": 0.0, "reg_eps": 2e-4, **layer("dualproj")}
    ),
    "imtlg": (lw.weighting.IMTLG, layer("imtlg")),
    "aligned_mtl": (
        lw.weighting.AlignedMTL, {"scale_mode": "median", "preference": {"a": 2.0}, **layer("aligned_mtl")}
    ),
    "config": (lw.weighting.ConFIG, {"preference": {"b": 0.5}, "length": "harmonic", **layer("config")}),
    "gradvac": (lw.weighting.GradVac, {"beta": 0.2, "grouping": "layer", "seed": 2, **layer("gradvac")}),
    "graddrop": (lw.weighting.GradDrop, {"leak": [0.1, 0.2], "seed": 2, **layer("graddrop")}),
    "moco": (
        lw.weighting.MoCo,
        {"beta": 0.4, "beta_sigma": 0.3, "gamma": 0.2, "gamma_sigma": 0.4, "rho": 0.1, "normalize": False,
         **layer("moco")},
    ),
    "dbmtl": (lw.weighting.DBMTL, {"beta": 0.8, "beta_sigma": 0.5, "epsilon": 1e-6, **layer("dbmtl")}),
    "gradnorm": (lw.weighting.GradNorm, {"alpha": 1.0, "learning_rate": 0.05, **layer("gradnorm")}),
    "scaled": (lw.weighting.Scaled, {"strategy": Fresh(lambda: lw.weighting.NashMTL(max_norm=0.0)),
                                     "scales": {"a": 2.0}, **layer("scaled")}),
    "log_losses": (lw.weighting.LogLosses, {"strategy": Fresh(lambda: lw.weighting.DWA(steps_per_epoch=2)),
                                            "epsilon": 1e-6, **layer("log_losses")}),
}

EPOCHS = {"unit": "epoch", "steps_per_epoch": 5}
SCHEDULES = {
    "constant": (lw.schedules.Constant, {"value": 0.3, **EPOCHS}),
    "lambda": (lw.schedules.Lambda, {"fn": contract_ramp, **EPOCHS}),
    "linear_warmup": (lw.schedules.LinearWarmup, {"value": 0.5, "steps": 4, "start": 0.1, **EPOCHS}),
    "cosine": (lw.schedules.Cosine, {"initial": 1.0, "final": 0.1, "steps": 6, **EPOCHS}),
    "piecewise": (lw.schedules.Piecewise, {"boundaries": [2, 5], "values": [1.0, 0.5, 0.2], **EPOCHS}),
    "exponential": (lw.schedules.Exponential, {"initial": 2.0, "rate": 0.5, "steps": 3, **EPOCHS}),
}


def _evaluation_arguments():
    import numpy as np

    x = np.arange(24, dtype="float32").reshape(8, 3)
    labels = np.arange(8) % 2
    pairs = (np.array([0, 1]), np.array([2, 3]), np.array([True, False]))
    return {
        "x": x, "labels": labels, "every": 2, "output": "features", "metric": "euclidean", "prefix": "check_",
        "ks": (1, 2), "batch_size": 4, "pairs": pairs, "num_pairs": 10, "far": 0.01, "seed": 3,
        "reference_x": x[:4], "reference_labels": labels[:4], "r_precision": True, "clustering": True,
    }


# Objects that are not saved on their own in a .keras file: config round trip only.
CONFIG_ONLY = {
    # Distances, reducers and miners: saved inside a loss's config (the term entries above load them).
    "lp_distance": (lw.distances.LpDistance, {"p": 3.0, "power": 2.0, "normalize_embeddings": True}),
    "euclidean_distance": (lw.distances.EuclideanDistance, {"normalize_embeddings": True}),
    "squared_euclidean_distance": (lw.distances.SquaredEuclideanDistance, {"normalize_embeddings": True}),
    "dot_product_similarity": (lw.distances.DotProductSimilarity, {"normalize_embeddings": True}),
    "snr_distance": (lw.distances.SNRDistance, {"normalize_embeddings": True}),
    "distance": (lw.distances.Distance, {"normalize_embeddings": True}),
    "cosine_distance": (lw.distances.CosineDistance, {}),
    "cosine_similarity": (lw.distances.CosineSimilarity, {}),
    "threshold_reducer": (lw.reducers.ThresholdReducer, {"low": 0.1, "high": 2.0}),
    "per_anchor_reducer": (lw.reducers.PerAnchorReducer, {"count_empty": True}),
    "divisor_reducer": (lw.reducers.DivisorReducer, {"divisor": 3.0}),
    "class_weighted_reducer": (lw.reducers.ClassWeightedReducer, {"weights": [1.0, 0.5]}),
    "mean_reducer": (lw.reducers.MeanReducer, {}),
    "avg_non_zero_reducer": (lw.reducers.AvgNonZeroReducer, {}),
    "triplet_margin_miner": (lw.miners.TripletMarginMiner, {"margin": 0.5, "type_of_triplets": "semihard"}),
    "batch_easy_hard_miner": (lw.miners.BatchEasyHardMiner, {"pos_strategy": "hard", "neg_strategy": "easy"}),
    "multi_similarity_miner": (lw.miners.MultiSimilarityMiner, {"epsilon": 0.3}),
    "pair_margin_miner": (lw.miners.PairMarginMiner, {"pos_margin": 0.1, "neg_margin": 0.5}),
    "hdc_miner": (lw.miners.HDCMiner, {"filter_percentage": 0.3}),
    "batch_hard_miner": (lw.miners.BatchHardMiner, {}),
    "semi_hard_negative_miner": (lw.miners.SemiHardNegativeMiner, {}),
    "angular_miner": (lw.miners.AngularMiner, {"angle": 35.0}),
    "distance_weighted_miner": (lw.miners.DistanceWeightedMiner,
                                {"dimension": 8, "cutoff": 0.3, "nonzero_loss_cutoff": 1.2, "seed": 7,
                                 **layer("distance_weighted_miner")}),
    "uniform_histogram_miner": (lw.miners.UniformHistogramMiner,
                                {"num_bins": 8, "pos_per_bin": 3, "neg_per_bin": 4, "seed": 7,
                                 **layer("uniform_histogram_miner")}),
    "clip": (lw.weighting.Clip, {"min_value": -1.0, "max_value": 2.0}),
    "logits_accuracy": (lw.metrics.LogitsAccuracy, {"name": "top1", "dtype": "float16"}),
    "tuple_statistics": (lw.metrics.TupleStatistics,
                         {"term": lw.terms.TripletLoss(margin=0.3, miner=lw.miners.BatchHardMiner(), name="t"),
                          "name": "triplets", "dtype": "float64"}),
    "embedding_evaluation": (lw.metrics.EmbeddingEvaluation, _evaluation_arguments()),
}

# MarginLogits lives in a plain model, not in an Objective (see test_contract).
MARGIN_LOGITS = (
    lw.terms.MarginLogits,
    {"term": Fresh(lambda: lw.terms.CosFace(num_classes=CLASSES, cosine_margin=0.2, scale=8.0, name="cos")),
     **layer("margin_logits")},
)

# The Objective: in shared-variable mode (its `representation` in the second entry).
def two_terms():
    """The terms ``a`` and ``b`` that the weightings combine."""
    return {"a": lw.terms.SoftmaxCrossEntropy(on="scores"), "b": lw.terms.CenterLoss(CLASSES, on="features")}


OBJECTIVES = {
    "objective_shared": (
        lw.Objective,
        {"model": Fresh(lambda: contract_model()), "terms": Fresh(two_terms),
         "weighting": Fresh(lambda: lw.weighting.MGDA(normalization="l2")), "shared": ["trunk"],
         "gramian_blocks": True, "name": "given_objective"},
    ),
    "objective_representation": (
        lw.Objective,
        {"model": Fresh(lambda: contract_model()), "terms": Fresh(two_terms),
         "weighting": Fresh(lambda: lw.weighting.PCGrad(seed=1)), "representation": "features",
         "name": "given_objective"},
    ),
}

CASES = {**TERMS, **WEIGHTINGS, **SCHEDULES, **CONFIG_ONLY, **OBJECTIVES, "margin_logits": MARGIN_LOGITS}

# Public names with no entry, and why.
EXEMPT = {
    "InvalidInputError": "an exception",
    "Schedule": "abstract (abc): its unit and steps_per_epoch are in every schedule's entry",
    "ClusteringResult": "a result (NamedTuple), not a configured object",
    "VerificationResult": "a result (NamedTuple), not a configured object",
    "TemplateVerificationResult": "a result (NamedTuple), not a configured object",
    "IJBProtocol": "the metadata a loader read (NamedTuple), not a configured object",
}

# Constructor arguments a class takes but does not use, and why.
UNUSED = {
    "SphereFace": {"scale": "refused: its logits are scaled by ||x|| (MarginSoftmax's `scale` is not its argument)"},
    "LargeMarginSoftmax": {"sub_centers": "refused: one weight vector per class",
                           "negative_threshold": "refused: a cosine threshold of normalised class weights"},
    "Loss": {"validate": "it declares no input checks (the Keras loss gets the values as they are)"},
    "Term": {"validate": "the base declares no input checks"},
    "SoftTripleLoss": {"distance": "not taken: its relaxed similarity and regulariser are defined on cosines"},
    **{name: {"min_jaccard": "refused: its pairs are fixed by position (tests/test_multilabel.py)"}
       for name in ("NPairsLoss", "InstanceLoss", "TwoViewNTXentLoss")},
}

# Where the attribute of an argument has another name, and why.
ATTRIBUTES = {
    "dtype": "dtype_policy",  # Layer's
    ("Fixed", "weights"): "weights_by_term",  # Layer.weights is Keras's list of variables
}


def attribute(cls, argument):
    """The attribute holding constructor argument ``argument`` of ``cls``."""
    for klass in cls.__mro__:
        if (klass.__name__, argument) in ATTRIBUTES:
            return ATTRIBUTES[klass.__name__, argument]
    if issubclass(cls, keras.layers.Layer) and argument in ATTRIBUTES:
        return ATTRIBUTES[argument]
    return argument


def contract_model():
    """A small functional model with the three outputs the entries read."""
    inputs = keras.Input((6,), name="x")
    features = keras.layers.Dense(DIM, name="trunk")(inputs)
    return keras.Model(
        inputs,
        {
            "features": features,
            "scores": keras.layers.Dense(CLASSES, name="head")(features),
            "other": keras.layers.Dense(DIM, name="side")(inputs),
        },
    )

# Arguments with a default that the constructor refuses (a required argument in all but name).
REQUIRED = {"DWA": ("steps_per_epoch",), "ThresholdReducer": ("low",)}  # ThresholdReducer: low or high
