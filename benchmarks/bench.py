"""`make bench`: speed figures as ratios of two things measured in this process, on the same data.

Each timing is the median of several repeats after warm-up. Writes ``reports/bench.json`` and prints a table.
Model latencies are measured with denormal floats flushed to zero, as deployments run (a randomly initialised
MobileViT's activations decay into denormals, which some CPUs process ~100x slower: README, student latency);
``latency_ms_batch1_denormals`` per student is the same forward without flushing.
Ratios (goal in brackets):
- distill_step_ratio_cached: distill step with the teacher cache / plain student step   [<= 1.05]
- distill_step_ratio_live: distill step with the teacher run live / plain student step
- preprocess_speedup_vs_librosa: our clips/s / per-clip librosa load + melspectrogram + power_to_db  [>= 2]
- student_speedup_batch1 (1 thread), student_speedup_batch32 (all cores): teacher / student latency [>= 3]
  (the teacher the pipeline trains: with ensemble.members, all members in turn, as evaluate times it)
- onnx_speedup_batch1: student eager latency / onnxruntime latency, 1 thread                       [>= 1.5]
- int8_speedup_batch1: fp32 / int8 ONNX Runtime latency of the student, 1 thread                   [>= 1.5]
- int8_size_ratio: int8 / fp32 ONNX file size                                                    [<= 0.3]
- repro_noop_s: wall seconds of a `dvc repro` with nothing to do                                   [<= 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from audiokd.config import SECTIONS, StudentConfig, load_section, read_params
from audiokd.data.features import compute_features
from audiokd.distill.objective import build_objective
from audiokd.models import LogitsOnly
from audiokd.models.student import build_student
from audiokd.models.teacher import build_teacher
from audiokd.tasks import Task
from audiokd.teaching.ensemble import member_settings
from audiokd.teaching.live import MeanTeacher

ROOT = Path(__file__).resolve().parents[1]


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _cfg(name: str):  # noqa: ANN202 - a params section
    return load_section(read_params(ROOT / "params.yaml"), name)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def step_ratios(repeats: int, dev: torch.device, precision: str = "32") -> dict[str, float]:
    """Distill step time (cached / live teacher) over a plain student step, same batch and model, on ``dev``
    (autocast to bf16 with ``precision="bf16"``)."""
    data, audio, teacher_cfg, student_cfg, distill_cfg = (
        _cfg(n) for n in ("data", "audio", "teacher", "student", "distill")
    )
    frames = int(round(audio.duration_s * audio.sample_rate)) // audio.hop_length
    shape = (1, audio.n_mels, frames)
    task = Task("regression", tuple(data.targets))
    torch.manual_seed(0)
    b = distill_cfg.batch_size
    x, y, idx = torch.randn(b, *shape).to(dev), torch.randn(b, task.num_outputs).to(dev), torch.arange(b)
    student = build_student(student_cfg, shape, task).to(dev)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with tempfile.TemporaryDirectory() as tmp:
        build_teacher(teacher_cfg, shape, task).save_pretrained(tmp)
        cached = torch.randn(b, task.num_outputs)
        plain = build_objective(distill_cfg.__class__(alpha=1.0), student, Path(tmp), None, x[:2], dev, task)
        with_cache = build_objective(distill_cfg, student, Path(tmp), cached, x[:2], dev, task)
        live = build_objective(distill_cfg, student, Path(tmp), None, x[:2], dev, task, force_live=True)

        def step(plan) -> Callable[[], None]:  # noqa: ANN001 - a DistillObjective
            def run() -> None:
                opt.zero_grad(set_to_none=True)
                with autocast:
                    total = plan.objective(student, x, y, idx)["total"]
                total.backward()
                opt.step()
                _sync(dev)

            return run

        student.train()
        t_plain = median_time(step(plain), repeats)
        t_cached = median_time(step(with_cache), repeats)
        t_live = median_time(step(live), repeats)
    return {
        "distill_step_ratio_cached": t_cached / t_plain,
        "distill_step_ratio_live": t_live / t_plain,
        "plain_student_step_ms": t_plain * 1000,
        "cached_distill_step_ms": t_cached * 1000,
        "live_distill_step_ms": t_live * 1000,
        "batch_size": b,
        "step_device": str(dev),
        "step_precision": precision,
    }


def preprocess_speed(clips: int, repeats: int) -> dict[str, float]:
    """Our front end (NumPy, chunks of clips over every core) vs per-clip librosa, clips per second on the
    same files."""
    import librosa
    import soundfile as sf

    from audiokd.data.synthetic import synth_clip

    audio = _cfg("audio")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(clips):
            p = Path(tmp) / f"c{i}.wav"
            sf.write(p, synth_clip(rng, 0.0, 0.0, 22050, 2.5, 0.3), 22050)
            paths.append(str(p))
        ours = median_time(lambda: compute_features(paths, audio, desc=""), repeats, warmup=1)

        def baseline() -> None:
            for p in paths:
                wave, _ = librosa.load(p, sr=audio.sample_rate, mono=True, duration=audio.duration_s)
                mel = librosa.feature.melspectrogram(
                    y=wave,
                    sr=audio.sample_rate,
                    n_fft=audio.n_fft,
                    hop_length=audio.hop_length,
                    n_mels=audio.n_mels,
                )
                librosa.power_to_db(mel)

        theirs = median_time(baseline, repeats, warmup=1)
    return {
        "preprocess_speedup_vs_librosa": theirs / ours,
        "ours_clips_per_s": clips / ours,
        "librosa_clips_per_s": clips / theirs,
        "clips": clips,
    }


def latency_ms(
    model: torch.nn.Module, x: torch.Tensor, threads: int, repeats: int, flush_denormal: bool = True
) -> float:
    """Median eager forward time in ms with ``threads`` CPU threads (denormals flushed to zero by default)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.set_flush_denormal(flush_denormal)
    try:
        with torch.no_grad():
            return median_time(lambda: model(x), repeats, warmup=3) * 1000
    finally:
        torch.set_num_threads(old)
        torch.set_flush_denormal(False)


def pipeline_teacher(shape: tuple[int, ...], task: Task) -> torch.nn.Module:
    """The teacher params.yaml trains, untrained: one model, or ``ensemble.members`` run one after another."""
    teacher_cfg, ensemble, runtime = _cfg("teacher"), _cfg("ensemble"), _cfg("runtime")
    if not ensemble.active_members:
        return build_teacher(teacher_cfg, shape, task)
    configs = [member_settings(teacher_cfg, ensemble, runtime, name)[0] for name in ensemble.active_members]
    return MeanTeacher([build_teacher(c, shape, task) for c in configs], task)


def model_speed(repeats: int) -> dict[str, object]:
    """Teacher/student latency ratios per student architecture, and ONNX Runtime vs eager for the default."""
    audio, student_cfg = _cfg("audio"), _cfg("student")
    frames = int(round(audio.duration_s * audio.sample_rate)) // audio.hop_length
    shape = (1, audio.n_mels, frames)
    task = Task("regression", ("a", "b"))
    teacher = LogitsOnly(pipeline_teacher(shape, task)).eval()
    x1, x32 = torch.randn(1, *shape), torch.randn(32, *shape)
    cores = os.cpu_count() or 1
    t1, t32 = latency_ms(teacher, x1, 1, repeats), latency_ms(teacher, x32, cores, max(3, repeats // 4))
    students: dict[str, dict[str, float]] = {}
    for arch in StudentConfig.__dataclass_fields__["arch"].metadata["choices"]:
        cfg = StudentConfig(**{**student_cfg.__dict__, "arch": arch})
        model = LogitsOnly(build_student(cfg, shape, task)).eval()
        s1, s32 = latency_ms(model, x1, 1, repeats), latency_ms(model, x32, cores, max(3, repeats // 4))
        students[arch] = {
            "params": sum(p.numel() for p in model.parameters()),
            "latency_ms_batch1": s1,
            "latency_ms_batch1_denormals": latency_ms(model, x1, 1, repeats, flush_denormal=False),
            "latency_ms_batch32": s32,
            "student_speedup_batch1": t1 / s1,
            "student_speedup_batch32": t32 / s32,
        }
    default = students[student_cfg.arch]
    out: dict[str, object] = {
        "student_speedup_batch1": default["student_speedup_batch1"],
        "student_speedup_batch32": default["student_speedup_batch32"],
        "teacher_latency_ms_batch1": t1,
        "teacher_latency_ms_batch32": t32,
        "students": students,
    }
    out.update(onnx_speed(LogitsOnly(build_student(student_cfg, shape, task)).eval(), x1, repeats))
    return out


def onnx_speed(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Student eager vs ONNX Runtime latency at batch 1 on one thread, and the int8 ONNX file vs fp32."""
    import onnxruntime as ort

    from audiokd.export import export_onnx, quantize_int8, session_options

    def ort_ms(path: Path) -> float:
        sess = ort.InferenceSession(str(path), session_options(1), providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x.numpy()}
        return median_time(lambda: sess.run(None, feed), repeats, warmup=3) * 1000

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, x, Path(tmp) / "model.onnx")
        int8 = Path(tmp) / "model.int8.onnx"
        calibration = torch.randn(64, *x.shape[1:])  # random inputs: speed and size do not depend on them
        method = quantize_int8(path, int8, calibration, x.shape[-1])["method"]
        t_ort, t_int8 = ort_ms(path), ort_ms(int8)
        size_ratio = int8.stat().st_size / path.stat().st_size
    t_eager = latency_ms(model, x, 1, repeats)
    return {
        "onnx_speedup_batch1": t_eager / t_ort,
        "student_eager_ms_batch1": t_eager,
        "student_onnx_ms_batch1": t_ort,
        "int8_speedup_batch1": t_ort / t_int8,
        "int8_size_ratio": size_ratio,
        "student_int8_ms_batch1": t_int8,
        "int8_method": method,
    }


def gpu_speed(repeats: int, dev: torch.device) -> dict[str, object]:
    """On a GPU: teacher / student latency at batch 1 and 32, fp32 and bf16 autocast, per architecture."""
    audio, student_cfg = _cfg("audio"), _cfg("student")
    frames = int(round(audio.duration_s * audio.sample_rate)) // audio.hop_length
    shape = (1, audio.n_mels, frames)
    task = Task("regression", ("a", "b"))

    def latency(model: torch.nn.Module, batch: int, bf16: bool) -> float:
        x = torch.randn(batch, *shape, device=dev)

        def run() -> None:
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                model(x)
            _sync(dev)

        return median_time(run, repeats, warmup=5) * 1000

    models = {"teacher": LogitsOnly(pipeline_teacher(shape, task)).eval().to(dev)}
    for arch in StudentConfig.__dataclass_fields__["arch"].metadata["choices"]:
        cfg = StudentConfig(**{**student_cfg.__dict__, "arch": arch})
        models[arch] = LogitsOnly(build_student(cfg, shape, task)).eval().to(dev)
    out: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        out[name] = {
            f"ms_batch{b}_{p}": latency(model, b, p == "bf16") for b in (1, 32) for p in ("fp32", "bf16")
        }
    for name in list(out)[1:]:
        out[name].update(
            {
                f"speedup_{k[3:]}": out["teacher"][k] / v
                for k, v in list(out[name].items())
                if k.startswith("ms_")
            }
        )
    return {"gpu": {"name": torch.cuda.get_device_name(dev), "models": out}}


def repro_noop(repeats: int) -> dict[str, float]:
    """Seconds of a `dvc repro` with nothing changed, on a copy of the repo with the tiny test params."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    dvc = str(Path(sys.executable).parent / "dvc")
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        files = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        for f in files.split():
            output = f.startswith(("data/", "models/", "reports/")) and not f.endswith(".gitignore")
            if (ROOT / f).is_file() and not output and f != "dvc.lock":
                (repo / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / f, repo / f)
        shutil.copy(ROOT / "tests" / "e2e" / "params_tiny.yaml", repo / "params.yaml")
        for cmd in (
            ["git", "init", "-q"],
            ["git", "add", "-A"],
            ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "bench"],
            [dvc, "repro"],
        ):
            subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
        seconds = median_time(
            lambda: subprocess.run([dvc, "repro"], cwd=repo, env=env, check=True, capture_output=True),
            repeats,
            warmup=1,
        )
    return {"repro_noop_s": seconds}


def main() -> int:
    """Run every benchmark and write the JSON report."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "reports" / "bench.json"))
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--clips", type=int, default=48)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device of the step figures")
    p.add_argument("--precision", default="32", choices=("32", "bf16"), help="autocast of the step figures")
    args = p.parse_args()
    dev = torch.device(args.device)
    assert set(SECTIONS)  # params sections are validated by _cfg
    result: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "threads": torch.get_num_threads(),
        },
    }
    for name, fn in (
        ("steps", lambda: step_ratios(args.repeats, dev, args.precision)),
        ("preprocess", lambda: preprocess_speed(args.clips, max(3, args.repeats // 3))),
        ("models", lambda: model_speed(args.repeats)),
        ("repro", lambda: repro_noop(3)),
        ("gpu", lambda: gpu_speed(args.repeats, dev) if dev.type == "cuda" else {}),
    ):
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        try:
            result.update(fn())
        except (ImportError, FileNotFoundError) as e:  # e.g. librosa or dvc missing where this runs
            print(f"bench: {name} skipped: {e}", file=sys.stderr)
            result.setdefault("skipped", {})[name] = str(e)  # type: ignore[index]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    goals = {
        "distill_step_ratio_cached": "<= 1.05",
        "distill_step_ratio_live": "",
        "preprocess_speedup_vs_librosa": ">= 2",
        "student_speedup_batch1": ">= 3",
        "student_speedup_batch32": "",
        "onnx_speedup_batch1": ">= 1.5",
        "int8_speedup_batch1": ">= 1.5",
        "int8_size_ratio": "<= 0.3",
        "repro_noop_s": "<= 3",
    }
    print(f"{'figure':32}{'value':>10}  goal")
    for k, goal in goals.items():
        if k in result:
            print(f"{k:32}{result[k]:>10.3f}  {goal}")
    for arch, s in result.get("students", {}).items():  # type: ignore[union-attr]
        print(
            f"  {arch:30}{s['params'] / 1e6:>7.2f}M  speedup b1 {s['student_speedup_batch1']:.2f}  "
            f"b32 {s['student_speedup_batch32']:.2f}  b1 {s['latency_ms_batch1']:.2f} ms "
            f"({s['latency_ms_batch1_denormals']:.2f} ms without flushing denormals)"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
