"""Residual nets (resnet, wrn, densenet) built from their torch-free spec.

bnlab/core/schema/netspec.py lists every layer of the net a config asks for (names, channels,
strides, dropout positions); this module turns each op into a torch module and each unit
into a forward rule, so the module paths of the built model are the spec's names
(`stage2.unit3.bn2`). tests/bnlab/engine/test_nets.py runs a forward pass and checks that
the BN layers and dropouts run in exactly the spec's order, and counts the parameters.

Forward rules:
- preact unit: pre = ops[:pre](x) (BN-ReLU); shortcut = conv1x1(pre) where the shape changes,
  else x; return ops[pre:](pre) + shortcut;
- dense unit: return cat([x, ops(x)], channels);
- stem, transition: ops in order; head: BN-ReLU, global average pool, [dropout], classifier.

Initialisation as the reference implementations: convs He-normal on fan-out, BN gamma 1 and
beta 0 (or the config's gamma_init / beta_init), the classifier torch's default with bias 0.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from bnlab.core.schema.netspec import NetSpec, Op, Unit, build_spec

from .activations import ACTIVATIONS
from .batchnorm import get_norm_layer
from .dropout import get_dropout_layer


def _activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def _module(op: Op, cfg: Any) -> nn.Module:
    if op.kind == "conv":
        conv = nn.Conv2d(
            op.c_in, op.c_out, op.kernel, op.stride, padding=op.kernel // 2, bias=op.bias
        )
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        return conv
    if op.kind == "bn":
        b = cfg.batchnorm
        return get_norm_layer(
            b.impl,
            2,
            op.c_in,
            eps=b.eps,
            momentum=b.momentum,
            affine=b.affine,
            gamma_init=b.gamma_init,
            beta_init=b.beta_init,
        )
    if op.kind == "act":
        return _activation(cfg.activation)
    if op.kind == "drop":
        d = cfg.dropout
        return get_dropout_layer(d.kind, d.rate, d.mask)
    if op.kind == "pool":
        return nn.AvgPool2d(op.window)
    if op.kind == "linear":
        fc = nn.Linear(op.c_in, op.c_out)
        nn.init.zeros_(fc.bias)
        return fc
    raise ValueError(f"no module for op kind {op.kind!r}")


class _Unit(nn.Module):
    """A unit's ops as children named by their last path segment (`bn1`, `conv2`, ...)."""

    def __init__(self, unit: Unit, cfg: Any) -> None:
        super().__init__()
        for op in unit.ops:
            self.add_module(op.name.rsplit(".", 1)[1], _module(op, cfg))
        self.kind = unit.kind

    def run(self, x: torch.Tensor, mods: list[nn.Module]) -> torch.Tensor:
        for m in mods:
            x = m(x)
        return x


class PreActUnit(_Unit):
    def __init__(self, unit: Unit, cfg: Any) -> None:
        super().__init__(unit, cfg)
        if unit.shortcut is not None:
            self.shortcut = _module(unit.shortcut, cfg)
        mods = [getattr(self, op.name.rsplit(".", 1)[1]) for op in unit.ops]
        # plain lists (not registered twice): the forward's order, fixed at build time
        self._pre, self._branch = mods[: unit.pre], mods[unit.pre :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.run(x, self._pre)
        skip = self.shortcut(pre) if hasattr(self, "shortcut") else x
        return self.run(pre, self._branch) + skip


class DenseUnit(_Unit):
    def __init__(self, unit: Unit, cfg: Any) -> None:
        super().__init__(unit, cfg)
        self._mods = list(self.children())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.run(x, self._mods)], 1)


class SeqUnit(_Unit):
    """stem and transition: the ops in order."""

    def __init__(self, unit: Unit, cfg: Any) -> None:
        super().__init__(unit, cfg)
        self._mods = list(self.children())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x, self._mods)


class Head(_Unit):
    """BN-ReLU, global average pool, [dropout], classifier."""

    def __init__(self, unit: Unit, cfg: Any) -> None:
        super().__init__(unit, cfg)
        mods = list(self.children())
        self._pre, self._post = mods[:2], mods[2:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(self.run(x, self._pre).mean(dim=(2, 3)), self._post)


_UNITS = {
    "stem": SeqUnit,
    "transition": SeqUnit,
    "preact": PreActUnit,
    "dense": DenseUnit,
    "head": Head,
}


class ResidualNet(nn.Sequential):
    """stem, stage1 .. stage3 (units unit1..n, DenseNet transitions trans1, trans2 between
    them), head: module paths are the spec's op names."""

    def __init__(self, spec: NetSpec, cfg: Any) -> None:
        parts: OrderedDict[str, nn.Module] = OrderedDict()
        for unit in spec.units:
            module = _UNITS[unit.kind](unit, cfg)
            if unit.kind in ("preact", "dense"):
                stage = f"stage{unit.stage}"
                parts.setdefault(stage, nn.Sequential())
                parts[stage].add_module(f"unit{unit.unit}", module)
            else:
                parts[unit.name] = module
        super().__init__(parts)
        self.arch, self.spec = spec.arch, spec

    def probe_units(self) -> list[tuple[str, nn.Module, nn.Parameter | None]]:
        """(name, BN, weight) per BN layer in forward order, weight: the conv whose output
        the BN normalises (the newest one for a sum or concatenation), for grad_norm."""
        return [
            (
                b.name,
                self.get_submodule(b.name),
                self.get_submodule(b.weight).weight if b.weight else None,
            )
            for b in self.spec.bn_layers
        ]


def build_residual(model_cfg: Any, in_shape: tuple[int, ...], n_classes: int) -> ResidualNet:
    """The resnet / wrn / densenet of `model_cfg` (a validated ModelConfig)."""
    return ResidualNet(build_spec(model_cfg, in_shape, n_classes), model_cfg)
