"""Shared by the benchmark scripts: timing of training steps and memory readings (Linux /proc,
with a resource fallback; CUDA allocator statistics on GPUs)."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Callable

_KB = 1024


def load_average() -> str:
    """The 1/5/15-minute load averages, as ``uptime`` shows them (the machine may be shared)."""
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def rss() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _KB


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * _KB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _KB


def measure_steps(step: Callable[[int], None], warmup: int, steps: int, device) -> dict:
    """Run ``warmup`` untimed then ``steps`` timed calls of ``step(i)``; returns the median and
    minimum step time (the median is robust to other processes sharing the CPU) and the peak
    memory growth (CUDA allocator on GPUs, peak RSS on CPUs; ``exact`` False where the kernel
    cannot reset its peak counter)."""
    import torch

    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    base_rss, exact = rss(), reset_peak_rss()
    for i in range(warmup):
        step(i)
    if cuda:
        torch.cuda.synchronize()
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        step(i)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    mem = (torch.cuda.max_memory_allocated() - base_cuda) if cuda else (peak_rss() - base_rss)
    return {"median_s": statistics.median(times), "min_s": min(times), "mem": mem, "exact": exact or cuda}
