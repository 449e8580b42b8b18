"""Self-supervised training of a count denoiser by binomial splits of each cell's UMIs.

Each step splits every cell of the minibatch, ``X = X' + X''`` with each UMI in ``X'`` with
probability ``p ~ U(p_min, p_max)`` (:func:`rnadiff.diffusion._counts.binomial_split`), gives
the network ``X'`` and scores its expected expression ``rho`` on ``X''``: the multinomial
cross-entropy per held-out UMI, ``-sum_g X''_g log rho_g / sum_g X''_g``. For Poisson counts
``X'`` and ``X''`` are independent given the cell's expression, so the best ``rho`` is that
expression itself, not the noisy ``X'`` (molecular cross-validation, Batson et al. 2019;
Noise2Self, Batson & Royer 2019). The network never sees the counts it is scored on, so it
cannot learn to copy noise. A fixed split of held-out cells decides when to stop (the best
weights are kept) and whether training learned anything: :class:`SplitFit` reports the
validation loss of the average cell (the untrained network) beside the best one.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from rnadiff.diffusion._counts import binomial_split
from rnadiff.training._loop import _seeded


@dataclass
class SplitFit:
    """The outcome of :func:`fit_count_split`."""

    history: list[dict] = field(default_factory=list)  # step, train and validation loss
    baseline_loss: float = float("nan")  # validation loss of the average cell (step 0)
    best_loss: float = float("nan")
    best_step: int = 0
    steps: int = 0

    @property
    def gain(self) -> float:
        """Relative drop of the validation loss below the average cell's (0: none)."""
        return 1 - self.best_loss / self.baseline_loss if self.baseline_loss > 0 else 0.0


class Neighbours:
    """The mean expression of a cell's ``k`` nearest other cells (Euclidean, in the first
    principal components of log-normalized values of all cells): what the cell's neighbourhood
    says about it. A cell is found by its own (split) counts and never counts as its own
    neighbour, so a split's held-out UMIs cannot reach the network through it."""

    def __init__(self, log_x: np.ndarray, *, k: int = 15, n_components: int = 30, seed: int = 0):
        from sklearn.decomposition import PCA

        q = int(min(n_components, log_x.shape[0] - 1, log_x.shape[1]))
        pca = PCA(q, random_state=seed).fit(log_x)
        self.center = torch.as_tensor(pca.mean_, dtype=torch.float32)
        self.axes = torch.as_tensor(pca.components_.T, dtype=torch.float32)
        self.coords = (torch.as_tensor(log_x, dtype=torch.float32) - self.center) @ self.axes
        self.expr = torch.expm1(torch.as_tensor(log_x, dtype=torch.float32))
        self.k = int(min(k, log_x.shape[0] - 1))

    def __call__(self, log_x: torch.Tensor, cells: torch.Tensor | None) -> torch.Tensor:
        d = torch.cdist((log_x - self.center) @ self.axes, self.coords)
        if cells is not None:  # never a cell's own neighbour
            d[torch.arange(len(cells)), cells] = float("inf")
        nearest = d.topk(self.k, largest=False).indices
        return self.expr[nearest].mean(1)


class Features:
    """The network's input: log-normalized counts scaled per gene (and, with ``neighbours``,
    the same of the cell's neighbourhood mean), and standardized log depth."""

    def __init__(
        self,
        mean: np.ndarray,
        std: np.ndarray,
        log_depth: tuple[float, float],
        s: float = 1e4,
        neighbours: Neighbours | None = None,
    ):
        self.mean = torch.as_tensor(mean, dtype=torch.float32)
        self.std = torch.as_tensor(std, dtype=torch.float32)
        self.log_depth, self.target_sum = log_depth, float(s)
        self.neighbours = neighbours

    def __call__(
        self, counts: torch.Tensor, cells: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of ``counts``; ``cells``: their rows among the neighbours' cells."""
        total = counts.sum(1, keepdim=True).clamp_min(1.0)
        log_x = torch.log1p(counts * (self.target_sum / total))
        x = (log_x - self.mean) / self.std
        if self.neighbours is not None:
            around = torch.log1p(self.neighbours(log_x, cells))
            x = torch.cat([x, (around - self.mean) / self.std], dim=1)
        mu, sd = self.log_depth
        return x, (total.reshape(-1).log() - mu) / sd


def _rows(counts, idx: np.ndarray) -> torch.Tensor:
    block = counts[idx]
    block = block.toarray() if sp.issparse(block) else np.asarray(block)
    return torch.as_tensor(block, dtype=torch.float32)


def split_loss(net, feats: Features, kept, rest, cells=None) -> torch.Tensor:
    """Cross-entropy per held-out UMI of ``rest`` under the network's expression of ``kept``
    (cells without held-out UMIs weigh nothing)."""
    logp = F.log_softmax(net(*feats(kept, cells)), dim=1)
    return -(rest * logp).sum() / rest.sum().clamp_min(1.0)


def fit_count_split(
    net: nn.Module,
    counts,
    feats: Features,
    *,
    max_steps: int = 3000,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    p_range: tuple[float, float] = (0.4, 0.9),
    validation: float = 0.1,
    eval_every: int | None = None,
    patience: int = 8,
    seed: int = 0,
    progress: bool = False,
    desc: str = "training",
) -> SplitFit:
    """Train ``net`` (``net(x, log_depth) -> logits``) on binomial splits of ``counts``.

    Parameters
    ----------
    net
        The network, trained in place; it ends with the weights of the best validation loss.
    counts
        Cells x genes raw counts (dense or scipy sparse).
    feats
        The network's input features of counts.
    max_steps, batch_size, lr, weight_decay
        The optimization (AdamW, cosine decay after a short warm-up).
    p_range
        Share of each cell's UMIs given to the network, uniform in this range per cell.
    validation
        Share of cells held out of training (at least 1 cell; their split is fixed).
    eval_every, patience
        The validation loss is computed every ``eval_every`` steps (default: every pass over
        the cells, between 10 and 50 steps); training stops after ``patience`` evaluations
        without a new best.
    seed
        Seeds the held-out cells, the minibatches and the splits.
    progress, desc
        Show a progress bar, with this label.

    Returns
    -------
    SplitFit
    """
    n = counts.shape[0]
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_val = max(1, round(validation * n)) if n > 1 else 0
    val, train = np.sort(order[:n_val]), order[n_val:]
    if len(train) == 0:
        raise ValueError("too few cells to train on")
    g = _seeded(seed, 5)
    p_mid = float(np.mean(p_range))
    val_sets = []
    for start in range(0, len(val), 1024):
        rows = val[start : start + 1024]
        kept, rest = binomial_split(_rows(counts, rows), p_mid, generator=g)
        val_sets.append((kept, rest, torch.as_tensor(rows)))

    def validate() -> float:
        net.eval()
        with torch.no_grad():
            num = den = 0.0
            for kept, rest, rows in val_sets:
                logp = F.log_softmax(net(*feats(kept, rows)), dim=1)
                num += float(-(rest * logp).sum())
                den += float(rest.sum())
        net.train()
        return num / max(den, 1.0)

    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = min(50, max_steps // 10)
    fit = SplitFit()
    fit.baseline_loss = fit.best_loss = validate() if n_val else float("nan")
    best_state, since_best = copy.deepcopy(net.state_dict()), 0
    batch_size = min(batch_size, len(train))
    per_epoch = max(1, len(train) // batch_size)
    eval_every = eval_every or int(np.clip(per_epoch, 10, 50))
    perm = None
    net.train()
    bar = tqdm(range(max_steps), disable=not progress, desc=desc, leave=False)
    running, count = 0.0, 0
    for step in bar:
        epoch, offset = divmod(step, per_epoch)
        if offset == 0:
            perm = train[np.random.default_rng([seed, 6, epoch]).permutation(len(train))]
        idx = np.sort(perm[offset * batch_size : (offset + 1) * batch_size])
        gen = _seeded(seed, 7, step)
        block = _rows(counts, idx)
        lo, hi = p_range
        p = lo + (hi - lo) * torch.rand(len(idx), generator=gen)
        kept, rest = binomial_split(block, p, generator=gen)
        ramp = (step + 1) / warmup if step < warmup else 1.0
        cosine = 0.5 * (1 + math.cos(math.pi * step / max_steps))
        for group in optimizer.param_groups:
            group["lr"] = lr * min(ramp, 0.05 + 0.95 * cosine)
        loss = split_loss(net, feats, kept, rest, torch.as_tensor(idx))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        running, count = running + float(loss.detach()), count + 1
        fit.steps = step + 1
        if (step + 1) % eval_every == 0 or step + 1 == max_steps:
            value = validate() if n_val else running / count
            fit.history.append({"step": step + 1, "loss": running / count, "val_loss": value})
            bar.set_postfix(val=f"{value:.4f}")
            running, count = 0.0, 0
            if not np.isfinite(value):
                break
            if value < fit.best_loss or not np.isfinite(fit.best_loss):
                fit.best_loss, fit.best_step, since_best = value, step + 1, 0
                best_state = copy.deepcopy(net.state_dict())
            else:
                since_best += 1
                if since_best >= patience:
                    break
    bar.close()
    net.load_state_dict(best_state)
    net.eval()
    return fit
