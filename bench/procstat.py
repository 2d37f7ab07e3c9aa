"""What the kernel says about a process: CPU seconds and memory, from /proc.

The switch is measured from outside (its own ``/proc/<pid>`` files), so the bench adds
nothing to the process it measures.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import Final

import msgspec

_CLOCK_TICKS_PER_S: Final = os.sysconf("SC_CLK_TCK")


class ProcessSample(msgspec.Struct, frozen=True, kw_only=True):
    cpu_s: float
    """utime + stime since the process started, all threads."""
    rss_mb: float
    """VmRSS now."""
    hwm_mb: float
    """VmHWM: the peak resident set since the process started."""


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from /proc/<pid>/stat (clock-tick resolution)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    fields = text[text.rindex(")") + 2 :].split()
    # After the name, field 3 (state) is index 0, so utime (14) and stime (15) are 11, 12.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS_PER_S


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB."""
    rss = hwm = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return rss, hwm


def sample(pid: int) -> ProcessSample:
    rss, hwm = memory_mb(pid)
    return ProcessSample(cpu_s=cpu_seconds(pid), rss_mb=round(rss, 2), hwm_mb=round(hwm, 2))


def own_cpu_seconds() -> float:
    """user + system CPU of the calling process (a load generator reports its own)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_open_files_limit() -> int:
    """Raises this process's soft RLIMIT_NOFILE to its hard limit (children inherit it:
    10,000 idle terminals need as many sockets); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft
