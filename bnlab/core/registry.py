"""Every list of names bnlab knows, defined once (torch-free: the API, the CLI and the engine
all import it).

The schema's Literals, the parameter estimate, the engine's loaders and layers, ingest, the
API's key checks and the CLI read these tables; the dashboard reads the served JSON schema,
which the Literals come from. tests/bnlab/core/test_registry.py fails when a consumer
drifts (a loader, a dropout module or a column missing for a name listed here).

Adding a name is one entry here, then whatever the drift tests ask for:
- a dataset: a `DatasetSpec` in DATASETS, and its reader in bnlab/engine/data.py (LOADERS);
- a dropout kind: a `DropoutKind` in DROPOUT_KINDS with its noise variance, and its module in
  bnlab/engine/dropout.py;
- a model architecture: ARCHS, and its builder in bnlab/engine/model.py;
- a per-layer or run-level key: LAYER_KEYS / METRIC_KEYS, the column in backend/db/models.py
  (plus a migration), and the value in what the engine emits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

# ---------------------------------------------------------------------------- datasets

Shape = tuple[int, int, int]  # (C, H, W); vectors are (1, 1, D)


@dataclass(frozen=True)
class DatasetSpec:
    """A built-in dataset: what a model for it looks like, and where its samples come from."""

    name: str
    shape: Shape | None  # input (C, H, W); None: the upload's own shape
    classes: int | None  # None: the upload's own labels
    needs_path: bool  # dataset.path (a folder under BNLAB_DATASETS_DIR) is required
    source: str  # how it is read: bundled, generated, upload, or a folder format (idx, ...)
    about: str
    samples: int | None = None  # bundled sets: samples before any split (splits.py)
    own_test_split: bool = False  # the files hold a test split (else 20 % is held out)
    # folder sets: training samples of the standard release, for estimates only (`bnlab
    # describe`'s time); the files at dataset.path may hold fewer, checks never use this
    standard_train: int | None = None


DATASETS: dict[str, DatasetSpec] = {
    d.name: d
    for d in (
        DatasetSpec(
            "digits", (1, 8, 8), 10, False, "bundled", "UCI 8x8 handwritten digits (bundled)", 1797
        ),
        DatasetSpec("mnist1d", (1, 1, 40), 10, False, "generated", "MNIST-1D-style signals"),
        DatasetSpec("synthetic", (1, 8, 8), 10, False, "generated", "seeded Gaussian clusters"),
        DatasetSpec(
            "mnist",
            (1, 28, 28),
            10,
            True,
            "idx",
            "MNIST IDX files",
            own_test_split=True,
            standard_train=60000,
        ),
        DatasetSpec(
            "fashion_mnist",
            (1, 28, 28),
            10,
            True,
            "idx",
            "Fashion-MNIST IDX",
            own_test_split=True,
            standard_train=60000,
        ),
        DatasetSpec(
            "cifar10",
            (3, 32, 32),
            10,
            True,
            "cifar_pickle",
            "CIFAR-10 batches",
            own_test_split=True,
            standard_train=50000,
        ),
        DatasetSpec(  # dataset.label_mode "coarse": the 20 superclasses instead
            "cifar100",
            (3, 32, 32),
            100,
            True,
            "cifar100_pickle",
            "CIFAR-100 python files",
            own_test_split=True,
            standard_train=50000,
        ),
        DatasetSpec("upload", None, None, False, "upload", "an uploaded .npz or .csv"),
    )
}
DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)
COARSE_CLASSES = 20  # cifar100 with dataset.label_mode "coarse": its 20 superclasses
PATH_DATASETS: tuple[str, ...] = tuple(n for n, d in DATASETS.items() if d.needs_path)
# The four files of an "idx" folder (each raw or .gz, in the folder or its raw/ subfolder, as
# torchvision keeps them): read by the engine, and the training labels' header by the
# submission check for the split size.
IDX_FILES: dict[str, str] = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def dataset(name: str) -> DatasetSpec:
    """The spec of `name`, or ValueError naming the field (never a silent default)."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"dataset.name must be one of {list(DATASETS)}, got {name!r}") from None


# ---------------------------------------------------------------------------- dropout


@dataclass(frozen=True)
class DropoutKind:
    """A train-mode dropout y = x·g with multiplicative noise g, E[g] = 1 (docs/science.md §2).

    `noise_var(rate)` is Var[g]; E[g²] = 1 + Var[g] is what scales the second moment a
    following BN sees in training, so the predicted variance shift comes from here and
    nowhere else: a kind without an entry is an error, not Bernoulli's formula.
    """

    name: str
    noise_var: Callable[[float], float]
    rate_means: str  # what model.dropout.rate is for this kind
    # model.dropout.rate must lie in [0, rate_below): a drop probability below 1; Uout's
    # half-width beta may exceed 1 so that it can match bernoulli's noise variance r/(1-r)
    # (beta = sqrt(3r/(1-r)): sqrt(3) at r = 0.5; 8 matches r = 0.955)
    rate_below: float = 1.0


DROPOUT_KINDS: dict[str, DropoutKind] = {
    k.name: k
    for k in (
        # m ~ Bernoulli(q)/q, q = 1 - r: E[g²] = 1/q, Var = r/q
        DropoutKind("bernoulli", lambda r: r / (1.0 - r), "drop probability r"),
        # g ~ N(1, r/q): the same first two moments as inverted Bernoulli
        DropoutKind("gaussian", lambda r: r / (1.0 - r), "drop probability r (variance r/(1-r))"),
        # g = 1 + u, u ~ U(-b, b): Var = b²/3 (Li et al. 2019's Uout)
        DropoutKind("uniform", lambda b: b * b / 3.0, "half-width b of U(-b, b)", 8.0),
    )
}
DROPOUT_KIND_NAMES: tuple[str, ...] = tuple(DROPOUT_KINDS)
MASK_KINDS: tuple[str, ...] = ("per_sample", "per_batch")


def check_rate(kind: str, rate: float, field: str = "model.dropout.rate") -> float:
    """rate if it is allowed for `kind`, else ValueError naming the field and the bound."""
    spec = DROPOUT_KINDS.get(kind)
    if spec is not None and not 0.0 <= rate < spec.rate_below:
        raise ValueError(
            f"{field} must be in [0, {spec.rate_below:g}) for dropout kind {kind!r} "
            f"({spec.rate_means}), got {rate}"
        )
    return rate


def equal_noise_rate(rate: float, kind: str, to: str = "uniform") -> float:
    """The rate of kind `to` whose noise variance equals that of `kind` at `rate`
    (bernoulli r -> uniform beta = sqrt(3r/(1-r)); uniform beta -> bernoulli r = b²/(3+b²))."""
    var = noise_moments(kind, rate)[1]
    if to == "uniform":
        return (3.0 * var) ** 0.5
    if to in ("bernoulli", "gaussian"):
        return var / (1.0 + var)
    raise ValueError(f"model.dropout.kind must be one of {list(DROPOUT_KINDS)}, got {to!r}")


def noise_moments(kind: str, rate: float) -> tuple[float, float]:
    """(mean, variance) of `kind`'s multiplicative noise at `rate`; unknown kind: ValueError."""
    if kind not in DROPOUT_KINDS:
        raise ValueError(f"model.dropout.kind must be one of {list(DROPOUT_KINDS)}, got {kind!r}")
    return 1.0, DROPOUT_KINDS[kind].noise_var(float(rate))


# ---------------------------------------------------------------------------- models

ARCHS: tuple[str, ...] = ("mlp", "cnn", "resnet", "wrn", "densenet")
# Residual nets of the literature (bnlab/core/schema/netspec.py describes them, the engine's
# bnlab/engine/nets.py builds them); mlp and cnn are the block-list nets of model.py.
RESIDUAL_ARCHS: tuple[str, ...] = ("resnet", "wrn", "densenet")
# Where model.dropout_at puts dropout in a residual net (netspec.py says exactly where).
DROPOUT_PLACEMENTS: tuple[str, ...] = ("none", "before_bn", "before_conv", "after_conv", "head")
# The layers a hidden block may hold, in any order; each block has exactly one weight layer.
BLOCK_LAYERS: tuple[str, ...] = ("linear", "conv", "dropout", "batchnorm", "activation")
WEIGHT_LAYER: dict[str, str] = {"mlp": "linear", "cnn": "conv"}  # arch -> its block's weight
ACTIVATIONS: tuple[str, ...] = ("relu", "sigmoid", "tanh", "gaussian", "identity")
POOLINGS: tuple[str, ...] = ("max", "avg")
BN_IMPLS: tuple[str, ...] = ("torch", "matrix")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")

# ---------------------------------------------------------------------------- series keys


@dataclass(frozen=True)
class SeriesKey:
    name: str
    about: str
    from_bn: bool = False  # a BN statistic: None for a block without BN


# Per reported layer and probe step (bnlab/engine/probes.py emits one value of each, by name;
# backend/db/models.py LayerStat has one column of each). Per-layer values are channel means.
LAYER_KEY_SPECS: tuple[SeriesKey, ...] = (
    SeriesKey("train_mean", "batch mean in training, averaged over the probe window", from_bn=True),
    SeriesKey("train_var", "biased batch variance in training, window average", from_bn=True),
    SeriesKey("running_mean", "BN's running mean (what eval mode normalises with)", from_bn=True),
    SeriesKey("running_var", "BN's running variance", from_bn=True),
    SeriesKey("eval_mean", "mean of the BN input in eval mode on held-out data", from_bn=True),
    SeriesKey("eval_var", "variance of the BN input in eval mode on held-out data", from_bn=True),
    SeriesKey(
        "shift",
        "bnlab's per-channel statistic: mean over channels of max(r, 1/r), "
        "r = eval_var/running_var per channel; >= 1, reads above 1 from sampling noise alone",
        from_bn=True,
    ),
    SeriesKey("grad_norm", "L2 norm of the block's weight gradient at the probe step"),
    SeriesKey(
        "shift_li",
        "Li et al.'s layer statistic: max(a/b, b/a) of the channel-averaged eval_var (a) and "
        "running_var (b)",
        from_bn=True,
    ),
    SeriesKey(
        "shift_floor", "what `shift` reads with no shift at this probe's sample sizes", from_bn=True
    ),
    SeriesKey(
        "shift_li_floor",
        "what `shift_li` reads with no shift at this probe's sample sizes",
        from_bn=True,
    ),
    SeriesKey(
        "shift_log_q1", "lower quartile over channels of log(eval_var/running_var)", from_bn=True
    ),
    SeriesKey(
        "shift_log_median", "median over channels of log(eval_var/running_var)", from_bn=True
    ),
    SeriesKey(
        "shift_log_q3", "upper quartile over channels of log(eval_var/running_var)", from_bn=True
    ),
)
LAYER_KEYS: tuple[str, ...] = tuple(k.name for k in LAYER_KEY_SPECS)
BN_LAYER_KEYS: tuple[str, ...] = tuple(k.name for k in LAYER_KEY_SPECS if k.from_bn)

# Run-level, per probe step (bnlab/engine/train.py; backend/db/models.py RunMetric).
METRIC_KEY_SPECS: tuple[SeriesKey, ...] = (
    SeriesKey("epoch", "fractional epoch at the probe step"),
    SeriesKey("train_loss", "mean training loss over the probe window"),
    SeriesKey("train_acc", "training accuracy over the probe window"),
    SeriesKey("val_loss", "validation loss in eval mode"),
    SeriesKey("val_acc", "validation accuracy in eval mode"),
    SeriesKey(
        "val_acc_train_mode",
        "validation accuracy in real train mode (model.train(): dropout on, BN on each batch's "
        "statistics, batches of the training batch size); at one probe in "
        "probe.train_mode_every and at the last step, null at the others",
    ),
    SeriesKey("lr", "learning rate"),
    SeriesKey("grad_cos", "cosine of a mini-batch gradient to the mean gradient (grad_noise)"),
    SeriesKey(
        "wall_time", "when the probe ran, in UNIX seconds (the compare view's wall-time axis)"
    ),
)
METRIC_KEYS: tuple[str, ...] = tuple(k.name for k in METRIC_KEY_SPECS)

# ---------------------------------------------------------------------------- runs

ACTIVE_STATUSES: tuple[str, ...] = ("queued", "running")
# crashed: a script run (kind "script") whose client went silent; no worker can resume it.
TERMINAL_STATUSES: tuple[str, ...] = ("succeeded", "failed", "cancelled", "diverged", "crashed")
RUN_STATUSES: tuple[str, ...] = ACTIVE_STATUSES + TERMINAL_STATUSES
# Where a run comes from: "engine" (a config trained by a bnlab worker) or "script" (a user's own
# training loop streaming through the bnlab SDK; no worker ever holds it).
RUN_KINDS: tuple[str, ...] = ("engine", "script")
# The header a script run's writes carry its key in (the SDK sends it, the API checks it).
RUN_KEY_HEADER = "X-Bnlab-Run-Key"
# A script run's own metric names (`run.step(**metrics)`, `run.log({...})`) beside METRIC_KEYS:
# what the SDK checks before sending and the server before storing.
METRIC_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-/]{0,63}$"
# The binary body of layer points (bnlab/core/wire.py), beside JSON on the ingest endpoint.
COLUMNS_MEDIA_TYPE = "application/x-bnlab-columns"

# Literal types built from the tables (typing accepts a tuple of values at runtime), so the
# schema's Literals, and with them the served JSON schema, cannot drift from the registry.
DatasetName = Literal[DATASET_NAMES]  # type: ignore[valid-type]
DropoutKindName = Literal[DROPOUT_KIND_NAMES]  # type: ignore[valid-type]
MaskKind = Literal[MASK_KINDS]  # type: ignore[valid-type]
Arch = Literal[ARCHS]  # type: ignore[valid-type]
DropoutPlacement = Literal[DROPOUT_PLACEMENTS]  # type: ignore[valid-type]
BlockLayer = Literal[BLOCK_LAYERS]  # type: ignore[valid-type]
Activation = Literal[ACTIVATIONS]  # type: ignore[valid-type]
Pooling = Literal[POOLINGS]  # type: ignore[valid-type]
BnImpl = Literal[BN_IMPLS]  # type: ignore[valid-type]
Optimizer = Literal[OPTIMIZERS]  # type: ignore[valid-type]
RunStatus = Literal[RUN_STATUSES]  # type: ignore[valid-type]
RunKind = Literal[RUN_KINDS]  # type: ignore[valid-type]
