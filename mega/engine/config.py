"""Settings of the training loop (:func:`mega.engine.train`): ``EngineConfig(**cfg.engine)``;
``configs/engine/default.yaml`` holds exactly its keys (fault injection's under ``engine.fault``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from mega.engine.faults import FaultConfig
from mega.errors import ConfigError


@dataclass
class EngineConfig:
    """Settings of :func:`train`; ``configs/engine/default.yaml`` holds exactly these keys.

    Exactly one of ``max_steps`` / ``epochs`` is set. Steps count optimiser updates; one update
    consumes ``batch_size * grad_accum`` samples on each of the ``world_size`` ranks.
    """

    max_steps: int | None = 1000  # optimiser updates to train for
    epochs: int | None = None  # alternative to max_steps: whole passes over the dataset
    batch_size: int = 32  # per rank and per micro-step
    grad_accum: int = 1  # micro-steps per update
    lr: float = 3e-4  # peak learning rate (AdamW)
    min_lr_ratio: float = 0.1  # final lr of the cosine, as a fraction of the peak
    warmup_steps: int = 100  # linear warm-up length in updates
    weight_decay: float = 0.01  # decoupled weight decay on matrices/kernels only
    lr_scales: dict[str, float] | None = None  # parameter-name prefix -> lr multiplier (None: all 1)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    precision: str = "auto"  # auto | bf16 | fp32 (autocast dtype; auto = bf16 where native)
    seed: int = 0
    device: str = "auto"  # read by setup_dist: auto | cpu | cuda
    num_workers: int = 0  # DataLoader worker processes per rank
    log_every: int = 10  # updates between logged (rank-averaged) metrics
    eval_every: int = 0  # updates between eval_fn calls; 0 = only at the end
    ckpt_every: int = 500  # updates between checkpoints/last.pt writes; 0 = only at the end
    keep_every: int = 0  # also keep checkpoints/step_XXXXXXX.pt every N updates; 0 = never
    resume: str | None = "auto"  # auto (newest readable checkpoint of the run dir, if any) | a path | null
    progress_bar: bool = True  # tqdm bar on rank 0
    find_unused_parameters: bool = False  # DDP option for models with conditionally used parameters
    keep_last: int = 2  # checkpoints kept: last.pt, last-1.pt, ... (resume falls back to an older one)
    strict_resume: bool = True  # refuse a checkpoint of another model/data order; false = warn, continue
    fault: FaultConfig = field(default_factory=FaultConfig)  # fault injection (mega/engine/faults.py)

    def __post_init__(self) -> None:
        if (self.max_steps is None) == (self.epochs is None):
            raise ConfigError(
                f"set exactly one of engine.max_steps / engine.epochs (got {self.max_steps}, {self.epochs})"
            )
        if min(self.batch_size, self.grad_accum, self.log_every, self.keep_last) < 1:
            raise ConfigError(
                "engine.batch_size, engine.grad_accum, engine.log_every and engine.keep_last must be >= 1 (got "
                f"{self.batch_size}, {self.grad_accum}, {self.log_every}, {self.keep_last})"
            )
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        self.lr_scales = {str(k): float(v) for k, v in dict(self.lr_scales or {}).items()}
        if not isinstance(self.fault, FaultConfig):
            fault = (
                OmegaConf.to_container(self.fault) if isinstance(self.fault, DictConfig) else dict(self.fault)
            )
            unknown = sorted(set(fault) - set(FaultConfig.__dataclass_fields__))
            if unknown:
                raise ConfigError(
                    f"engine.fault has no key {unknown}; known: {list(FaultConfig.__dataclass_fields__)}"
                )
            self.fault = FaultConfig(**fault)
