"""A service under cProfile, and what its profile shows.

`python -m perf.harness.profiled PROFILE_FILE cpu|wall MODULE [ARGS...]` runs `python -m MODULE ARGS`,
enables the profiler on SIGUSR1 (once imports, start-up and a warm-up are done) and disables it and writes
PROFILE_FILE on SIGUSR2. Enabled from a signal handler, inside a callback of the event loop, it sees only
the Python callbacks the loop runs (and what they call), not the loop's own frames or its waiting. The
clock: "cpu", the main thread's CPU time (other threads' CPU is not in it, and each reading is a system
call, so profiling costs more); "wall", cProfile's default (cheap, but time spent waiting for a core on a
busy machine counts too). The profiler's own cost falls on every call, so it inflates code that makes many
small calls: read shares, and where the two clocks agree."""

import cProfile
import pstats
import re
import runpy
import signal
import sys
import sysconfig
import time
from collections import Counter
from collections.abc import Callable, Mapping
from operator import itemgetter
from pathlib import Path
from types import FrameType
from typing import Any

from perf.harness.report import REPO, Column, table
from stack.procs import LOOPBACK, free_port
from stack.services import Service

CLOCKS = ("cpu", "wall")
TOP = 15  # functions listed by cumulative and by own time

_STDLIB = Path(sysconfig.get_paths()["stdlib"])
_BUILTIN = re.compile(r"of '([\w.]+)' objects|<built-in method ([\w.]+)>")
Key = tuple[str, int, str]  # pstats: (file, line, function)


def profiled(service: Service, clock: str, profile_file: Path, port_variable: str) -> Service:
    """`service` under the profiler, on a port of its own (its setting `port_variable`)."""
    port, args = free_port(), (str(profile_file), clock, service.module, *service.args)
    env, url = {**service.env, port_variable: str(port)}, f"http://{LOOPBACK}:{port}"
    return Service(f"{service.name}-profiled-{clock}", __name__, url, service.ready_path, args, env)


def _place(filename: str) -> tuple[str, str]:
    """Where a file is ("site-packages", "repo" or "stdlib") and its path there; ("", filename) elsewhere
    (<frozen importlib._bootstrap>, <string>)."""
    path = Path(filename)
    if "site-packages" in path.parts:
        return "site-packages", "/".join(path.parts[path.parts.index("site-packages") + 1 :])
    for place, root in (("repo", REPO), ("stdlib", _STDLIB)):
        if path.is_relative_to(root):
            return place, str(path.relative_to(root))
    return "", filename


def _package(key: Key, areas: Mapping[str, str]) -> str | None:
    """The library (site-packages top level), our package, or the standard-library module a function is
    in; None for a helper whose time goes to its callers (a generic built-in such as list.append, or a
    standard-library module that no area names, such as re)."""
    filename, _, name = key
    if filename != "~":
        place, path = _place(filename)
        module = path.split("/")[0].removesuffix(".py") if place else ""
        if place in ("site-packages", "repo"):
            return module
    elif (match := _BUILTIN.search(name)) and "." in (method := match[1] or match[2]):
        module = method.split(".")[0]  # a module's built-in (time.sleep), not a type's (dict.get) nor isinstance
    else:
        return None
    return module if module and (module not in sys.stdlib_module_names or module in areas) else None


def _owners(entries: dict[Key, Any], areas: Mapping[str, str]) -> Callable[[Key], dict[str, float]]:
    """For each function, the packages its own time counts for: its own, or for a helper, its callers'
    (in proportion to the time it spent for each, up through helpers calling helpers)."""
    memo: dict[Key, dict[str, float]] = {}

    def owners(key: Key, seen: frozenset[Key]) -> dict[str, float]:
        if key in memo:
            return memo[key]
        if (package := _package(key, areas)) is not None:
            return memo.setdefault(key, {package: 1.0})
        callers = {c: v[2] for c, v in entries[key][4].items() if c in entries and c not in seen}
        whole = sum(callers.values())
        if whole <= 0:
            return memo.setdefault(key, {"unattributed helpers": 1.0})
        found: Counter[str] = Counter()
        for caller, portion in callers.items():
            for name, share in owners(caller, seen | {key}).items():
                found[name] += share * portion / whole
        return memo.setdefault(key, dict(found))

    return lambda key: owners(key, frozenset())


def analysed(path: Path, requests: int, clock: str, areas: Mapping[str, str]) -> dict[str, Any]:
    """The top functions by cumulative and own time, and the own time by package and by area (`areas`:
    package -> area, the only standard-library modules that count as packages, not helpers; others are
    "other: <package>"), each per request of the `requests` profiled."""
    stats: dict[Key, Any] = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    entries = {key: value for key, value in stats.items() if key[0] != __file__}  # but the profiler's own
    total, owners, us = sum(value[2] for value in entries.values()), _owners(entries, areas), 1e6 / requests

    def row(key: Key) -> dict[str, Any]:
        (filename, line, name), (_, calls, own, cumulative, _) = key, entries[key]
        found = {"function": name if filename == "~" else f"{_place(filename)[1]}:{line}({name})", "calls": calls}
        for kind, s in (("own", own), ("cumulative", cumulative)):
            found |= {f"{kind}_s": s, f"{kind}_share": s / total, f"{kind}_us_per_request": s * us}
        return found

    packages, by_area = Counter[str](), Counter[str]()
    for key, value in entries.items():
        packages.update({name: value[2] * share for name, share in owners(key).items()})
    for package, seconds in packages.items():
        by_area[areas.get(package, f"other: {package}")] += seconds

    def shares(found: Counter[str]) -> list[dict[str, Any]]:
        return [{"name": n, "own_s": s, "share": s / total, "us_per_request": s * us} for n, s in found.most_common()]

    def top(column: int) -> list[dict[str, Any]]:
        return [row(k) for k in sorted(entries, key=lambda k: entries[k][column], reverse=True)[:TOP]]

    found = {"clock": clock, "profiled_s": total, "us_per_request": total * us, "top_cumulative": top(3)}
    return found | {"top_own": top(2), "by_package": shares(packages), "by_area": shares(by_area)}


FUNCTIONS: list[Column] = [
    ("function", lambda r: f"`{r['function']}`", None),
    ("calls", itemgetter("calls"), 0),
    *((f"{kind} %", lambda r, kind=kind: r[f"{kind}_share"] * 100, 1) for kind in ("own", "cumulative")),
    *((f"{kind} us/request", lambda r, kind=kind: r[f"{kind}_us_per_request"], 1) for kind in ("own", "cumulative")),
]


def tables(profiles: Mapping[str, dict[str, Any]], unprofiled_core_ms: float) -> list[str]:
    """`analysed()` profiles by clock (or why one was skipped): each run, the own time by area side by side,
    then the first clock's packages and top functions."""
    done = {clock: p for clock, p in profiles.items() if "skipped" not in p}
    if not done:
        return ["Skipped: " + "; ".join(f"{c}: {p['skipped']}" for c, p in profiles.items()) + "."]
    share = {(c, a["name"]): a for c, p in done.items() for a in p["by_area"]}

    def by_clock(c: str, field: str, header: str, scale: float) -> Column:
        return f"{c} clock {header}", lambda area: share[(c, area)][field] * scale if (c, area) in share else None, 1

    columns = (("share", "%", 100.0), ("us_per_request", "us/request", 1.0))
    areas: list[Column] = [("area", str, None), *(by_clock(c, *column) for c in done for column in columns)]
    main = next(iter(done.values()))
    package: list[Column] = [("package", itemgetter("name"), None), ("%", lambda p: p["share"] * 100, 1)]
    runs = "; ".join(
        f"{clock} clock: {p['run']['profiled_requests']} requests at {p['run']['throughput_per_s']:.0f}/s, the "
        f"process {p['run']['process_core_ms_per_request']:.2f} core-ms per request, its main thread "
        f"{p['us_per_request']:.0f} us as profiled"
        for clock, p in done.items()
    )
    return [
        f"Unprofiled, it took {unprofiled_core_ms:.2f} core-ms per request; {runs}.",
        "",
        "Own time by area (a helper's time, such as list.append's or re's, counts for its callers):",
        "",
        *table(areas, dict.fromkeys(a["name"] for p in done.values() for a in p["by_area"])),
        "",
        f"By package, {main['clock']} clock (the top 12):",
        "",
        *table([*package, ("us/request (profiled)", itemgetter("us_per_request"), 1)], main["by_package"][:12]),
        "",
        f"Top {TOP} by cumulative time, {main['clock']} clock (*calls*: a coroutine's every resumption counts as "
        "one; the cumulative time of nested middleware includes everything under it):",
        "",
        *table(FUNCTIONS, main["top_cumulative"]),
        "",
        f"Top {TOP} by own time, {main['clock']} clock:",
        "",
        *table(FUNCTIONS, main["top_own"]),
    ]


def main() -> None:
    path, clock, module = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    profile = cProfile.Profile(time.thread_time) if clock == "cpu" else cProfile.Profile()

    def write(_: int, __: FrameType | None) -> None:
        profile.disable()
        part = path.with_name(path.name + ".part")
        profile.dump_stats(part)
        part.replace(path)  # whole, or not at all

    signal.signal(signal.SIGUSR1, lambda _, __: profile.enable())
    signal.signal(signal.SIGUSR2, write)
    sys.argv = [module, *sys.argv[4:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
