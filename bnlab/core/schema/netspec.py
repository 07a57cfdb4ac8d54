"""The network a ModelConfig builds, described without torch: every layer in forward order.

One description serves the API's parameter cap (params.estimate_params), `bnlab describe`,
`POST /api/describe` (the submit form's live parameter and BN counts) and the engine: the
engine builds the residual nets from this spec (bnlab/engine/nets.py), and a test checks for
many configs that the torch model has exactly these parameters, BN layers (names, order,
channels) and dropout positions, observed in a real forward pass.

Architectures (all for image inputs; 32x32 CIFAR in the literature, any (C, H, W) works):

- `resnet`: pre-activation ResNet (He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual
  Networks", ECCV 2016), CIFAR layout: a 3x3 stem conv to 16 channels, three stages of n
  units at 16/32/64 channels (strides 1, 2, 2), then BN-ReLU, global average pool and a
  linear classifier. Basic unit BN-ReLU-conv3x3-BN-ReLU-conv3x3, depth 6n+2; bottleneck unit
  BN-ReLU-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1 with 4x expansion, depth 9n+2. Where a
  unit changes shape its shortcut is a 1x1 conv (no bias) on the pre-activated input.
- `wrn`: WRN-d-k (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016): the basic
  pre-activation unit at 16k/32k/64k channels, depth 6n+4 (the three shortcut convs count).
- `densenet`: DenseNet-BC (Huang, Liu, van der Maaten, Weinberger, "Densely Connected
  Convolutional Networks", CVPR 2017): a 3x3 stem conv to 2k channels, three dense blocks of
  n = (depth-4)/6 units BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k) whose outputs are concatenated
  to their inputs, transitions BN-ReLU-conv1x1 (compression 0.5, floor)-avgpool2 between blocks.

Every conv of these nets has no bias (BN follows); the classifier has one.

Dropout placement (`model.dropout_at`), every kind in every placement, rate model.dropout.rate:
- `before_bn`: inside each unit, right before every BN fed by a conv of the same unit
  (drop{j} before bn{j}): the variance shift goes straight into BN (Li et al. 2019's
  harmful case);
- `before_conv`: inside each unit, after every inner BN-ReLU, before the next conv
  (drop{j} before conv{j}; WRN's placement, between the two convs of a basic unit);
- `after_conv`: after every conv of each unit (drop{j} after conv{j}) and, in DenseNet, after
  each transition's conv (trans{s}.drop, before its pooling): Huang et al.'s placement, "a
  dropout layer after each convolutional layer (except the first one)", as their Torch code
  (liuzhuang13/DenseNet, models/densenet.lua) builds it;
- `head`: one dropout after the global average pool, before the classifier ("after all BN");
- `none` (or unset): no dropout.
mlp and cnn place dropout with model.block and model.head_dropout instead.

BN names are module paths of the built model: `stage2.unit3.bn2`, `trans1.bn`, `head.bn`
for residual nets, `blocks.0.bn` for mlp/cnn. Each BN record says what feeds it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

# Stages of the CIFAR residual nets: base channels and the stride of each stage's first unit.
STAGE_CHANNELS = (16, 32, 64)
STAGE_STRIDES = (1, 2, 2)
BOTTLENECK_EXPANSION = 4  # He et al.: a bottleneck unit's output is 4x its inner width
DENSE_INNER = 4  # DenseNet-B: the 1x1 conv of a dense unit outputs 4k channels
COMPRESSION = 0.5  # DenseNet-C: a transition keeps floor(0.5 * channels)
DEFAULT_DEPTH = {"resnet": 20, "resnet_bottleneck": 29, "wrn": 16, "densenet": 40}


def depth_rule(arch: str, bottleneck: bool) -> tuple[int, int, int]:
    """(step, offset, minimum) of the valid depths: depth = step*n + offset, n >= 1."""
    if arch == "resnet":
        return (9, 2, 11) if bottleneck else (6, 2, 8)
    if arch in ("wrn", "densenet"):
        return 6, 4, 10
    raise ValueError(f"model.depth does not apply to arch {arch!r}")


def depth_error(arch: str, bottleneck: bool, depth: int) -> str | None:
    """Why `depth` is invalid for the arch (a message naming the rule), or None if it is valid."""
    step, offset, least = depth_rule(arch, bottleneck)
    if depth >= least and (depth - offset) % step == 0:
        return None
    what = {
        ("resnet", False): "basic pre-activation units",
        ("resnet", True): "bottleneck units",
        ("wrn", False): "WRN-d-k",
        ("densenet", False): "DenseNet-BC, (depth-4) % 6 == 0",
    }[(arch, bottleneck and arch == "resnet")]
    return (
        f"depth {depth} is not {step}n+{offset} with n >= 1 ({what}: "
        f"{least}, {least + step}, {least + 2 * step}, ...)"
    )


def resolved_depth(model: Any) -> int:
    """model.depth, or the arch's default when unset."""
    if model.depth is not None:
        return model.depth
    key = "resnet_bottleneck" if model.arch == "resnet" and model.bottleneck else model.arch
    return DEFAULT_DEPTH[key]


@dataclass(frozen=True)
class Op:
    """One layer (one torch module of the built net) and what it costs per sample."""

    kind: str  # conv | linear | bn | act | drop | pool (average) | maxpool
    name: str  # module path in the built model
    c_in: int
    c_out: int
    hw: tuple[int, int]  # spatial size of its output ((1, 1) for vectors)
    kernel: int = 0  # conv: k x k
    stride: int = 1
    bias: bool = False
    params: int = 0
    macs: int = 0  # multiply-accumulates per sample, forward
    window: tuple[int, int] | None = None  # pool: (kh, kw), 2 along every side longer than 1

    @property
    def elems(self) -> int:
        """Output values per sample (what training keeps for the backward pass); max pooling
        also keeps the int64 index of each output, two float32s' worth."""
        return self.c_out * self.hw[0] * self.hw[1] * (3 if self.kind == "maxpool" else 1)


@dataclass(frozen=True)
class BNInfo:
    """A BN layer: where it sits and what it normalises."""

    index: int  # forward order among BN layers
    name: str
    stage: int | None  # 1-based stage (dense block); None for the head BN / mlp-cnn blocks
    unit: int | None  # 1-based unit within the stage; None for transitions and the head
    place: str  # unit | transition | head | block
    role: str  # bn1, bn2, bn3, bn (its name within the unit)
    channels: int
    hw: tuple[int, int]
    feed: str  # what its input is
    dropout_before: bool  # a dropout module's output is its input (the variance-shift case)
    weight: str | None  # the conv/linear whose output it normalises (probes report its grad)


@dataclass(frozen=True)
class Unit:
    """A group of ops with one forward rule (see bnlab/engine/nets.py)."""

    kind: str  # stem | preact | dense | transition | head | block
    name: str  # module path ("stage2.unit3", "trans1", "head", "blocks.0")
    stage: int | None
    unit: int | None
    ops: tuple[Op, ...]  # main path, forward order
    shortcut: Op | None = None  # preact only: 1x1 projection of the pre-activated input
    pre: int = 0  # preact only: ops[:pre] is the pre-activation (BN-ReLU) the shortcut reads
    out_channels: int = 0
    out_hw: tuple[int, int] = (1, 1)


@dataclass
class NetSpec:
    arch: str
    in_shape: tuple[int, int, int]
    classes: int
    depth: int | None
    units: list[Unit]
    bn_layers: list[BNInfo] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # config fields this arch does not use

    @property
    def ops(self) -> list[Op]:
        """Every op in forward order (a shortcut conv right after its unit's pre-activation)."""
        out = []
        for u in self.units:
            out.extend(u.ops[: u.pre])
            if u.shortcut is not None:
                out.append(u.shortcut)
            out.extend(u.ops[u.pre :])
        return out

    @property
    def params(self) -> int:
        return sum(op.params for op in self.ops)

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops)

    @property
    def dropouts(self) -> list[Op]:
        return [op for op in self.ops if op.kind == "drop"]

    def activation_elems(self) -> int:
        """Values per sample kept for the backward pass: every op's output plus the residual
        sums (preact units) and concatenations (dense units)."""
        extra = sum(
            u.out_channels * u.out_hw[0] * u.out_hw[1]
            for u in self.units
            if u.kind in ("preact", "dense")
        )
        return sum(op.elems for op in self.ops) + extra


# ---------------------------------------------------------------------------- builders


def _conv(
    name: str,
    c_in: int,
    c_out: int,
    hw: tuple[int, int],
    k: int,
    stride: int = 1,
    bias: bool = False,
) -> Op:
    out = ((hw[0] - 1) // stride + 1, (hw[1] - 1) // stride + 1)  # padding k // 2
    params = c_in * c_out * k * k + (c_out if bias else 0)
    return Op(
        "conv",
        name,
        c_in,
        c_out,
        out,
        k,
        stride,
        bias,
        params,
        c_in * c_out * k * k * out[0] * out[1],
    )


def _bn(name: str, c: int, hw: tuple[int, int], affine: bool) -> Op:
    return Op("bn", name, c, c, hw, params=2 * c if affine else 0)


def _simple(kind: str, name: str, c: int, hw: tuple[int, int]) -> Op:
    return Op(kind, name, c, c, hw)


def pool_kernel(h: int, w: int) -> tuple[int, int]:
    """2x2 pooling, except along a side already down to 1 (e.g. a 1x40 signal)."""
    return (2 if h >= 2 else 1, 2 if w >= 2 else 1)


class _UnitBuilder:
    """Appends a unit's ops in order, inserting dropout where the placement asks for it."""

    def __init__(self, prefix: str, at: str | None, affine: bool) -> None:
        self.prefix, self.at, self.affine = prefix, at, affine
        self.ops: list[Op] = []

    def bn_act(self, j: int, c: int, hw: tuple[int, int], inner: bool) -> None:
        """bn{j} then act{j}; an inner BN (fed by this unit's conv) may get drop{j} first."""
        if inner and self.at == "before_bn":
            self.ops.append(_simple("drop", f"{self.prefix}.drop{j}", c, hw))
        self.ops.append(_bn(f"{self.prefix}.bn{j}", c, hw, self.affine))
        self.ops.append(_simple("act", f"{self.prefix}.act{j}", c, hw))

    def conv(
        self, j: int, c_in: int, c_out: int, hw: tuple[int, int], k: int, stride: int = 1
    ) -> tuple[int, tuple[int, int]]:
        """conv{j}, with drop{j} before it (before_conv, except the unit's first conv, which
        reads the unit's own pre-activation) or after it (after_conv)."""
        if self.at == "before_conv" and j > 1:
            self.ops.append(_simple("drop", f"{self.prefix}.drop{j}", c_in, hw))
        op = _conv(f"{self.prefix}.conv{j}", c_in, c_out, hw, k, stride)
        self.ops.append(op)
        if self.at == "after_conv":
            self.ops.append(_simple("drop", f"{self.prefix}.drop{j}", c_out, op.hw))
        return c_out, op.hw


def _residual_units(
    model: Any, c: int, hw: tuple[int, int], affine: bool, depth: int, at: str | None
) -> list[Unit]:
    if model.arch == "wrn":
        n, widths, bottleneck = (depth - 4) // 6, [s * model.widen for s in STAGE_CHANNELS], False
    else:
        bottleneck = model.bottleneck
        n = (depth - 2) // (9 if bottleneck else 6)
        widths = list(STAGE_CHANNELS)
    units = []
    for s, (width, first_stride) in enumerate(zip(widths, STAGE_STRIDES, strict=True), 1):
        for u in range(1, n + 1):
            stride, prefix = (first_stride if u == 1 else 1), f"stage{s}.unit{u}"
            b = _UnitBuilder(prefix, at, affine)
            b.bn_act(1, c, hw, inner=False)
            pre = len(b.ops)
            if bottleneck:
                out = width * BOTTLENECK_EXPANSION
                ch, h = b.conv(1, c, width, hw, 1)
                b.bn_act(2, ch, h, inner=True)
                ch, h = b.conv(2, ch, width, h, 3, stride)
                b.bn_act(3, ch, h, inner=True)
                ch, h = b.conv(3, ch, out, h, 1)
            else:
                out = width
                ch, h = b.conv(1, c, width, hw, 3, stride)
                b.bn_act(2, ch, h, inner=True)
                ch, h = b.conv(2, ch, width, h, 3)
            shortcut = None
            if stride != 1 or c != out:
                shortcut = _conv(f"{prefix}.shortcut", c, out, hw, 1, stride)
            units.append(Unit("preact", prefix, s, u, tuple(b.ops), shortcut, pre, out, h))
            c, hw = out, h
    return units


def _dense_units(
    model: Any, c: int, hw: tuple[int, int], affine: bool, depth: int, at: str | None
) -> list[Unit]:
    n, k = (depth - 4) // 6, model.growth
    units = []
    for s in range(1, len(STAGE_CHANNELS) + 1):
        for u in range(1, n + 1):
            prefix = f"stage{s}.unit{u}"
            b = _UnitBuilder(prefix, at, affine)
            b.bn_act(1, c, hw, inner=False)
            ch, h = b.conv(1, c, DENSE_INNER * k, hw, 1)
            b.bn_act(2, ch, h, inner=True)
            b.conv(2, ch, k, h, 3)
            c += k
            units.append(
                Unit("dense", f"stage{s}.unit{u}", s, u, tuple(b.ops), out_channels=c, out_hw=hw)
            )
        if s < len(STAGE_CHANNELS):
            name, out = f"trans{s}", int(math.floor(c * COMPRESSION))
            kern = pool_kernel(*hw)
            pooled = (hw[0] // kern[0], hw[1] // kern[1])
            ops = [
                _bn(f"{name}.bn", c, hw, affine),
                _simple("act", f"{name}.act", c, hw),
                _conv(f"{name}.conv", c, out, hw, 1),
            ]
            if at == "after_conv":  # Huang et al.: after every conv but the stem's
                ops.append(_simple("drop", f"{name}.drop", out, hw))
            ops.append(Op("pool", f"{name}.pool", out, out, pooled, window=kern))
            units.append(
                Unit("transition", name, s, None, tuple(ops), out_channels=out, out_hw=pooled)
            )
            c, hw = out, pooled
    return units


def _head(c: int, hw: tuple[int, int], classes: int, at: str | None, affine: bool) -> Unit:
    ops = [_bn("head.bn", c, hw, affine), _simple("act", "head.act", c, hw)]
    if at == "head":
        ops.append(_simple("drop", "head.drop", c, (1, 1)))
    ops.append(
        Op(
            "linear",
            "head.fc",
            c,
            classes,
            (1, 1),
            bias=True,
            params=c * classes + classes,
            macs=c * classes,
        )
    )
    return Unit("head", "head", None, None, tuple(ops), out_channels=classes)


def _residual_spec(model: Any, shape: tuple[int, int, int], classes: int) -> NetSpec:
    depth = resolved_depth(model)
    affine = model.batchnorm.affine
    at = None if model.dropout_at in (None, "none") else model.dropout_at
    hw = (shape[1], shape[2])
    if model.arch == "densenet":
        stem = _conv("stem.conv", shape[0], 2 * model.growth, hw, 3)
        body = _dense_units(model, stem.c_out, hw, affine, depth, at)
    else:
        stem = _conv("stem.conv", shape[0], STAGE_CHANNELS[0], hw, 3)
        body = _residual_units(model, stem.c_out, hw, affine, depth, at)
    last = body[-1]
    units = [
        Unit("stem", "stem", None, None, (stem,), out_channels=stem.c_out, out_hw=hw),
        *body,
        _head(last.out_channels, last.out_hw, classes, at, affine),
    ]
    ignored = ["model.widths", "model.block", "model.pooling"]
    return NetSpec(model.arch, shape, classes, depth, units, ignored=ignored)


def _block_spec(model: Any, shape: tuple[int, int, int], classes: int) -> NetSpec:
    """mlp / cnn: hidden blocks in model.block's order (bnlab/engine/model.py builds them)."""
    mlp, affine = model.arch == "mlp", model.batchnorm.affine
    c, hw = (math.prod(shape), (1, 1)) if mlp else (shape[0], (shape[1], shape[2]))
    roles = {
        "linear": "linear",
        "conv": "conv",
        "dropout": "drop",
        "batchnorm": "bn",
        "activation": "act",
    }
    units = []
    for i, width in enumerate(model.widths):
        prefix, ops, ch = f"blocks.{i}", [], c
        for kind in model.block:
            name = f"{prefix}.{roles[kind]}"
            if kind == "linear":
                ops.append(
                    Op(
                        "linear",
                        name,
                        ch,
                        width,
                        hw,
                        bias=True,
                        params=ch * width + width,
                        macs=ch * width,
                    )
                )
                ch = width
            elif kind == "conv":
                ops.append(_conv(name, ch, width, hw, 3, bias=True))
                ch = width
            elif kind == "batchnorm":
                ops.append(_bn(name, ch, hw, affine))
            else:
                ops.append(_simple(roles[kind], name, ch, hw))
        if not mlp:
            kern = pool_kernel(*hw)
            hw = (hw[0] // kern[0], hw[1] // kern[1])
            pool = "maxpool" if model.pooling == "max" else "pool"  # max keeps int64 indices
            ops.append(Op(pool, f"{prefix}.pool", ch, ch, hw, window=kern))
        units.append(Unit("block", prefix, None, i + 1, tuple(ops), out_channels=ch, out_hw=hw))
        c = ch
    head = []
    if model.head_dropout is not None:
        head.append(_simple("drop", "head_drop", c, (1, 1)))
    head.append(
        Op(
            "linear",
            "classifier",
            c,
            classes,
            (1, 1),
            bias=True,
            params=c * classes + classes,
            macs=c * classes,
        )
    )
    units.append(Unit("head", "", None, None, tuple(head), out_channels=classes))
    ignored = ["model.depth", "model.widen", "model.growth", "model.bottleneck"]
    return NetSpec(model.arch, shape, classes, None, units, ignored=ignored)


def _feed(ops: list[Op], i: int, units: list[Unit], u_index: int, unit_start: int) -> str:
    """What op i (a BN) receives, as text."""
    if i > unit_start:  # inside its unit: the previous op, back through dropout to its source
        prev = ops[i - 1]
        if prev.kind == "drop":
            src = ops[i - 2] if i - 2 >= unit_start else None
            return f"{prev.name} <- {src.name}" if src is not None else prev.name
        return prev.name
    before = units[u_index - 1] if u_index > 0 else None
    if before is None:
        return "the input"
    return _unit_output(before, units, u_index - 1)


def _unit_output(unit: Unit, units: list[Unit], u_index: int) -> str:
    last = unit.ops[-1]
    tail = last.name if last.kind != "drop" else f"{last.name} <- {unit.ops[-2].name}"
    if unit.kind == "preact":
        sc = unit.shortcut.name if unit.shortcut is not None else "identity shortcut"
        return f"sum: {tail} + {sc} ({unit.out_channels} ch)"
    if unit.kind == "dense":
        first = u_index
        while first > 0 and units[first - 1].kind == "dense":
            first -= 1
        src = units[first - 1].ops[-1]  # the stem conv or the previous transition's pool
        # each unit adds its last op's output: conv2, or drop2 after it (after_conv)
        parts = [src.name] + [units[j].ops[-1].name for j in range(first, u_index + 1)]
        shown = parts if len(parts) <= 4 else [parts[0], parts[1], "...", parts[-1]]
        return f"concat: {', '.join(shown)} ({unit.out_channels} ch)"
    return tail


def _weight_of(ops: list[Op], i: int) -> str | None:
    """The newest conv/linear on the path into op i (whose gradient the probe reports)."""
    for op in reversed(ops[:i]):
        if op.kind in ("conv", "linear") and not op.name.endswith(".shortcut"):
            return op.name
    return None


def _bn_infos(spec: NetSpec) -> list[BNInfo]:
    infos, flat = [], []
    starts = []
    for u in spec.units:
        starts.append(len(flat))
        flat.extend(u.ops)  # main path only: shortcuts never feed a BN directly
    u_of = [ui for ui, u in enumerate(spec.units) for _ in u.ops]
    for i, op in enumerate(flat):
        if op.kind != "bn":
            continue
        ui = u_of[i]
        unit = spec.units[ui]
        role = op.name.rsplit(".", 1)[1]
        place = {"preact": "unit", "dense": "unit"}.get(unit.kind, unit.kind)
        if spec.arch in ("mlp", "cnn"):
            # blocks are plain sequences: a block's last op feeds the next block's first
            dropout_before = i > 0 and flat[i - 1].kind == "drop"
            weight = next((o.name for o in unit.ops if o.kind in ("conv", "linear")), None)
        else:
            # a unit's first BN reads a sum or concatenation, never a dropout's output alone
            dropout_before = i > starts[ui] and flat[i - 1].kind == "drop"
            weight = _weight_of(flat, i)
        infos.append(
            BNInfo(
                len(infos),
                op.name,
                unit.stage,
                unit.unit,
                place,
                role,
                op.c_out,
                op.hw,
                _feed(flat, i, spec.units, ui, starts[ui]),
                dropout_before,
                weight,
            )
        )
    return infos


def build_spec(model: Any, in_shape: tuple[int, ...], classes: int) -> NetSpec:
    """The spec of `model` (a validated ModelConfig) for inputs (C, H, W) or (D,) features."""
    shape = (1, 1, in_shape[0]) if len(in_shape) == 1 else tuple(in_shape)
    if model.arch in ("mlp", "cnn"):
        spec = _block_spec(model, shape, classes)
    else:
        spec = _residual_spec(model, shape, classes)
    spec.bn_layers = _bn_infos(spec)
    return spec


_PLACE_PATTERNS = (
    (re.compile(r"^stage(\d+)\.unit(\d+)\.\w+$"), "unit"),
    (re.compile(r"^trans(\d+)\.\w+$"), "transition"),
    (re.compile(r"^blocks\.(\d+)\.\w+$"), "block"),
    (re.compile(r"^head\.\w+$"), "head"),
)


def place_of(name: str) -> dict[str, Any]:
    """{name, stage, unit, place} of a reported layer, read from its name (the names are module
    paths, see the module docstring): stage2.unit3.bn2 -> stage 2, unit 3, place "unit";
    trans1.bn -> stage 1, place "transition"; blocks.4.bn (mlp/cnn) -> unit 5, place "block";
    head.bn -> place "head"; anything else (a user's own model) -> place "other"."""
    for pattern, place in _PLACE_PATTERNS:
        m = pattern.match(name)
        if not m:
            continue
        groups = [int(g) for g in m.groups()]
        if place == "unit":
            return {"name": name, "stage": groups[0], "unit": groups[1], "place": place}
        if place == "transition":
            return {"name": name, "stage": groups[0], "unit": None, "place": place}
        if place == "block":
            return {"name": name, "stage": None, "unit": groups[0] + 1, "place": place}
        return {"name": name, "stage": None, "unit": None, "place": place}
    return {"name": name, "stage": None, "unit": None, "place": "other"}
