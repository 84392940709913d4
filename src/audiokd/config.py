"""Typed, validated params sections: one frozen dataclass per section of ``params.yaml``.

Every field may carry validation metadata (``range``, ``choices``, ``length``). Loading rejects
unknown keys, wrong types and out-of-range values with a :class:`ConfigError` whose message is a
single line naming the dotted key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

_MODEL_NAME = re.compile(r"[A-Za-z0-9._-]*")
_MEMBER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # a DVC stage key and a folder name


class ConfigError(ValueError):
    """A params.yaml problem; its message is one line that names the key."""


def _f(
    default: Any,
    *,
    range: tuple[float | None, float | None] | None = None,  # noqa: A002
    choices: tuple[Any, ...] | None = None,
    length: int | None = None,
    min_len: int | None = None,
    open_low: bool = False,
) -> Any:
    """A dataclass field with validation metadata."""
    meta = {"range": range, "choices": choices, "length": length, "min_len": min_len, "open_low": open_low}
    if isinstance(default, (list, tuple)):
        value = tuple(default)
        return field(default=value, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class SplitConfig:
    """Fractions of clips per split when the manifest has no ``split`` column."""

    train: float = _f(0.7, range=(0.0, 1.0), open_low=True)
    val: float = _f(0.15, range=(0.0, 1.0), open_low=True)
    test: float = _f(0.15, range=(0.0, 1.0), open_low=True)


@dataclass(frozen=True)
class SyntheticConfig:
    """The embedded synthetic set, written by the synthesize stage to ``data/embedded``."""

    clips: int = _f(1000, range=(30, 100_000))
    train_clips: int = _f(0, range=(0, 100_000))
    val_clips: int = _f(0, range=(0, 100_000))
    unlabeled_clips: int = _f(0, range=(0, 1_000_000))
    seed: int = _f(42, range=(0, 2**31 - 1))
    sample_rate: int = _f(22050, range=(4000, 96000))
    min_duration_s: float = _f(1.5, range=(0.1, 60.0))
    max_duration_s: float = _f(3.0, range=(0.1, 60.0))
    noise: float = _f(0.3, range=(0.0, 1.0))


@dataclass(frozen=True)
class DataConfig:
    """Where clips come from, what to predict and how to split."""

    manifest: str = "data/embedded/manifest.csv"
    unlabeled_manifest: str = ""
    task: str = _f("regression", choices=("regression", "classification"))
    targets: tuple[str, ...] = _f(("arousal", "valence"), min_len=1)
    label_column: str = "label"
    labels: tuple[str, ...] = ()
    on_bad_clip: str = _f("error", choices=("error", "skip"))
    min_clips_per_split: int = _f(2, range=(1, 100_000))
    seed: int = _f(42, range=(0, 2**31 - 1))
    split: SplitConfig = field(default_factory=SplitConfig)


@dataclass(frozen=True)
class AudioConfig:
    """Decoding and log-mel front end."""

    sample_rate: int = _f(16000, range=(4000, 96000))
    duration_s: float = _f(2.0, range=(0.1, 60.0))
    n_fft: int = _f(512, range=(16, 16384))
    hop_length: int = _f(250, range=(1, 16384))
    n_mels: int = _f(64, range=(8, 512))
    random_crop: bool = False
    crop_pool_s: float = _f(4.0, range=(0.1, 600.0))


@dataclass(frozen=True)
class AugmentConfig:
    """Train-time augmentation for the teacher and, with ``students``, the students too.

    ``teacher_view`` says what the teacher sees when a student's batch is augmented: ``augmented`` runs it
    live on the same augmented batch (consistent teaching, Beyer et al. 2022, arXiv:2106.05237; a teacher
    forward per step); ``clean`` keeps its cached outputs on the clean clips as the soft targets of the
    augmented views (Noisy Student, Xie et al. 2020, arXiv:1911.04252; one student forward per step), mixed
    like the labels under mixup; ``stored`` gives each training clip ``views`` fixed masked views that the
    teacher scores once before distill trains, and shows the student those views with those outputs
    (consistent like ``augmented``, one student forward a step like ``clean``;
    :class:`audiokd.augment.ViewBank`).
    """

    freq_mask: int = _f(0, range=(0, 512))
    time_mask: int = _f(0, range=(0, 10_000))
    num_masks: int = _f(2, range=(0, 16))
    mixup_alpha: float = _f(0.0, range=(0.0, 10.0))
    students: bool = True
    teacher_view: str = _f("augmented", choices=("augmented", "clean", "stored"))
    views: int = _f(8, range=(1, 1024))

    def for_students(self) -> AugmentConfig:
        """What the students' batches get: this section, or no masks and no mixup without ``students``."""
        return self if self.students else dataclasses.replace(self, freq_mask=0, time_mask=0, mixup_alpha=0.0)

    @property
    def active(self) -> bool:
        """Whether any augmentation changes the input."""
        return (self.num_masks > 0 and (self.freq_mask > 0 or self.time_mask > 0)) or self.mixup_alpha > 0


TEACHER_ARCHS = ("vit", "ast", "resnet", "convnext", "mobilevit")


@dataclass(frozen=True)
class TeacherConfig:
    """Teacher architecture (``arch`` picks the family; ``cnn_*``, ``ast_*``, ``mobilevit_*`` keys are per
    family), training.

    ``pretrained``: a local folder written by ``save_pretrained`` or a Hugging Face hub id; the architecture
    then comes from the checkpoint (its family must equal ``arch``) and only the head is new.
    """

    arch: str = _f("vit", choices=TEACHER_ARCHS)
    hidden_size: int = _f(384, range=(16, 4096))
    num_layers: int = _f(8, range=(1, 48))
    num_heads: int = _f(6, range=(1, 64))
    intermediate_size: int = _f(1536, range=(16, 16384))
    patch_size: int = _f(16, range=(2, 64))
    ast_stride: int = _f(10, range=(1, 64))
    cnn_depths: tuple[int, ...] = _f((2, 2, 2, 2), range=(1, 64), min_len=1)
    cnn_hidden_sizes: tuple[int, ...] = _f((64, 128, 256, 512), range=(4, 4096), min_len=1)
    mobilevit_hidden_sizes: tuple[int, ...] = _f((96, 120, 144), range=(8, 4096), length=3)
    mobilevit_neck_hidden_sizes: tuple[int, ...] = _f(
        (16, 32, 48, 64, 80, 96, 384), range=(4, 8192), length=7
    )
    dropout: float = _f(0.0, range=(0.0, 0.9))
    pretrained: str = ""
    epochs: int = _f(30, range=(1, 10_000))
    min_steps: int = _f(0, range=(0, 10_000_000))  # epochs make enough passes over train for this many steps
    batch_size: int = _f(32, range=(1, 65536))
    lr: float = _f(3e-4, range=(0.0, 10.0), open_low=True)
    weight_decay: float = _f(0.05, range=(0.0, 10.0))
    grad_clip: float = _f(1.0, range=(0.0, 1e6))  # max global gradient norm; 0 = no clipping
    ema_decay: float = _f(0.0, range=(0.0, 0.99999))  # EMA of the weights is validated and kept; 0 = off
    outputs: str = ""  # a CSV of teacher outputs per clip from any model: no teacher trains
    folds: int = _f(0, range=(0, 100))  # >= 2: out-of-fold outputs on the train split from k fold teachers


@dataclass(frozen=True)
class EnsembleConfig:
    """Teacher ensemble: member name -> overrides of the teacher section and ``seed``; empty = one teacher.

    ``enabled: false`` keeps the members in params but trains one teacher (or reads ``teacher.outputs``):
    their stages then only write a marker, as the baseline does when it is off.
    """

    members: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True

    @property
    def active_members(self) -> dict[str, Any]:
        """The members that train: all of them, or none with ``enabled: false``."""
        return self.members if self.enabled else {}


@dataclass(frozen=True)
class StudentConfig:
    """MobileViT student architecture (trained by the distill stage)."""

    arch: str = _f("mobilevit", choices=("mobilevit", "mobilevitv2", "mobilenet_v2", "vit"))
    hidden_sizes: tuple[int, ...] = _f((64, 80, 96), length=3)
    neck_hidden_sizes: tuple[int, ...] = _f((16, 16, 24, 48, 64, 80, 320), length=7)
    expand_ratio: float = _f(2.0, range=(1.0, 8.0))
    num_heads: int = _f(4, range=(1, 16))
    dropout: float = _f(0.1, range=(0.0, 0.9))
    width_multiplier: float = _f(0.5, range=(0.125, 4.0))
    depth_multiplier: float = _f(0.5, range=(0.125, 4.0))
    vit_hidden_size: int = _f(128, range=(16, 4096))
    vit_layers: int = _f(5, range=(1, 48))
    vit_intermediate_size: int = _f(256, range=(16, 16384))
    vit_patch_size: int = _f(16, range=(2, 64))


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation: total = alpha*hard + (1-alpha)*soft + beta*feature + gamma*attention."""

    alpha: float = _f(0.1, range=(0.0, 1.0))
    beta: float = _f(0.0, range=(0.0, 1000.0))
    gamma: float = _f(0.0, range=(0.0, 1000.0))
    temperature: float = _f(1.0, range=(0.0, 100.0), open_low=True)
    soft_loss: str = _f("mse", choices=("mse", "kl", "ccc", "softmax_kl", "auto"))
    feature_loss: str = _f("fitnet", choices=("fitnet",))
    attention_loss: str = _f("activation", choices=("activation", "attention_map"))
    attention_p: float = _f(2.0, range=(0.5, 8.0))
    teacher_layers: int | tuple[int, ...] = _f(3, range=(1, 1000), min_len=1)
    epochs: int = _f(30, range=(1, 10_000))
    min_steps: int = _f(0, range=(0, 10_000_000))  # epochs make enough passes over train for this many steps
    batch_size: int = _f(32, range=(1, 65536))
    lr: float = _f(2e-3, range=(0.0, 10.0), open_low=True)
    weight_decay: float = _f(0.01, range=(0.0, 10.0))
    grad_clip: float = _f(1.0, range=(0.0, 1e6))  # max global gradient norm; 0 = no clipping
    ema_decay: float = _f(0.0, range=(0.0, 0.99999))  # EMA of the weights is validated and kept; 0 = off
    unlabeled_weight: float = _f(1.0, range=(0.0, 100.0))


@dataclass(frozen=True)
class EvaluateConfig:
    """Quality, size and latency measurement of both models."""

    latency_repeats: int = _f(30, range=(1, 10_000))
    latency_warmup: int = _f(5, range=(0, 1000))
    latency_threads: int = _f(1, range=(1, 256))
    bootstrap_resamples: int = _f(2000, range=(100, 1_000_000))
    bootstrap_seed: int = _f(0, range=(0, 2**31 - 1))


@dataclass(frozen=True)
class ExportConfig:
    """The deployable student: the int8 ONNX file ships only if it loses at most ``int8_max_drop``."""

    int8_max_drop: float = _f(0.01, range=(0.0, 1.0))  # CCC mean (regression) or accuracy (classification)


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow experiment and registered model; the store comes from MLFLOW_TRACKING_URI or mlruns/."""

    experiment: str = "audiokd"
    registered_model: str = "audiokd-student"


@dataclass(frozen=True)
class BaselineConfig:
    """The no-KD baseline: the same student and budget as distill, trained on the labels alone."""

    enabled: bool = True


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how training runs."""

    device: str = _f("auto", choices=("auto", "cpu", "cuda"))
    num_threads: int = _f(0, range=(0, 1024))
    seed: int = _f(0, range=(0, 2**31 - 1))
    nproc_per_node: int = _f(1, range=(1, 1024))
    precision: int | str = _f(32, choices=(32, "bf16", 16))
    num_workers: int = _f(0, range=(0, 64))
    compile: bool = False


SECTIONS: dict[str, type] = {
    "synthetic": SyntheticConfig,
    "data": DataConfig,
    "audio": AudioConfig,
    "augment": AugmentConfig,
    "teacher": TeacherConfig,
    "ensemble": EnsembleConfig,
    "student": StudentConfig,
    "distill": DistillConfig,
    "evaluate": EvaluateConfig,
    "export": ExportConfig,
    "tracking": TrackingConfig,
    "runtime": RuntimeConfig,
    "baseline": BaselineConfig,
}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotated type ``tp``; ints are accepted where floats are."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for alt in typing.get_args(tp):
            try:
                return _coerce(value, alt, key)
            except ConfigError as e:
                errors.append(str(e).split(": ", 1)[-1])
        raise ConfigError(f"{key}: {' or '.join(errors)}")
    if origin in (tuple, list):
        (item_tp, *_rest) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list of {_type_name(item_tp)}, got {value!r}")
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): ({} if v is None else v) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover - programming error


def _check(value: Any, meta: typing.Mapping[str, Any], key: str) -> None:
    rng = meta.get("range")
    if rng is not None:
        lo, hi = rng
        items = value if isinstance(value, tuple) else (value,)
        low_bracket = "(" if meta.get("open_low") else "["
        for v in items:
            too_low = lo is not None and (v <= lo if meta.get("open_low") else v < lo)
            if too_low or (hi is not None and v > hi):
                raise ConfigError(f"{key} = {v!r} is out of range: allowed {low_bracket}{lo}, {hi}]")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key} = {value!r} is not allowed: choose one of {', '.join(map(str, choices))}")
    if meta.get("length") is not None and len(value) != meta["length"]:
        raise ConfigError(f"{key}: expected a list of exactly {meta['length']} values, got {len(value)}")
    if meta.get("min_len") is not None and isinstance(value, tuple) and len(value) < meta["min_len"]:
        raise ConfigError(f"{key}: expected at least {meta['min_len']} value(s), got {len(value)}")


def build_section(cls: type[T], raw: Any, prefix: str) -> T:
    """Build dataclass ``cls`` from the mapping ``raw``; ``prefix`` is the dotted key for messages."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in raw:
        if k not in names:
            raise ConfigError(f"{prefix}.{k}: unknown key; known keys: {', '.join(sorted(names))}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        key = f"{prefix}.{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = build_section(tp, raw[f.name], key)
            continue
        value = _coerce(raw[f.name], tp, key)
        _check(value, f.metadata, key)
        kwargs[f.name] = value
    obj = cls(**kwargs)
    _cross_check(obj, prefix)
    return obj


def _cross_check(obj: Any, prefix: str) -> None:
    """Constraints that span several keys of one section."""
    if isinstance(obj, SplitConfig):
        total = obj.train + obj.val + obj.test
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"{prefix}: train + val + test must sum to 1, got {total:g}")
    if isinstance(obj, SyntheticConfig) and obj.min_duration_s > obj.max_duration_s:
        raise ConfigError(f"{prefix}.min_duration_s must not exceed {prefix}.max_duration_s")
    if isinstance(obj, SyntheticConfig) and bool(obj.train_clips) != bool(obj.val_clips):
        raise ConfigError(f"{prefix}.train_clips and {prefix}.val_clips: set both (> 0) or neither (0)")
    if isinstance(obj, SyntheticConfig) and obj.train_clips and obj.train_clips + obj.val_clips >= obj.clips:
        raise ConfigError(
            f"{prefix}.train_clips + {prefix}.val_clips = {obj.train_clips + obj.val_clips} leaves no test "
            f"clips of {prefix}.clips = {obj.clips}"
        )
    if isinstance(obj, TeacherConfig):
        _check_teacher(obj, prefix)
    if isinstance(obj, TeacherConfig) and obj.folds >= 2 and obj.outputs:
        raise ConfigError(
            f"{prefix}.folds = {obj.folds} trains fold teachers but {prefix}.outputs gives ready outputs: "
            "set one of them"
        )
    if isinstance(obj, EnsembleConfig):
        _check_members(obj, prefix)
    if isinstance(obj, StudentConfig) and any(h % obj.num_heads for h in obj.hidden_sizes):
        raise ConfigError(f"{prefix}.hidden_sizes must all be divisible by {prefix}.num_heads")
    if isinstance(obj, StudentConfig) and obj.vit_hidden_size % obj.num_heads:
        raise ConfigError(f"{prefix}.vit_hidden_size must be divisible by {prefix}.num_heads")
    if isinstance(obj, TrackingConfig) and not _MODEL_NAME.fullmatch(obj.registered_model):
        raise ConfigError(
            f"{prefix}.registered_model = {obj.registered_model!r}: use letters, digits, '.', '_', '-' "
            "(empty = do not register)"
        )
    if isinstance(obj, DataConfig) and len(set(obj.targets)) != len(obj.targets):
        raise ConfigError(f"{prefix}.targets: names must be unique, got {list(obj.targets)}")
    if isinstance(obj, DataConfig) and len(set(obj.labels)) != len(obj.labels):
        raise ConfigError(f"{prefix}.labels: names must be unique, got {list(obj.labels)}")
    if isinstance(obj, DataConfig) and not obj.manifest:
        raise ConfigError(
            f"{prefix}.manifest: give a CSV path (the embedded set is data/embedded/manifest.csv)"
        )
    if isinstance(obj, DataConfig) and Path(obj.unlabeled_manifest).is_absolute():
        raise ConfigError(
            f"{prefix}.unlabeled_manifest = {obj.unlabeled_manifest!r}: give it relative to the folder of "
            f"{prefix}.manifest (e.g. ../pool/unlabeled.csv), so that DVC can watch it from there"
        )
    if isinstance(obj, AugmentConfig) and obj.teacher_view == "stored" and obj.students and obj.active:
        _check_stored_views(obj, prefix)
    if isinstance(obj, AudioConfig) and obj.random_crop and obj.crop_pool_s < obj.duration_s:
        raise ConfigError(f"{prefix}.crop_pool_s must be at least {prefix}.duration_s when random_crop is on")


def _check_stored_views(obj: AugmentConfig, prefix: str) -> None:
    """Stored views are masked views: with mixup alone there would be nothing to store."""
    if obj.num_masks == 0 or not (obj.freq_mask or obj.time_mask):
        raise ConfigError(
            f"{prefix}.teacher_view = stored keeps masked views of each clip, but no masks are on: set "
            f"{prefix}.freq_mask or {prefix}.time_mask (and {prefix}.num_masks > 0), or use clean"
        )


def _check_teacher(obj: TeacherConfig, prefix: str) -> None:
    """Keys of the teacher section that constrain each other (the stride only where ``arch`` uses it)."""
    if obj.hidden_size % obj.num_heads:
        raise ConfigError(
            f"{prefix}.hidden_size = {obj.hidden_size} must be divisible by "
            f"{prefix}.num_heads = {obj.num_heads}"
        )
    if obj.arch == "ast" and obj.ast_stride > obj.patch_size:
        raise ConfigError(
            f"{prefix}.ast_stride = {obj.ast_stride} must not exceed {prefix}.patch_size = {obj.patch_size} "
            "(a larger stride skips input between patches)"
        )
    if obj.arch == "mobilevit" and any(h % obj.num_heads for h in obj.mobilevit_hidden_sizes):
        raise ConfigError(
            f"{prefix}.mobilevit_hidden_sizes = {list(obj.mobilevit_hidden_sizes)} must all be divisible by "
            f"{prefix}.num_heads = {obj.num_heads}"
        )
    if len(obj.cnn_depths) != len(obj.cnn_hidden_sizes):
        raise ConfigError(
            f"{prefix}.cnn_depths ({len(obj.cnn_depths)} stages) and {prefix}.cnn_hidden_sizes "
            f"({len(obj.cnn_hidden_sizes)} widths) must have the same length"
        )


def _check_members(obj: EnsembleConfig, prefix: str) -> None:
    """Each member: a valid name and a mapping of teacher keys (each validated alone) and ``seed`` or
    ``seed_offset``."""
    hints = typing.get_type_hints(TeacherConfig)
    fields = {f.name: f for f in dataclasses.fields(TeacherConfig) if f.name != "outputs"}
    seen: dict[str, str] = {}
    for name, over in obj.members.items():
        key = f"{prefix}.members.{name}"
        if not _MEMBER_NAME.fullmatch(name):
            raise ConfigError(
                f"{key}: a member name uses letters, digits, '_' and '-' (it names a DVC stage)"
            )
        if not isinstance(over, dict):
            raise ConfigError(f"{key}: expected a mapping of teacher keys (and seed), got {over!r}")
        for k, v in over.items():
            if k in ("seed", "seed_offset"):
                _check(_coerce(v, int, f"{key}.{k}"), {"range": (0, 2**31 - 1)}, f"{key}.{k}")
            elif k == "outputs":
                raise ConfigError(f"{key}.outputs: members train; use teacher.outputs for a file of outputs")
            elif k in fields:
                _check(_coerce(v, hints[k], f"{key}.{k}"), fields[k].metadata, f"{key}.{k}")
            else:
                known = ", ".join(sorted([*fields, "seed", "seed_offset"]))
                raise ConfigError(f"{key}.{k}: unknown key; known keys: {known}")
        if "seed" in over and "seed_offset" in over:
            raise ConfigError(f"{key}: give seed (absolute) or seed_offset (added to runtime.seed), not both")
        same = seen.setdefault(repr(sorted(over.items())), name)
        if same != name:
            raise ConfigError(f"{key}: the same settings as {prefix}.members.{same}; give it another seed")


def read_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read the raw params file; a YAML error becomes one line naming the file."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{p}: params file not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of sections at the top level")
    return raw


def load_section(raw: dict[str, Any], name: str) -> Any:
    """Validate and return one section of the raw params."""
    for top in raw:
        if top not in SECTIONS:
            raise ConfigError(f"{top}: unknown params section; known: {', '.join(SECTIONS)}")
    return build_section(SECTIONS[name], raw.get(name), name)


def load_params(raw: dict[str, Any]) -> dict[str, Any]:
    """Every section of the raw params validated, keyed by name (every class in :data:`SECTIONS`).

    Stage entries call this rather than validating only the sections they read, so that a bad key anywhere
    (``distill.temprature``) stops the first stage that runs, not the one that reads it minutes later.
    """
    sections = {name: load_section(raw, name) for name in SECTIONS}
    check_teacher_source(sections["teacher"], sections["ensemble"])
    return sections


def check_teacher_source(teacher: TeacherConfig, ensemble: EnsembleConfig) -> None:
    """Refuse two teacher sources at once: a file of outputs and members that train."""
    if teacher.outputs and ensemble.active_members:
        raise ConfigError(
            "teacher.outputs and ensemble.members are both set: the student learns from one teacher source; "
            'set teacher.outputs: "" or ensemble.enabled: false'
        )


def section_to_dict(obj: Any) -> dict[str, Any]:
    """A section as plain Python data (tuples become lists), e.g. for logging."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v

    return conv(obj)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out
