"""What the numbers were measured on, and how much memory a variant used."""

from __future__ import annotations

import os
import platform
import re
import resource
import threading
import time

import psutil
import torch
import transformers


def cpu_model() -> str:
    """'model name' of /proc/cpuinfo (Linux), else platform's guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU features that decide bf16 speed: AVX-512 BF16 and AMX (Linux only)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return []
    return sorted({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"} & set(flags))


def describe(device: torch.device, threads: int) -> dict:
    info = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": _version("accelerate"),
        "python": platform.python_version(),
        "torch_threads": threads,
        "device": str(device),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def slug(info: dict) -> str:
    """A file-name-safe machine name: the GPU, else the CPU model and its core count."""
    name = info.get("gpu") or f"cpu{info['logical_cores']}-{info['cpu']}"
    return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("(r)", "").replace("(tm)", "")).strip("-")


def _version(package: str) -> str | None:
    try:
        return __import__(package).__version__
    except ImportError:
        return None


def pin_threads(threads: int) -> int:
    """The same torch thread count for every variant (the Trainer, via accelerate, may change it)."""
    torch.set_num_threads(threads)
    return torch.get_num_threads()


class PeakMemory:
    """Peak resident memory of this process while the block runs (polled: RSS has no per-block
    high-water mark), plus the peak GPU memory allocated by torch on CUDA.

    RSS counts everything the process holds, earlier variants' cached allocations included, so
    ``rss_growth_mb`` (peak minus the RSS at entry) is the fairer per-variant figure.
    """

    def __init__(self, device: torch.device, interval: float = 0.02):
        self.device, self.interval = device, interval
        self.process = psutil.Process()
        self.peak_rss = self.start_rss = 0
        self._stop = threading.Event()

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.start_rss = self.peak_rss = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)

    def report(self) -> dict:
        out = {"peak_rss_mb": self.peak_rss / 2**20, "rss_growth_mb": (self.peak_rss - self.start_rss) / 2**20}
        if self.device.type == "cuda":
            out["gpu_peak_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return out


def process_peak_rss_mb() -> float:
    """The kernel's high-water mark of this process's RSS (KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")
