"""What a run costs: a process's and its threads' CPU from /proc, this (load client's) process's CPU, an
idle baseline, and a Prometheus counter's value."""

import asyncio
import os
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_of(stat: str) -> float:
    """utime + stime from a /proc stat line (fields 14 and 15)."""
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_cpu_s(pid: int) -> float:
    """A process's CPU seconds, all its threads."""
    return _cpu_of(Path(f"/proc/{pid}/stat").read_text(encoding="ascii"))


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of each live thread of a process, summed by thread name."""
    found: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text(encoding="utf-8").strip()
            stat = (task / "stat").read_text(encoding="ascii")
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread exited
        found[name] = found.get(name, 0.0) + _cpu_of(stat)
    return found


def thread_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Per thread name; a name whose threads exited in between counts what is left (at least 0)."""
    return {name: max(0.0, after[name] - before.get(name, 0.0)) for name in after}


def client_cpu_s() -> float:
    """This process's CPU: the load client runs in its one event loop."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Usage:
    wall_s: float
    service_cpu_s: float  # the metered processes together
    client_cpu_s: float


class Meter:
    """Wall time, the CPU of the processes `pids` and the client's, from creation to `stop()`."""

    def __init__(self, *pids: int) -> None:
        self.pids = pids
        self._start = self._read()

    def _read(self) -> tuple[float, float, float]:
        return time.perf_counter(), sum(process_cpu_s(pid) for pid in self.pids), client_cpu_s()

    def stop(self) -> Usage:
        end = self._read()
        wall, service, client = (b - a for a, b in zip(self._start, end, strict=True))
        return Usage(wall, service, client)


class Meters:
    """A Meter for each named process, read apart: from creation to `stop()`."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._meters = {name: Meter(pid) for name, pid in pids.items()}

    def stop(self) -> tuple[float, dict[str, float]]:
        """The wall seconds, and the CPU seconds of each process and of the client ("client")."""
        usages = {name: meter.stop() for name, meter in self._meters.items()}
        first = next(iter(usages.values()))
        return first.wall_s, {**{name: u.service_cpu_s for name, u in usages.items()}, "client": first.client_cpu_s}


async def idle_cores(*pids: int, seconds: float) -> float:
    """The processes' CPU with no load, in cores: a baseline to subtract from loaded figures."""
    meter = Meter(*pids)
    await asyncio.sleep(seconds)
    usage = meter.stop()
    return usage.service_cpu_s / usage.wall_s


async def counter(client: httpx.AsyncClient, url: str, name: str, label: str = "") -> float:
    """The sum of a Prometheus metric's samples on `url`/metrics (those whose labels hold `label`)."""
    total = 0.0
    for line in (await client.get(f"{url}/metrics")).text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.split("{")[0] == name and label in sample:
            total += float(value)
    return total
