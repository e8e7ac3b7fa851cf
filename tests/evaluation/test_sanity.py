"""Model-randomisation check: seeded, leaves the model alone, detects changed maps."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from toy import GapLinear, toy_bundle

from helpers.evaluation.sanity import cascade_order, cascading_randomisation, randomise, spearman
from helpers.report.plots import plot_randomisation


def test_cascade_order_runs_from_the_classifier_down(lite0) -> None:
    order = cascade_order(lite0)
    assert order[:3] == ["classifier", "head", "stages.6"] and order[-1] == "stem"


def test_spearman_by_hand() -> None:
    a = torch.tensor([[0.1, 0.4], [0.2, 0.9]])
    assert spearman(a, a ** 3) == 1.0  # monotone transform keeps the ranking
    assert abs(spearman(a, -a) + 1.0) < 1e-12
    # ranks (1,3,2,4) vs (1,2,4,3): d = (0,1,-2,1), rho = 1 - 6*6 / (4*(16-1)) = 0.4
    assert abs(spearman(a, torch.tensor([[1.0, 2.0], [4.0, 3.0]])) - 0.4) < 1e-12
    assert spearman(a, torch.zeros(2, 2)) == 0.0


def test_randomise_is_seeded() -> None:
    a, b = nn.Conv2d(2, 3, 1), nn.Conv2d(2, 3, 1)
    randomise(a, 5)
    randomise(b, 5)
    assert torch.equal(a.weight, b.weight)
    randomise(b, 6)
    assert not torch.equal(a.weight, b.weight)


def test_cascading_randomisation_changes_maps_but_not_the_model() -> None:
    torch.manual_seed(0)
    model = GapLinear(torch.randn(3, 4), features=nn.Conv2d(2, 4, 1))
    bundle = toy_bundle(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 2, 6, 6)
    df = cascading_randomisation(bundle, x, [0, 1], ("gradcam", "layercam"), progress=False)
    assert list(df.drop_duplicates("step")["layer"]) == ["none", "fc", "features"]
    assert (df[df.step == 0].spearman == 1.0).all()
    assert (df[df.step == 2].spearman < 0.99).all()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    again = cascading_randomisation(bundle, x, [0, 1], ("gradcam", "layercam"), progress=False)
    assert df.equals(again)
    ax = plot_randomisation(df).axes[0]
    # one error-bar series per method: the mean Spearman per step, in the cascade's order
    assert [c.get_label() for c in ax.containers] == ["gradcam", "layercam"]
    for container, method in zip(ax.containers, ("gradcam", "layercam"), strict=True):
        want = df[df.method == method].groupby("step")["spearman"].mean()
        assert container.lines[0].get_xdata().tolist() == want.index.tolist()
        assert container.lines[0].get_ydata() == pytest.approx(want.to_numpy())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["trained", "+fc", "+features"]
