"""The final evaluation of a solve in blocks of samples equals the evaluation in one
block: every cost term, the accuracies and the stationarity."""

import numpy as np
import pytest

import controldl as cdl
from controldl import problem as P
from controldl.solvers import evaluation


@pytest.mark.parametrize("options", [
    dict(width=3, layers=4, running=0.3, smooth=0.2, l1=0.01),
    dict(model="conv", channels=2, layers=2, readout="channel_mean"),
], ids=["dense-all-terms", "conv"])
def test_blocks_of_samples_give_the_one_block_evaluation(options, monkeypatch):
    if options.get("model") == "conv":
        rng = np.random.default_rng(0)
        y = np.arange(50) % 3
        data = cdl.data.train_test_split(cdl.Dataset(rng.normal(size=(50, 1, 4, 4)) + y[
            :, None, None, None], y), 0.2, seed=0)
    else:
        data = cdl.data.train_test_split(cdl.data.ring(60, seed=3), 0.25, seed=0)
    problem = cdl.Problem(data, **options)
    params = P.init_params(problem.formulation, seed=2)
    whole = evaluation.evaluation(problem, params, with_stationarity=True)
    per_row = 3 * (problem.layers + 1) * problem.width * 8
    monkeypatch.setattr(evaluation, "EVALUATION_BLOCK_BYTES", 7 * per_row)  # 7 rows a block
    blocks = evaluation.blocks(problem.formulation, problem.data.n_train)
    assert len(blocks) > 4 and len({b.stop - b.start for b in blocks}) <= 2
    assert blocks[0].start == 0 and blocks[-1].stop == problem.data.n_train
    split = evaluation.evaluation(problem, params, with_stationarity=True)
    for k, v in whole[0].items():
        assert split[0][k] == pytest.approx(v, rel=1e-12, abs=1e-15), k
    assert split[1:3] == pytest.approx(whole[1:3], abs=1e-12)  # train and test accuracy
    assert split[3] == pytest.approx(whole[3], rel=1e-10)  # stationarity
    assert whole[3] == pytest.approx(cdl.stationarity(problem, params), rel=1e-10)
