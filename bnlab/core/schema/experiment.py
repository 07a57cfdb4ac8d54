"""ExperimentConfig: the one schema every part of bnlab speaks (see docs/design.md).

Every field has a default, so `ExperimentConfig()` is a valid, small, fast experiment.
Validation errors name the field path (pydantic's `loc`), which the API turns into a 422.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bnlab.core import registry
from bnlab.core.registry import (
    Activation,
    Arch,
    BlockLayer,
    BnImpl,
    DatasetName,
    DropoutKindName,
    DropoutPlacement,
    MaskKind,
    Optimizer,
    Pooling,
)
from bnlab.core.schema import netspec


def _factory_defaults(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    """State in the JSON schema the defaults a default_factory makes (pydantic leaves them
    out), so the served schema gives every default and the dashboard's form starts from it.
    A nested model states its own defaults."""
    for name, field in cls.model_fields.items():
        prop = schema.get("properties", {}).get(name)
        if prop is None or "default" in prop or field.default_factory is None:
            continue
        value = field.default_factory()
        if not isinstance(value, BaseModel):
            prop["default"] = value


class _Strict(BaseModel):
    # Unknown keys are typos; refusing them names the field instead of silently ignoring it.
    model_config = ConfigDict(extra="forbid", json_schema_extra=_factory_defaults)


class DatasetConfig(_Strict):
    name: DatasetName = "digits"
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # held out from the training split, seeded
    path: str | None = None  # relative to BNLAB_DATASETS_DIR for mnist / fashion_mnist / cifar10
    upload_id: str | None = None  # for name == "upload"
    n_samples: int | None = Field(
        None, ge=64, le=2_000_000
    )  # synthetic / mnist1d size; None = generator default
    limit: int | None = Field(None, ge=64)  # use only the first N training samples (quick runs)
    # cifar100 only: the 100 fine classes or the 20 superclasses (coarse_labels)
    label_mode: Literal["fine", "coarse"] = "fine"

    @model_validator(mode="after")
    def _source_present(self) -> DatasetConfig:
        if self.label_mode != "fine" and self.name != "cifar100":
            raise ValueError("dataset.label_mode 'coarse' exists for dataset 'cifar100' only")
        if registry.dataset(self.name).needs_path and not self.path:
            raise ValueError(f"dataset.path is required for dataset '{self.name}'")
        if self.name == "upload" and not self.upload_id:
            raise ValueError("dataset.upload_id is required for dataset 'upload'")
        return self


class DropoutConfig(_Strict):
    kind: DropoutKindName = "bernoulli"
    # drop probability r in [0, 1) (bernoulli, gaussian: noise var r/(1-r)); for uniform the
    # half-width beta in [0, 8) (noise var beta²/3; beta = sqrt(3r/(1-r)) is bernoulli r's noise)
    rate: float = Field(0.5, ge=0.0)
    mask: MaskKind = "per_sample"  # per_batch: one mask for the whole batch

    @field_validator("rate")
    @classmethod
    def _rate_for_kind(cls, rate: float, info: ValidationInfo) -> float:
        # kind is declared first, so it is in info.data when valid; the bound depends on it
        return registry.check_rate(info.data.get("kind", "bernoulli"), rate)


class BatchNormConfig(_Strict):
    momentum: float | None = Field(
        0.1, gt=0.0, le=1.0
    )  # torch convention; None = cumulative average
    eps: float = Field(1e-5, gt=0.0)
    affine: bool = True
    gamma_init: float = 1.0
    beta_init: float = 0.0
    impl: BnImpl = "torch"  # matrix: our autograd Function (docs/science.md §4)


class ModelConfig(_Strict):
    arch: Arch = "mlp"
    widths: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=lambda: [256, 256, 256], min_length=1, max_length=64
    )  # hidden units (mlp) or channels (cnn) per block
    block: list[BlockLayer] = Field(
        default_factory=lambda: ["linear", "dropout", "batchnorm", "activation"],
        min_length=1,
        json_schema_extra={"uniqueItems": True},  # _block_order refuses a repeated layer
    )  # layer order inside every hidden block
    # one dropout of the same kind right before the classifier; bounded like model.dropout.rate
    head_dropout: float | None = Field(None, ge=0.0)
    activation: Activation = "relu"
    pooling: Pooling = "max"  # cnn only: 2x2 pooling after each block
    dropout: DropoutConfig = Field(default_factory=DropoutConfig)
    batchnorm: BatchNormConfig = Field(default_factory=BatchNormConfig)
    # Residual nets (resnet, wrn, densenet; bnlab/core/schema/netspec.py describes each layer).
    # They ignore widths, block and pooling, and place dropout with dropout_at instead.
    bottleneck: bool = False  # resnet: bottleneck units (depth 9n+2) instead of basic (6n+2)
    depth: int | None = Field(None, ge=1, le=1202)  # None: resnet 20 (29), wrn 16, densenet 40
    widen: int = Field(1, ge=1, le=64)  # wrn: k, the width multiplier of WRN-d-k
    growth: int = Field(12, ge=1, le=256)  # densenet: k, channels each dense unit adds
    dropout_at: DropoutPlacement | None = None  # where dropout goes in a residual net

    @field_validator("head_dropout")
    @classmethod
    def _head_dropout_arch(cls, rate: float | None, info: ValidationInfo) -> float | None:
        if rate is not None and info.data.get("arch") in registry.RESIDUAL_ARCHS:
            raise ValueError(
                "residual nets put dropout before the classifier with "
                "model.dropout_at = 'head' (rate: model.dropout.rate)"
            )
        return rate

    @field_validator("bottleneck")
    @classmethod
    def _bottleneck_arch(cls, bottleneck: bool, info: ValidationInfo) -> bool:
        if bottleneck and info.data.get("arch", "resnet") != "resnet":
            raise ValueError("bottleneck units exist only for arch 'resnet'")
        return bottleneck

    @field_validator("depth")
    @classmethod
    def _depth_rule(cls, depth: int | None, info: ValidationInfo) -> int | None:
        arch = info.data.get("arch")
        if depth is None or arch is None:
            return depth
        if arch not in registry.RESIDUAL_ARCHS:
            raise ValueError(f"arch '{arch}' has no depth (its depth is len(model.widths))")
        problem = netspec.depth_error(arch, bool(info.data.get("bottleneck")), depth)
        if problem:
            raise ValueError(problem)
        return depth

    @field_validator("widen")
    @classmethod
    def _widen_arch(cls, widen: int, info: ValidationInfo) -> int:
        if widen != 1 and info.data.get("arch", "wrn") != "wrn":
            raise ValueError("only arch 'wrn' has a width multiplier")
        return widen

    @field_validator("growth")
    @classmethod
    def _growth_arch(cls, growth: int, info: ValidationInfo) -> int:
        if growth != 12 and info.data.get("arch", "densenet") != "densenet":
            raise ValueError("only arch 'densenet' has a growth rate")
        return growth

    @field_validator("dropout_at")
    @classmethod
    def _placement_arch(cls, at: str | None, info: ValidationInfo) -> str | None:
        arch = info.data.get("arch")
        if at is not None and arch is not None and arch not in registry.RESIDUAL_ARCHS:
            raise ValueError(
                f"arch '{arch}' has no units to place dropout in: it places "
                "dropout with model.block and model.head_dropout"
            )
        return at

    @field_validator("block")
    @classmethod
    def _block_order(cls, block: list[str]) -> list[str]:
        dupes = sorted({k for k in block if block.count(k) > 1})
        if dupes:
            raise ValueError(f"each layer may appear at most once in a block, repeated: {dupes}")
        if ("linear" in block) == ("conv" in block):
            raise ValueError("a block needs exactly one of 'linear' or 'conv'")
        return block

    @model_validator(mode="after")
    def _block_matches_arch(self) -> ModelConfig:
        want = registry.WEIGHT_LAYER.get(self.arch)  # residual nets have no block list
        if want is not None and want not in self.block:
            raise ValueError(f"model.block must use '{want}' for arch '{self.arch}'")
        if self.head_dropout is not None:  # same kind as model.dropout, so the same bound
            registry.check_rate(self.dropout.kind, self.head_dropout, "model.head_dropout")
        return self


class TrainConfig(_Strict):
    epochs: int = Field(5, ge=1)  # passes over the training split
    batch_size: int = Field(128, ge=2, le=65536)  # BN needs at least 2 samples per batch
    optimizer: Optimizer = "sgd"
    lr: float = Field(0.05, gt=0.0, le=10.0)  # per step, not scaled by batch size
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # sgd only
    weight_decay: float = Field(0.0, ge=0.0)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$"
    )  # auto: first CUDA device, else CPU
    nesterov: bool = False  # sgd with momentum > 0 only
    # lr per step (bnlab/engine/schedule.py): constant; step = x lr_decay at each milestone
    # epoch (default 50 % and 75 % of epochs); cosine to 0 over the run. Warm-up ramps first.
    schedule: Literal["constant", "step", "cosine"] = "constant"
    milestones: list[Annotated[int, Field(ge=1)]] | None = Field(None, max_length=16)
    lr_decay: float = Field(0.1, gt=0.0, le=1.0)
    warmup_epochs: float = Field(0.0, ge=0.0)
    augment: bool = False  # 4-pixel padded random crop + horizontal flip, on the device (images)
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast forward; weights, BN stats fp32

    @model_validator(mode="after")
    def _schedule_fits(self) -> TrainConfig:
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("train.nesterov needs optimizer 'sgd' with momentum > 0")
        if self.warmup_epochs >= self.epochs:
            raise ValueError("train.warmup_epochs must be below train.epochs")
        ms = self.milestones or []
        if ms and (self.schedule != "step" or ms != sorted(set(ms)) or ms[-1] >= self.epochs):
            raise ValueError(
                "train.milestones: increasing epochs below train.epochs, for schedule 'step'"
            )
        return self


MAX_TRAIN_MODE_DRAWS = 100  # each draw is a test-set forward per test batch size


class ProbeConfig(_Strict):
    every_steps: int = Field(20, ge=1)  # optimizer steps between two probes
    # Held-out batches per probe for the eval-mode statistics and validation accuracies. Each
    # costs an eval-mode forward at every probe and a train-mode forward at one probe in
    # train_mode_every (docs/performance.md has the measured overhead). 4 gives smoother
    # per-probe curves for MLPs (shift's noise floor is ~1 + 0.8*sqrt(2/n) for n samples per
    # channel: ~1.1 at 128, ~1.05 at 512), so the study presets ask for 4.
    eval_batches: int = Field(1, ge=1)
    # The per-probe real train-mode validation pass costs as much as the eval pass itself
    # (a whole forward of the held-out batches): run it at one probe in train_mode_every.
    train_mode_every: int = Field(
        5,
        ge=1,
        description=(
            "Probes per real train-mode validation pass (metric val_acc_train_mode: "
            "model.train() on the held-out batches, dropout on, BN on each batch's statistics). "
            "The pass runs at the probes whose step is a multiple of train_mode_every x "
            "every_steps and always at the run's last step; val_acc_train_mode is null at the "
            "other probes. 1 = at every probe. It costs a forward of the held-out batches, as "
            "much as the eval-mode pass. The summary's test_acc_train_mode does not depend on it."
        ),
    )
    train_mode_test_batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [1, 8, 64]
    )  # "forgot model.eval()" accuracies at these test batch sizes
    # A train-mode accuracy with dropout on depends on the masks drawn: one draw moved it by
    # 0.75-1.4 points on the variance_shift preset. The summary averages this many draws
    # (seeds 0 … n − 1) and reports the standard error beside the mean.
    train_mode_draws: int = Field(
        5,
        ge=1,
        le=MAX_TRAIN_MODE_DRAWS,
        description=(
            "Dropout draws averaged for the summary's test_acc_train_mode (draw d uses seed d); "
            "test_acc_train_mode_se is their standard error of the mean. Each draw costs a "
            "forward of the test set per test batch size. A net without an active dropout "
            "makes one draw (every draw would be the same)."
        ),
    )
    recalibrate: bool = True  # PreciseBN after training (dropout off, cumulative BN stats)
    recalibrate_samples: int = Field(4096, ge=64)  # training samples for the recalibration pass
    # Gradient noise (docs/science.md §6): at each probe, metric `grad_cos` = cosine between a
    # fresh mini-batch gradient and the mean gradient of up to 32 fixed training batches (train
    # mode, dropout on, no step, BN stats restored). Off by default: it costs ~33 backward passes
    # per probe.
    grad_noise: bool = False


class ExperimentConfig(_Strict):
    name: str = Field("experiment", max_length=200)
    tags: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=32)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)

    @model_validator(mode="after")
    def _augment_needs_images(self) -> ExperimentConfig:
        # Crops and flips are for natural colour images; on digits or vectors they destroy
        # the signal (a flipped 2 is no 2; a vector has no rows to shift).
        shape = registry.dataset(self.dataset.name).shape
        if self.train.augment and not (shape and shape[0] == 3):
            raise ValueError("train.augment needs a colour-image dataset (cifar10, cifar100)")
        return self


def in_field_order(data: Any, model: type[BaseModel] = ExperimentConfig) -> Any:
    """`data` (a stored config) with its keys in the model's field order, nested models too;
    keys the model lacks follow in their own order. PostgreSQL's JSONB (runs.config, for the
    runs table's sorts) keeps keys shortest first, which read as a shuffled config."""
    if not isinstance(data, dict):
        return data
    fields = model.model_fields
    out: dict[str, Any] = {}
    for key, field in fields.items():
        if key in data:
            sub = field.annotation
            nested = isinstance(sub, type) and issubclass(sub, BaseModel)
            out[key] = in_field_order(data[key], sub) if nested else data[key]
    out.update((k, v) for k, v in data.items() if k not in fields)
    return out


def set_dotted(
    data: dict[str, Any], path: str, value: Any, *, in_place: bool = False
) -> dict[str, Any]:
    """Return a deep copy of `data` (or `data` itself, in_place) with `path`
    ("model.dropout.rate") set to `value`."""
    out = data if in_place else copy.deepcopy(data)
    node = out
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"'{path}' does not lead to a config field")
    node[leaf] = value
    return out
