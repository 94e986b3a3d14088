"""Posteriors holding NaN or inf: refused by every plot in one line naming the task and the
units, instead of a figure whose blank or missing cells read as values."""

import numpy as np
import pytest

import bablate as bb


def _post(task: str, marginals, prior=0.5) -> bb.Posterior:
    q = np.asarray(marginals, np.float64)
    return bb.Posterior(task=task, method="exact", marginals=q,
                        prior=np.broadcast_to(np.asarray(prior, np.float64), q.shape).copy(),
                        beta=1.0)


GOOD = _post("good", [0.2, 0.9, 0.6])
PLOTS = {
    "marginals": bb.plot.marginals,
    "information": bb.plot.information,
    "importance_heatmap": bb.plot.importance_heatmap,
    "js_matrix": bb.plot.js_matrix,
}


@pytest.mark.parametrize("name", list(PLOTS))
@pytest.mark.parametrize("bad,message", [
    (_post("nan", [0.2, np.nan, 0.7]), "posterior 'nan' has NaN/inf marginals (units [1])"),
    (_post("inf", [np.inf, 0.5, -np.inf]), "posterior 'inf' has NaN/inf marginals (units [0, 2])"),
    (_post("prior", [0.2, 0.5, 0.7], prior=[0.5, np.nan, 0.5]),
     "posterior 'prior' has NaN/inf prior (units [1])"),
], ids=["nan-marginal", "inf-marginals", "nan-prior"])
def test_plot_of_a_non_finite_posterior_is_one_line(name, bad, message):
    with pytest.raises(ValueError) as info:
        PLOTS[name]([GOOD, bad])
    msg = str(info.value)
    assert "\n" not in msg
    assert msg == (f"{name}: {message}; check the inference that made it, or leave it out of "
                   "the plot.")
    PLOTS[name]([GOOD])  # the finite posterior alone draws


def test_report_of_a_nan_posterior_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"^report: posterior 'nan' has NaN/inf marginals"):
        bb.plot.report([GOOD, _post("nan", [np.nan] * 3)], tmp_path / "out")
    assert not (tmp_path / "out").exists()
