"""Where a run computes and at what precision: the device, the autocast precision and the reason
for each automatic choice (logged at the start of a run)."""

from __future__ import annotations

from pathlib import Path

import torch

from lib.errors import ConfigError

# Native bf16 tensor cores start with Ampere (compute capability 8.0). torch.cuda.is_bf16_supported()
# also says yes on older GPUs that emulate bf16 (slowly), so the capability decides.
BF16_MIN_CAPABILITY = (8, 0)
# CPU instructions that compute bf16 natively. Without them (e.g. an AVX2-only CPU) bf16 autocast is
# emulated and was measured ~30x slower than fp32; with them it was 1.5-2.4x faster (BENCHMARKS.md).
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = Path("/proc/cpuinfo")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name}: no CUDA GPU is visible; use trainer.device=cpu or auto")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"trainer.device={name}: only {torch.cuda.device_count()} CUDA GPU(s) visible "
            f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})"
        )
    return device


def cpu_bf16_flag(cpuinfo: Path | None = None) -> str | None:
    """The first of CPU_BF16_FLAGS this CPU reports in /proc/cpuinfo; None where it has none, or where
    there is no /proc/cpuinfo to read (macOS, Windows: fp32 there, the safe side)."""
    try:
        text = (cpuinfo or CPUINFO).read_text(errors="replace")
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return next((flag for flag in CPU_BF16_FLAGS if flag in flags), None)


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> bf16 on a CUDA GPU with native bf16 (capability >= 8.0), fp16 + grad scaler on
    older CUDA GPUs; on CPU bf16 where it has AMX or AVX-512 BF16, else fp32. The capability is read
    from ``device`` itself (cuda:N)."""
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.get_device_capability(device) >= BF16_MIN_CAPABILITY else "fp16"
        return "bf16" if device.type == "cpu" and cpu_bf16_flag() else "fp32"
    if name not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"trainer.precision={name}: choose auto, fp32, bf16 or fp16")
    if name == "fp16" and device.type != "cuda":
        raise ConfigError("trainer.precision=fp16 needs a CUDA GPU; on CPU use bf16 or fp32")
    return name


def why_precision(name: str, device: torch.device, precision: str) -> str:
    """One phrase on why ``precision`` was chosen, e.g. 'auto: the CPU has avx512_bf16'."""
    if name != "auto":
        return "set by trainer.precision"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"auto: GPU compute capability {major}.{minor}"
    flag = cpu_bf16_flag()
    return f"auto: the CPU has {flag}" if flag else "auto: the CPU has no native bf16 (AMX / AVX-512 BF16)"


def why_device(name: str, device: torch.device) -> str:
    if name != "auto":
        return "set by trainer.device"
    return f"auto: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "auto: no CUDA GPU visible"


def settings_line(cfg_trainer, device: torch.device, precision: str) -> str:
    """The run's device, precision and CPU threads, each with why, e.g. 'device cpu (auto: no CUDA GPU
    visible), precision bf16 (auto: the CPU has amx_bf16), 2 torch threads (torch's default)'."""
    threads = cfg_trainer.num_threads or torch.get_num_threads()
    why_threads = "set by trainer.num_threads" if cfg_trainer.num_threads else "torch's default"
    return (
        f"device {device} ({why_device(cfg_trainer.device, device)}), "
        f"precision {precision} ({why_precision(cfg_trainer.precision, device, precision)}), "
        f"{threads} torch thread{'s' if threads != 1 else ''} ({why_threads})"
    )


def host_reads_are_free(device: torch.device) -> bool:
    """Whether reading a tensor's value back into Python costs nothing (the CPU) or makes the host wait
    until the accelerator has run everything queued (CUDA, MPS). The training step decides on the
    device where reads are not free: the loop's NaN/inf skip and the adversary's empty-direction case."""
    return device.type == "cpu"


def autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "index"}
