"""The load client's headroom: its closed-loop rate against the null server (every request answered at
once) and against trivial endpoints of the running services, beside the rates a scenario measured. A
figure near the client's own limit is the client's, not the server's."""

import asyncio
from collections.abc import Mapping
from typing import Any

from perf.harness.client import HEALTHZ, MakeRequest, one_hop
from perf.harness.load import closed_run
from perf.harness.progress import say
from perf.harness.report import Target, at_least, info
from perf.harness.stacks import Stacks, Started, helper_server
from perf.harness.stats import figures

CONCURRENCY = 64


def headroom(
    stacks: Stacks, make: MakeRequest, healthz: Mapping[str, Started], *, duration_s: float, requests: int = 1_000_000
) -> dict[str, Any]:
    """`make`'s requests against the null server, and GET /healthz against each of `healthz`, at c64, each
    with its server's CPU."""

    def run(server: Started, request: MakeRequest) -> dict[str, Any]:
        route = one_hop(server.port, request)
        load = closed_run(route, concurrency=CONCURRENCY, requests=requests, duration_s=duration_s, pids=(server.pid,))
        return figures(asyncio.run(load), ok=None)  # any answer counts; the server's CPU per request

    found: dict[str, Any] = {}
    with stacks.started(helper_server("null")) as null:
        found["null_server"] = run(null, make)
    for name, service in healthz.items():
        found[f"{name}_healthz"] = run(service, lambda _: HEALTHZ)
    for name, result in found.items():
        say(f"headroom, {name}: {result['requests_per_s']:.0f}/s, client {result['client_us_per_request']:.0f} us each")
    return found


def headroom_targets(found: Mapping[str, Any], fastest_per_s: float, measured: str = "measured") -> list[Target]:
    """`headroom()`'s rates over the fastest rate a scenario measured (`measured`: what it was): the null
    server's at least 3 times it, so the client is not what limits; each /healthz's, for information."""
    return [
        at_least(
            f"load client: null-server c{CONCURRENCY} rate / fastest {measured} rate ({fastest_per_s:.0f}/s)",
            found["null_server"]["requests_per_s"] / fastest_per_s,
            3.0,
        ),
        *(
            info(
                f"load client: {name.removesuffix('_healthz')} /healthz c{CONCURRENCY} rate / fastest {measured} rate",
                run["requests_per_s"] / fastest_per_s,
            )
            for name, run in found.items()
            if name.endswith("_healthz")
        ),
    ]
