"""Ranking scores: the diffusion classifier on an exact denoiser, rank combination, metrics."""

import numpy as np
import pandas as pd
import pytest
import torch

from rnadiff.design import (
    combine_ranks,
    denoising_errors,
    log_uniform_levels,
    random_ranking_metrics,
    ranking_metrics,
    training_noise_levels,
)


def test_noise_levels_sit_at_quantiles_of_the_training_distribution():
    s = training_noise_levels(5, p_mean=-1.2, p_std=1.2)
    assert s.shape == (5,) and bool((s[1:] > s[:-1]).all())
    assert float(s[2]) == pytest.approx(np.exp(-1.2), rel=1e-5)  # the median
    with pytest.raises(ValueError):
        training_noise_levels(0, p_mean=0, p_std=1)


def test_log_uniform_levels_span_the_range_geometrically():
    s = log_uniform_levels(3, 1.0, 4.0)
    assert torch.allclose(s, torch.tensor([1.0, 2.0, 4.0]))
    with pytest.raises(ValueError):
        log_uniform_levels(2, 0.0, 1.0)


def class_denoiser(means: torch.Tensor, std: float):
    """Exact denoiser of x0 ~ N(means[c], std^2 I) given a one-hot class condition."""

    def denoiser(x, sigma, cond):
        mu = cond["c"] @ means
        shrink = std**2 / (std**2 + sigma[:, None] ** 2)
        return mu + shrink * (x - mu)

    return denoiser


def test_diffusion_classifier_prefers_the_class_the_cells_came_from():
    g = torch.Generator().manual_seed(0)
    means = torch.tensor([[0.0] * 8, [1.5] * 8])
    cells = means[1] + 0.5 * torch.randn(40, 8, generator=g)
    conds = [{"c": torch.eye(2)[[k] * 40]} for k in range(2)]
    err = denoising_errors(
        class_denoiser(means, 0.5),
        cells,
        conds,
        training_noise_levels(8, p_mean=-1.2, p_std=1.2),
        n_draws=2,
        generator=torch.Generator().manual_seed(1),
        batch_size=16,
    )
    assert err.shape == (2, 40)
    assert (err[1] < err[0]).mean() > 0.9
    again = denoising_errors(
        class_denoiser(means, 0.5),
        cells,
        conds,
        training_noise_levels(8, p_mean=-1.2, p_std=1.2),
        n_draws=2,
        generator=torch.Generator().manual_seed(1),
    )
    assert np.allclose(err, again)  # seeded, and independent of the batch size


def test_stacked_denoiser_replaces_the_denoiser_per_batch_of_stacked_rows():
    g = torch.Generator().manual_seed(0)
    means = torch.tensor([[0.0] * 8, [1.5] * 8])
    cells = means[1] + 0.5 * torch.randn(20, 8, generator=g)
    conds = [{"c": torch.eye(2)[[k] * 20]} for k in range(2)]
    exact = class_denoiser(means, 0.5)
    swapped = class_denoiser(means.flip(0), 0.5)  # class 0's denoiser returns class 1's mean
    levels = training_noise_levels(4, p_mean=-1.2, p_std=1.2)

    def errors(stacked_denoiser=None, batch_size=8):
        return denoising_errors(
            exact,
            cells,
            conds,
            levels,
            n_draws=1,
            batch_size=batch_size,
            generator=torch.Generator().manual_seed(1),
            stacked_denoiser=stacked_denoiser,
        )

    plain = errors()
    assert np.allclose(errors(lambda b: exact), plain)
    # rows 0..19 are the cells under condition 0, rows 20..39 under condition 1: condition 0
    # scored with the swapped denoiser gets the errors of condition 1
    swap_first = errors(lambda b: swapped if b.stop <= 20 else exact, batch_size=20)
    assert np.allclose(swap_first[0], plain[1]) and np.allclose(swap_first[1], plain[1])
    # batches of 8 rows: rows 8..15 (cells 8..15 under condition 0) get the swapped denoiser
    mixed = errors(lambda b: swapped if b.start == 8 else exact)
    assert np.allclose(mixed[0, 8:16], plain[1, 8:16])
    assert np.allclose(mixed[0, :8], plain[0, :8]) and np.allclose(mixed[0, 16:], plain[0, 16:])
    assert np.allclose(mixed[1], plain[1])
    # a batch across both conditions (rows 16..23: cells 16..19 under 0 and 0..3 under 1)
    across = errors(lambda b: swapped if b.start == 16 else exact)
    assert np.allclose(across[0, 16:], plain[1, 16:]) and np.allclose(across[0, :16], plain[0, :16])
    assert np.allclose(across[1, :4], plain[0, :4]) and np.allclose(across[1, 4:], plain[1, 4:])


def test_denoising_errors_refuse_conditions_that_do_not_match_the_cells():
    cells = torch.zeros(5, 3)
    levels = training_noise_levels(2, p_mean=-1.2, p_std=1.2)
    den = class_denoiser(torch.zeros(2, 3), 0.5)
    with pytest.raises(ValueError, match="one row per cell"):
        denoising_errors(den, cells, [{"c": torch.zeros(4, 2)}], levels)
    with pytest.raises(ValueError, match="same keys"):
        denoising_errors(den, cells, [{"c": torch.zeros(5, 2)}, {"d": torch.zeros(5, 2)}], levels)
    with pytest.raises(ValueError, match="at least one condition"):
        denoising_errors(den, cells, [], levels)


def test_combined_rank_is_the_mean_of_the_score_ranks():
    table = pd.DataFrame(
        {"perturbation": ["a", "b", "c"], "lik": [3.0, 1.0, 2.0], "gen": [0.1, 0.9, 0.5]}
    )
    out = combine_ranks(table, {"lik": True, "gen": True})
    by = out.set_index("perturbation")
    assert by["rank_lik"].to_dict() == {"a": 1, "b": 3, "c": 2}
    assert by["rank_gen"].to_dict() == {"a": 3, "b": 1, "c": 2}
    # all mean ranks are 2: ties go to the first score (lik)
    assert out["perturbation"].tolist() == ["a", "c", "b"]
    assert out["rank"].tolist() == [1, 2, 3]
    lower = combine_ranks(table, {"lik": False})
    assert lower.iloc[0]["perturbation"] == "b"


def test_ranking_metrics_on_known_ranks():
    m = ranking_metrics([1, 2, 10], ks=(1, 5))
    assert m == pytest.approx({"top1": 1 / 3, "top5": 2 / 3, "mrr": (1 + 0.5 + 0.1) / 3})
    r = random_ranking_metrics(4)
    assert r == pytest.approx({"top1": 0.25, "top5": 1.0, "mrr": (1 + 1 / 2 + 1 / 3 + 1 / 4) / 4})
    rng = np.random.default_rng(0)
    sim = ranking_metrics(rng.integers(1, 27, size=200_000))
    assert sim["mrr"] == pytest.approx(random_ranking_metrics(26)["mrr"], abs=0.003)
    with pytest.raises(ValueError):
        ranking_metrics([])
