"""What `POST /api/describe` and `bnlab describe --json` return (backend/schema/netspec.py
computes it): the network a config builds, before anything is trained."""

from __future__ import annotations

from pydantic import BaseModel


class BNLayerPublic(BaseModel):
    index: int  # forward order among the BN layers (the probe's layer index)
    name: str  # module path, e.g. stage2.unit3.bn2
    stage: int | None  # 1-based stage / dense block; None for the head and mlp/cnn blocks
    unit: int | None  # 1-based unit in its stage (mlp/cnn: the block); None for transitions
    place: str  # unit | transition | head | block
    role: str  # bn1, bn2, bn3 or bn: its name inside the unit
    channels: int
    hw: list[int]  # spatial size of its input
    feed: str  # what its input is (a conv, a dropout <- conv, a residual sum, a concatenation)
    dropout_before: bool  # a dropout's output is its whole input
    weight: str | None  # the conv/linear whose gradient norm the probe reports for it


class DropoutPublic(BaseModel):
    name: str
    channels: int
    before: str | None  # the module that runs right after it


class MemoryEstimate(BaseModel):
    params_bytes: int
    activations_bytes: int
    total_bytes: int
    assumes: str


class TimeEstimate(BaseModel):
    train_samples_per_epoch: int | None  # None: unknown without dataset.limit
    steps: int | None
    total_flops: float | None
    cpu_s: float | None
    gpu_s: float | None
    assumes: str


class DescriptionPublic(BaseModel):
    arch: str
    depth: int | None
    input_shape: list[int]
    classes: int
    params: int
    bn_layers: list[BNLayerPublic]
    bn_channels: int
    dropouts: list[DropoutPublic]
    dropout_at: str | None
    ignored_fields: list[str]  # config fields this arch does not use
    macs_per_sample: int
    train_flops_per_sample: int
    memory: MemoryEstimate
    time: TimeEstimate
