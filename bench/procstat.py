"""What the kernel says about a process: CPU seconds and memory, from /proc.

The switch is measured from outside (its own ``/proc/<pid>`` files), so the bench adds
nothing to the process it measures. A switch of several processes (a supervisor and its
workers) and a database server (a postmaster and its backends) are measured as the tree
of processes below their first one.
"""

from __future__ import annotations

import contextlib
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


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat from field 3 (state) on: index i is field i + 3."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from /proc/<pid>/stat (clock-tick resolution)."""
    fields = _stat_fields(pid)
    # utime (14) and stime (15) are 11, 12.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS_PER_S


def _parents() -> dict[int, list[int]]:
    """Every process's children, from one scan of /proc (this kernel has no
    /proc/<pid>/task/*/children)."""
    below: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            parent = int(text[text.rindex(")") + 2 :].split()[1])
            below.setdefault(parent, []).append(int(stat.parent.name))
    return below


def tree(pid: int) -> list[int]:
    """``pid`` and every process below it now (a supervisor and its workers, a
    postmaster and its backends), ``pid`` first."""
    below = _parents()
    found, index = [pid], 0
    while index < len(found):
        found.extend(below.get(found[index], ()))
        index += 1
    return found


def tree_cpu_seconds(pid: int) -> float:
    """The CPU of ``pid`` and everything below it, also of the processes that ended and
    were reaped: utime + stime of each one running, plus each one's cutime + cstime (its
    children waited for). The difference of two readings is exact however processes come
    and go between them (a PostgreSQL backend, a restarted worker)."""
    return _members_cpu_seconds(tree(pid))


def _members_cpu_seconds(members: list[int]) -> float:
    total = 0
    for member in members:
        with contextlib.suppress(OSError, ValueError, IndexError):
            # utime, stime, cutime, cstime: fields 14-17.
            total += sum(int(field) for field in _stat_fields(member)[11:15])
    return total / _CLOCK_TICKS_PER_S


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


def tree_sample(pid: int) -> tuple[ProcessSample, list[int]]:
    """``pid`` and every process below it together: their CPU (:func:`tree_cpu_seconds`),
    the sum of their RSS and of their HWM; and the processes counted."""
    members = tree(pid)
    return memory_sample(members, _members_cpu_seconds(members)), members


def memory_sample(pids: list[int], cpu_s: float) -> ProcessSample:
    """The sum of ``pids``' RSS and HWM (those still running), with ``cpu_s``."""
    rss = hwm = 0.0
    for member in pids:
        with contextlib.suppress(OSError):
            member_rss, member_hwm = memory_mb(member)
            rss, hwm = rss + member_rss, hwm + member_hwm
    return ProcessSample(cpu_s=cpu_s, rss_mb=round(rss, 2), hwm_mb=round(hwm, 2))


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine since boot, every core summed, from
    /proc/stat's ``cpu`` line; busy is all but idle and iowait."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    everything = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    idle = fields[3] + fields[4]
    return (everything - idle) / _CLOCK_TICKS_PER_S, everything / _CLOCK_TICKS_PER_S


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
