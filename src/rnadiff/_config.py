"""Frozen configuration dataclasses; the defaults are the recommended values.

The whole :class:`ModelConfig` (and the :class:`TrainConfig` used) is stored in every checkpoint,
so a saved model is rebuilt exactly as it was trained.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_type_hints

from rnadiff._errors import InputError


def _check_choices(obj: Any) -> None:
    """Reject values of ``Literal[...]`` fields that are not among the choices."""
    hints = get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        choices = get_args(hints[f.name])
        if getattr(hints[f.name], "__origin__", None) is Literal and (
            getattr(obj, f.name) not in choices
        ):
            raise InputError(f"{f.name}={getattr(obj, f.name)!r} is not one of {list(choices)}")


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        if not getattr(obj, name) > 0:
            raise InputError(f"{name} must be positive, got {getattr(obj, name)!r}")


@dataclass(frozen=True)
class PreprocessConfig:
    # what X (or the layer) holds: auto detects and says so; log2 / log10: log-normalized in
    # that base; normalized: TPM, CPM, FPKM (unlogged)
    input: Literal["auto", "counts", "lognorm", "log2", "log10", "normalized"] = "auto"
    target_sum: float = 1e4  # counts per cell after normalization, before log1p
    # genes modelled at most: every gene with a count up to this many, above it the most
    # variable by Pearson residuals (None: every gene); the rest pass through to outputs
    n_top_genes: int | None = 8192
    # with few cells, at most this many genes per training cell (never fewer than
    # min_genes): a gene is learned from the cells, and poorly learned genes dilute the loss
    # (None: no such limit)
    genes_per_cell: float | None = None
    min_genes: int = 2000
    genes: tuple[str, ...] | None = None  # model exactly these genes
    use_highly_variable: bool | None = None  # var['highly_variable'] (None: when present)
    scaling: Literal["zscore", "center"] = "zscore"  # per-gene scaling of log values for the model
    min_std: float = 0.05  # floor of per-gene std, so near-constant genes are not blown up

    def __post_init__(self):
        _check_choices(self)
        _positive(self, "target_sum", "min_std")
        if self.n_top_genes is not None and self.n_top_genes < 1:
            raise InputError(f"n_top_genes must be >= 1 or None, got {self.n_top_genes}")
        if self.genes_per_cell is not None and not self.genes_per_cell > 0:
            raise InputError(f"genes_per_cell must be positive or None, got {self.genes_per_cell}")
        _positive(self, "min_genes")
        if self.genes is not None:
            genes = tuple(str(g) for g in self.genes)
            if not genes:
                raise InputError("genes= is empty; give at least one gene, or None")
            object.__setattr__(self, "genes", genes)

    def gene_budget(self, n_cells: int) -> int | None:
        """Genes modelled at most for ``n_cells`` training cells (None: every gene)."""
        budget = self.n_top_genes
        if self.genes_per_cell is not None:
            by_cells = max(self.min_genes, math.ceil(self.genes_per_cell * n_cells))
            budget = by_cells if budget is None else min(budget, by_cells)
        return budget


@dataclass(frozen=True)
class DiffusionConfig:
    sigma_data: float = 1.0  # std of the scaled data (z-scored genes have 1)
    sigma_min: float = 0.002  # smallest sampling noise level
    sigma_max: float = 80.0  # largest noise level; far above the data's scale
    rho: float = 7.0  # curvature of the sampling schedule (Karras et al. 2022, eq. 5)
    p_mean: float = -1.2  # training noise levels: ln(sigma) ~ N(p_mean, p_std^2)
    p_std: float = 1.2

    def __post_init__(self):
        _positive(self, "sigma_data", "sigma_min", "sigma_max", "rho", "p_std")
        if self.sigma_min >= self.sigma_max:
            raise InputError("sigma_min must be smaller than sigma_max")


@dataclass(frozen=True)
class NetworkConfig:
    width: int = 128  # hidden width of the residual MLP (256 and 512 scored alike, slower)
    depth: int = 3  # residual blocks
    emb_dim: int = 128  # width of the condition and noise-level embeddings
    dropout: float = 0.0
    # networks averaged (an ensemble: each trained on its own loss, sharing the condition and
    # noise-level embeddings); the denoiser is their mean. Costs n_models x the training and
    # sampling compute of one network
    n_models: int = 1

    def __post_init__(self):
        _positive(self, "width", "depth", "emb_dim", "n_models")
        if not 0 <= self.dropout < 1:
            raise InputError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class ConditioningConfig:
    # how a dose acts: "hill" scales each dosed perturbation's embedding by a learned Hill
    # curve of log dose (monotone, 0 at dose 0 = the control); "hill+embedding" adds the
    # dose's own embedding (may bend the curve); "embedding": the dose's own embedding only
    dose_response: Literal["hill", "hill+embedding", "embedding"] = "hill"
    # a dosed perturbation whose dose is unknown (dropped in training for classifier-free
    # guidance, or not given): "full", the full effect h = 1; "learned", a Hill level learned
    # per drug (its effect over its doses). On four simulated worlds "learned" moved held-out
    # doses by +0.012 on average (-0.018 to +0.043; benchmarks/results/studies/dose_length),
    # a tie, so the default stays "full"
    dose_unknown: Literal["full", "learned"] = "full"
    fingerprint_radius: int = 2  # Morgan fingerprints of drugs (SMILES), as chemCPA
    fingerprint_bits: int = 2048

    def __post_init__(self):
        _check_choices(self)
        _positive(self, "fingerprint_radius", "fingerprint_bits")


@dataclass(frozen=True)
class ModelConfig:
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    p_drop: float = 0.15  # per-covariate dropout in training, for classifier-free guidance

    def __post_init__(self):
        if not 0 <= self.p_drop < 1:
            raise InputError(f"p_drop must be in [0, 1), got {self.p_drop}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(
            preprocess=PreprocessConfig(**d["preprocess"]),  # older: n_top_genes was 2000
            diffusion=DiffusionConfig(**d["diffusion"]),
            network=NetworkConfig(**d["network"]),
            # older checkpoints: the dose had its own embedding only
            conditioning=ConditioningConfig(
                **{"dose_unknown": "full", **d.get("conditioning", {"dose_response": "embedding"})}
            ),
            p_drop=d["p_drop"],
        )


AUTO_BATCH = (128, 512)  # TrainConfig.batch_for's minibatch: small and large data
PRECISIONS = ("auto", "fp32", "bf16")  # TrainConfig.precision


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (AVX512-BF16 or AMX), so that
    autocast to bf16 is faster than fp32 rather than emulated."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    except RuntimeError:  # pragma: no cover - a torch build without the probes
        return False


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int = 4000  # optimizer steps at most (a resumed run continues up to its length)
    min_steps: int = 800  # optimizer steps at least, unless max_epochs comes first
    epochs: float | None = 12.0  # passes over the cells a run aims for (None: max_steps steps)
    # cells per (global) minibatch; None: follows the data (batch_for): 128 or 512
    batch_size: int | None = None
    lr: float = 2e-3  # peak learning rate of AdamW
    weight_decay: float = 1e-4
    warmup_steps: int = 50  # linear warm-up, then cosine decay to lr_min_ratio * lr
    lr_min_ratio: float = 0.05
    ema_decay: float = 0.995  # EMA of the weights, used for sampling
    grad_clip: float = 1.0  # max global gradient norm
    seed: int = 0
    # checkpoints (when a checkpoint dir is given): every this many steps (None: four times per
    # run), and at least every checkpoint_minutes, so that a killed run loses little
    checkpoint_every: int | None = None
    checkpoint_minutes: float = 5.0
    calibration_cells: int = 128  # control cells that calibrate effect sizes after training; 0: off
    spread_cells: int = (
        256  # source cells per pair that calibrate the counterfactual spread; 0: off
    )
    # control cells (a time course: source cells) predicted under each measured condition to
    # anchor predicted means on its training mean after training (calibrate_means); 0: off
    anchor_cells: int = 64
    thinning: float = 0.0  # share of each batch corrupted by thinning its counts (raw counts only)
    max_epochs: float | None = 200.0  # passes over the cells at most (None: no cap)
    # passes over the cells at least (at most epochs), past max_steps: data sets of > 1.024M
    # cells at batch 512 train 2 passes, not max_steps (benchmarks/scale/length_study.py)
    min_epochs: float | None = 2.0
    # bf16: autocast of the forward pass; auto (precision_for): bf16 for batches of 512 or
    # more on a CPU that computes bf16 natively (AVX512-BF16 or AMX), fp32 otherwise
    precision: Literal["auto", "fp32", "bf16"] = "auto"

    def __post_init__(self):
        _positive(self, "max_steps", "lr", "grad_clip", "checkpoint_minutes")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1 or None, got {self.batch_size}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise InputError(f"checkpoint_every must be >= 1 or None, got {self.checkpoint_every}")
        if self.min_steps < 1:
            raise InputError(f"min_steps must be >= 1, got {self.min_steps}")
        if self.epochs is not None and not (0 < self.epochs < float("inf")):
            raise InputError(f"epochs must be positive or None, got {self.epochs}")
        if not 0 <= self.ema_decay < 1:
            raise InputError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.thinning <= 1:
            raise InputError(f"thinning must be in [0, 1], got {self.thinning}")
        if self.calibration_cells < 0:
            raise InputError(f"calibration_cells must be >= 0, got {self.calibration_cells}")
        if self.anchor_cells < 0:
            raise InputError(f"anchor_cells must be >= 0, got {self.anchor_cells}")
        if self.spread_cells < 0:
            raise InputError(f"spread_cells must be >= 0, got {self.spread_cells}")
        if self.max_epochs is not None and not (0 < self.max_epochs < float("inf")):
            raise InputError(f"max_epochs must be positive or None, got {self.max_epochs}")
        if self.min_epochs is not None and not (0 < self.min_epochs < float("inf")):
            raise InputError(f"min_epochs must be positive or None, got {self.min_epochs}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")

    def checkpoint_interval(self, steps: int) -> int:
        """Steps between checkpoints of a run of ``steps`` steps."""
        return self.checkpoint_every or max(1, math.ceil(steps / 4))

    def batch_for(self, n_cells: int) -> int:
        """Cells per minibatch of a run on ``n_cells`` cells: ``batch_size``, else (None) 128,
        or 512 where ``epochs`` passes (12 when ``epochs`` is None) at 512 still take
        ``min_steps`` steps (by default from 34,134 cells).

        A larger batch runs more cells per second (a CPU step of 512 cells: 1.4x the cells/s
        of 128, 54% against 37% of the matmul peak), but where the step floor sets the length
        (small data) it trains more cells and takes longer; so the batch grows only where
        the data fill the floor at 512. No data set of the benchmark changes (a Kang fold,
        1,402 cells; Papalexi, 12,873; HSMM, 192). Chosen on simulated files of 100k and 1M
        cells (``benchmarks/scale/length_study.py``, docs/guide/scale.md)."""
        if self.batch_size is not None:
            return self.batch_size
        passes = self.epochs if self.epochs is not None else TrainConfig.epochs
        small, large = AUTO_BATCH
        return large if passes * n_cells / large >= self.min_steps else small

    def precision_for(self, batch_size: int, device: str = "cpu") -> str:
        """The precision of a run at ``batch_size`` cells per step on ``device``: ``precision``
        when given; ``"auto"``: ``"bf16"`` (autocast of the forward pass, fp32 weights and
        optimizer) for batches of 512 or more on a CPU that computes bf16 natively
        (AVX512-BF16 or AMX, :func:`cpu_has_native_bf16`), else ``"fp32"``.

        Measured on such a CPU (an AMD EPYC with AVX512-BF16) on the scale benchmark's 100k-cell
        file at batch 512: 1.36-1.47x the cells/s of fp32 at 1 thread, 1.1-1.25x at 2, with the
        same quality (effect correlation 0.645 / 0.648 against 0.644 / 0.648, 2 seeds); at
        batch 128 (small data) 1.0-1.1x, so small data keep fp32 (and every data set of the
        benchmark its numbers). A CPU without native bf16 would emulate it, slower: fp32 there.
        On a GPU ``"auto"`` is fp32 (not measured)."""
        if self.precision != "auto":
            return self.precision
        native = str(device).startswith("cpu") and cpu_has_native_bf16()
        large = batch_size is not None and batch_size >= AUTO_BATCH[1]
        return "bf16" if native and large else "fp32"

    def steps_for(self, n_cells: int) -> int:
        """Optimizer steps of a run on ``n_cells`` cells.

        ``epochs`` passes over the cells, kept between ``min_steps`` and ``max_steps`` (all
        ``max_steps`` when ``epochs`` is None), and never more than ``max_epochs`` passes. On
        the benchmark's data: a Kang fold (1402 cells) trains ``min_steps`` = 800 steps, a
        Papalexi split (12873 cells) 1207, the HSMM time course (192 cells) stops at 300
        (``max_epochs``). The defaults come from training-length studies on the benchmark's
        splits (README): 600, 800 and 1200 steps score alike on Kang; on Papalexi 8 passes
        (800 steps) score lower, and 12 to 30 passes alike. Past ``max_steps``, at least
        ``min_epochs`` passes: a 5M-cell file trains 19,532 steps of 512 (2 passes), not 4,000;
        at batch 128, a 1M-cell file 15,625 (2 passes), not 4,000 (half a pass). On the
        scale benchmark's simulated 1M cells, 2 passes brought the effect correlation on
        the genes each perturbation moves from 0.56 to 0.65 (0.66 between two draws of
        held-out cells; benchmarks/results/scale/length_study.csv). The minibatch is
        :meth:`batch_for`'s."""
        per_step = min(self.batch_for(n_cells), n_cells)
        if self.epochs is None:
            steps = self.max_steps
        else:
            aimed = math.ceil(self.epochs * n_cells / per_step)
            steps = min(self.max_steps, max(self.min_steps, aimed))
            if self.min_epochs is not None:  # never more passes than epochs asks for
                floor = min(self.min_epochs, self.epochs)
                steps = max(steps, math.ceil(floor * n_cells / per_step))
        if self.max_epochs is not None:
            steps = min(steps, math.ceil(self.max_epochs * n_cells / per_step))
        return max(1, steps)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
