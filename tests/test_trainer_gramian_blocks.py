"""``Objective(gramian_blocks=True)``: the Gramian block by block, one backward pass of sum_k w_k L_k.

The same model as ``test_trainer.py`` (a shared trunk, K heads, a center
loss, an L2 regularizer on one head): the block-by-block step must give the
update of the default step (which holds the K rows at once), keep the
gradient check's guarantee (a NaN gradient names its term and moves
nothing), and refuse what it cannot serve. Engine-specific: every backend.
"""

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import BACKEND, one_backend
from lossweave.trainer import _common
from test_trainer import BATCH, FEATURES, _data, _max_diff, _model, _nan_gradient, _objective, _state, _terms

HEADS = 3


def _strategies():
    return {
        "upgrad": lambda: lw.weighting.UPGrad(),
        "mgda": lambda: lw.weighting.MGDA(),
        "scaled_pcgrad": lambda: lw.weighting.Scaled(lw.weighting.PCGrad(seed=3), {"task_0": 2.0}),
    }


# UPGrad on every backend (the engine); the other strategies and the combinator (which
# reach the step through the same ``aggregate``) in the PyTorch pass only, the cheapest.
@pytest.mark.parametrize("name", [
    "upgrad", *[pytest.param(n, marks=pytest.mark.skipif(BACKEND != "torch", reason="engine: upgrad"))
                for n in ("mgda", "scaled_pcgrad")],
])
def test_one_step_equals_the_default_step(name):
    x, y = _data(heads=HEADS, rows=BATCH)
    make = _strategies()[name]
    default = _objective(make(), heads=HEADS)
    blocks = _objective(make(), heads=HEADS, gramian_blocks=True)
    assert blocks.gramian_blocks and blocks.get_config()["gramian_blocks"] is True
    before = _state(blocks)
    assert _max_diff(before, _state(default)) == 0.0
    logs_default = default.train_on_batch(x, y, return_dict=True)
    logs_blocks = blocks.train_on_batch(x, y, return_dict=True)
    assert _max_diff(_state(blocks), _state(default)) <= 1e-5
    assert _max_diff(_state(blocks), before) > 1e-3  # the step moved the weights
    # the strategy's weights (from the block-by-block Gramian) and the cosines are the default's
    for key, value in logs_default.items():
        if key.startswith(("weight/", "cosine/")):
            assert logs_blocks[key] == pytest.approx(value, abs=1e-5), key
    # not vacuous: the weights are not all 1 (the update is not the plain sum)
    weights = [logs_blocks[f"weight/{n}"] for n in blocks.terms]
    assert max(abs(w - 1.0) for w in weights) > 1e-3


def test_a_nan_gradient_still_names_the_term_and_moves_nothing():
    x, y = _data(rows=BATCH)
    terms = _terms()
    terms["broken"] = lw.terms.Loss(_nan_gradient, on="logits_1", target="label_1")
    objective = lw.Objective(_model(), terms, weighting=lw.weighting.UPGrad(), gramian_blocks=True)
    objective.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.5))
    objective.build((None, FEATURES))
    before = _state(objective)
    with pytest.raises(lw.InvalidInputError, match=r"the gradient of term 'broken' has NaN or Inf") as info:
        objective.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert "task_0" not in str(info.value)
    assert _max_diff(_state(objective), before) == 0.0


@one_backend
def test_refused_where_the_rows_are_needed_or_nothing_is_blocked():
    with pytest.raises(ValueError, match=r"weighting=GradDrop computes its update from the gradients"):
        lw.Objective(_model(), _terms(), weighting=lw.weighting.GradDrop(), gramian_blocks=True)
    with pytest.raises(ValueError, match=r"weighting=Scaled computes its update from the gradients"):
        lw.Objective(_model(), _terms(), weighting=lw.weighting.Scaled(lw.weighting.GradVac()), gramian_blocks=True)
    with pytest.raises(ValueError, match=r"parameter mode; with representation='features'"):
        lw.Objective(_model(), _terms(), weighting=lw.weighting.MGDA(), representation="features",
                     gramian_blocks=True)
    with pytest.raises(ValueError, match=r"weighting=Fixed combines losses"):
        lw.Objective(_model(), _terms(), weighting=lw.weighting.Fixed({}), gramian_blocks=True)
    with pytest.raises(ValueError, match=r"`gramian_blocks` must be True or False; received 1"):
        lw.Objective(_model(), _terms(), weighting=lw.weighting.MGDA(), gramian_blocks=1)
    objective = lw.Objective(_model(), _terms(), weighting=lw.weighting.MGDA(), gramian_blocks=True)
    restored = lw.Objective.from_config(objective.get_config())
    assert restored.gramian_blocks is True
    config = objective.get_config()
    del config["gramian_blocks"]  # a file saved before the argument existed
    assert lw.Objective.from_config(config).gramian_blocks is False


@one_backend
def test_blocks_are_consecutive_and_at_most_the_largest_variable_plus_small_ones():
    # a trunk's kernels and biases: 256x2048, 2048, 2048x2048, 2048, 2048x512, 512
    sizes = [524288, 2048, 4194304, 2048, 1048576, 512]
    assert _common.blocks(sizes) == [[0, 1], [2, 3], [4, 5]]  # a bias joins its kernel
    sizes = [48, 8, 32, 16, 8, 64, 1]
    groups = _common.blocks(sizes)
    assert [i for g in groups for i in g] == list(range(len(sizes)))
    # greedy: a group closes when a variable above 64 / 64 = 1 would take it past 64
    assert groups == [[0, 1], [2, 3, 4], [5, 6]]
    large = [[i for i in g if sizes[i] * 64 > max(sizes)] for g in groups]
    assert all(sum(sizes[i] for i in g) <= max(sizes) for g in large)
    assert _common.blocks([]) == []
