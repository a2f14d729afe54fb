"""The embedding endpoint's overload and batch figures, side by side in one run.

1. Refusals, on a service with a small queue (64 texts) and one FIFO queue (lanes and cache off: a full queue
   refuses at the door, before the body is read, and every repeated text is computed), full in both ways:
   - *held*: the test encoder gate held, one request of 64 texts keeps the queue full and only the 429 path
     runs: an open loop at a fixed rate (the one the CPU target names) and a closed loop. Service CPU from
     /proc (10 ms ticks); *net*: less the held service's idle CPU (the gate's polling thread). GET /healthz
     at the same loads, held then released, gives the gate's extra cost under load.
   - *3x overload*: the gate open, a closed loop at c64 measures the capacity, then an open loop offers 3x it
     on fewer connections than uvicorn's limit (max_queue_texts + 64): the queue's 429 refuses, not uvicorn's
     503. Charging each admitted request what one cost in the capacity run leaves an estimate per refusal
     (a difference of two large, noisy figures). The service's counters say where each refusal happened:
     before the body was read, or after it (the route's reservation).
2. The load client's headroom: the refusal request against the null server, closed loop (a held refusal
   rate near it is the client's and the machine's: take the CPU per refusal) and at the held open-loop rate
   (the floor any asyncio server pays per request on this machine).
3. One request of 2,048 texts against 64 requests of 32 (the same distinct texts, the 64 sent at once so the
   texts reach the queue together), on the default service with the cache off, alternating which goes first
   each round: how the service turns the same work into encoder batches.
"""

import asyncio
import statistics
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from typing import Any, Literal

import httpx
import orjson

from perf.harness.client import HEALTHZ, Connection, MakeRequest, http_request, one_hop
from perf.harness.load import TIMEOUT_S, Run, closed_run, open_run
from perf.harness.meters import Meter, counter, idle_cores
from perf.harness.progress import say
from perf.harness.report import Target, at_least, at_most, below, info, num
from perf.harness.scenario import Context, Scenario
from perf.harness.stacks import Started, embedding, helper_server
from perf.harness.stats import alternating, figures, ms, per_round, quotient, ratio
from perf.sentences import SENTENCES, distinct_texts
from stack.procs import LOOPBACK

BIG_TEXTS, SMALL_TEXTS = 2048, 32
KINDS = ("one_of_2048", "64_of_32")
REFUSED = "429"
QUEUE_TEXTS = 64  # the refusal phase's small queue
CONNECTIONS = 96  # an open loop's at most: under the small service's uvicorn limit (QUEUE_TEXTS + 64)
HELD_RATE = 1000.0  # requests/s: the held open-loop runs' offered rate (the rate the CPU target names)
HELD_CONCURRENCY = 16  # the held saturating runs' and the null server's closed loops
OVERLOAD = 3.0  # the overload's offered rate, in times the capacity run's admitted rate
Load = tuple[str, Coroutine[Any, Any, Run]]  # what a load is, and its run


@dataclass(frozen=True)
class Plan:
    mode: Literal["quick", "full"]
    xla: bool  # the services' encoder XLA-compiled (quick: off, so they start in seconds)
    idle_s: float  # the held service's CPU with no load: the gate's polling thread, subtracted
    refusal_open_s: float
    closed_s: float
    closed_requests: int
    capacity_s: float  # the closed-loop c64 run that sets the overload rate
    capacity_requests: int
    overload_s: float
    rounds: int  # of the batch comparison, alternating which kind goes first
    repeats: int  # sends of each kind per round
    warm_up: bool  # one unrecorded send of each kind first


QUICK = Plan("quick", False, 1.5, 3.0, 2.0, 40_000, 3.0, 1500, 3.0, 1, 1, False)
FULL = Plan("full", True, 4.0, 8.0, 5.0, 100_000, 8.0, 5000, 8.0, 3, 3, True)


def _post(texts: str | list[str]) -> bytes:
    return http_request("POST", "/v1/embeddings", orjson.dumps({"input": texts, "encoding_format": "base64"}))


def cycling(requests: list[bytes]) -> MakeRequest:
    return lambda index: requests[index % len(requests)]


ONE_TEXT = [_post(text) for text in SENTENCES]
one, cycled, healthz = cycling(ONE_TEXT[:1]), cycling(ONE_TEXT), cycling([HEALTHZ])


def open_loop(target: Started, make: MakeRequest, plan: Plan, rate: float = 0.0, seconds: float = 0.0) -> Load:
    """An open loop, at the held runs' rate and length unless told otherwise."""
    rate, route, seconds = rate or HELD_RATE, one_hop(target.port, make), seconds or plan.refusal_open_s
    run = open_run(route, rate_per_s=rate, duration_s=seconds, pids=(target.pid,), max_connections=CONNECTIONS)
    return f"{'GET /healthz, ' if make is healthz else ''}open loop {rate:g}/s", run


def closed_loop(target: Started, make: MakeRequest, plan: Plan, c: int = 0, requests: int = 0, s: float = 0.0) -> Load:
    """A closed loop, at the held saturating runs' concurrency and length unless told otherwise."""
    c, route, requests = c or HELD_CONCURRENCY, one_hop(target.port, make), requests or plan.closed_requests
    run = closed_run(route, concurrency=c, requests=requests, duration_s=s or plan.closed_s, pids=(target.pid,))
    return f"{'GET /healthz, ' if make is healthz else ''}closed loop c{c}", run


def summarise(load: str, run: Run, baseline_cores: float = 0.0, *, only_refusals: bool = True) -> dict[str, Any]:
    """Outcomes, rates, latencies (from send; from due for open-loop runs) and CPU, net of the service's
    idle `baseline_cores`. The CPU per refusal only for runs that did nothing else (`only_refusals`)."""
    samples, usage, wall = run.samples, run.usage, run.usage.wall_s
    refused, ok, cpu, client = run.ok(REFUSED), run.ok(), usage.service_cpu_s, usage.client_cpu_s
    net = cpu - baseline_cores * wall
    # Microseconds per refusal (= core-ms per 1,000 refusals), and the share of one core at 1,000 refusals/s.
    per = {"raw": cpu / len(refused) * 1e6, "net": net / len(refused) * 1e6} if refused and only_refusals else None
    client_us = client / len(samples) * 1e6 if samples else None
    found = {"load": load, "requests": len(samples), "outcomes": dict(Counter(s.outcome for s in samples))}
    found |= {"wall_s": wall, "refusals": len(refused), "refusals_per_s": len(refused) / wall}
    sent, due = ms([s.service_s for s in refused]), ms([s.latency_s for s in refused])
    found |= {"refusal_ms_from_send": sent, "refusal_ms_from_due": due, "admitted": len(ok)}
    found |= {"admitted_per_s": len(ok) / wall, "admitted_ms_from_send": ms([s.service_s for s in ok])}
    found |= {"service_cpu_s": cpu, "service_cores": cpu / wall, "baseline_cpu_per_s": baseline_cores}
    found |= {"service_net_cores": net / wall, "service_us_per_refusal": per}
    found["core_fraction_at_1000_per_s"] = per and {k: v / 1e3 for k, v in per.items()}
    found |= {"client_cpu_s": client, "client_cores": client / wall, "client_us_per_request": client_us}
    return found | {"client_ceiling_per_s": 1e6 / client_us if client_us else None}  # with one core to itself


async def _refusals(service: Started, release: Callable[[], None], plan: Plan) -> dict[str, Any]:
    """Held (the gate shut), released, then the 3x overload, on the one small-queue service."""
    url, full = f"{service.url}/v1/embeddings", 'reason="queue_full"'
    async with httpx.AsyncClient(timeout=30.0) as client:

        async def counts() -> dict[str, float]:
            """Queue-full refusals: at admission, before the body was read (requests), and by the route once it
            was (texts: admitted while the queue had room, filled by another before reserving)."""
            by = {"before_body_requests": "requests", "after_body_texts": "texts"}
            return {k: await counter(client, service.url, f"embedding_rejected_{v}_total", full) for k, v in by.items()}

        async def counted(phase: str, load: Load, baseline: float = 0.0, note: str = "") -> dict[str, Any]:
            before = await counts()
            run = summarise(load[0] + note, await load[1], baseline, only_refusals=phase != "overload")
            run["server_counted"] = {k: v - before[k] for k, v in (await counts()).items()}
            say(f"{phase}, {run['load']}: {run['outcomes']}, service {run['service_cores']:.2f} cores")
            return run

        async def idle() -> dict[str, float]:
            return {"service_cores": await idle_cores(service.pid, seconds=plan.idle_s)}

        # One request of QUEUE_TEXTS texts fills the queue, and waits at the gate the whole held phase.
        fill = asyncio.create_task(client.post(url, json={"input": list(SENTENCES[:QUEUE_TEXTS])}, timeout=None))
        for _ in range(1200):
            if await counter(client, service.url, "embedding_admitted_texts") >= QUEUE_TEXTS:
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"the queue did not fill to {QUEUE_TEXTS} texts in 60 s of polling")
        if (status := (await client.post(url, json={"input": SENTENCES[0]})).status_code) != 429:
            raise RuntimeError(f"the queue is full but a request got {status}, not 429")
        held: dict[str, Any] = {"idle": await idle()}
        baseline = held["idle"]["service_cores"]
        say(f"queue held full ({QUEUE_TEXTS} texts); idle, the service uses {baseline:.3f} cores (subtracted)")
        held["at_rate"] = await counted("held", open_loop(service, one, plan), baseline)
        held["saturated"] = await counted("held", closed_loop(service, one, plan), baseline)
        held["saturated"]["unmeasured_opening_requests"] = HELD_CONCURRENCY  # in the server's counts only
        held["healthz"] = await counted("held", closed_loop(service, healthz, plan))
        held["healthz_at_rate"] = await counted("held", open_loop(service, healthz, plan))
        release()
        filled = await asyncio.wait_for(fill, TIMEOUT_S)
        embeddings = len(filled.json()["data"]) if filled.status_code == 200 else 0
        held["fill_request"] = {"texts": QUEUE_TEXTS, "status": filled.status_code, "embeddings": embeddings}
        released: dict[str, Any] = {"idle": await idle()}
        released["healthz_at_rate"] = await counted("released", open_loop(service, healthz, plan))
        extra = [p["healthz_at_rate"]["service_cores"] - p["idle"]["service_cores"] for p in (held, released)]
        per_s = held["healthz_at_rate"]["requests"] / held["healthz_at_rate"]["wall_s"]
        released["gate_cost_under_load_us_per_request"] = (extra[0] - extra[1]) / per_s * 1e6

        load = closed_loop(service, cycled, plan, QUEUE_TEXTS, plan.capacity_requests, plan.capacity_s)
        capacity = await counted("capacity", load, note=", one text per request")
        each_s = capacity["service_cpu_s"] / capacity["admitted"] if capacity["admitted"] else 0.0
        offered = round(OVERLOAD * capacity["admitted_per_s"], 1)
        load = open_loop(service, cycled, plan, offered, plan.overload_s)
        over = await counted("overload", load, note=f" ({OVERLOAD:g}x capacity)")
        rest = over["service_cpu_s"] - over["admitted"] * each_s
        over["attributed"] = {"admitted_cpu_s_each_from_capacity_run": each_s}
        over["attributed"]["service_us_per_refusal_estimate"] = quotient(rest * 1e6, over["refusals"])
    overload = {"capacity": capacity, "offered_per_s": offered, "run": over}
    return {"held": held, "released": released, "overload": overload}


async def _batch(service: Started, plan: Plan) -> dict[str, Any]:
    """Each kind's sends in rounds (after a warm-up, where the plan has one): a send's requests all at once,
    each on its own connection, timed from the first sent to the last answer read."""
    texts = distinct_texts(BIG_TEXTS)
    parts = {KINDS[0]: [texts], KINDS[1]: [texts[k : k + SMALL_TEXTS] for k in range(0, BIG_TEXTS, SMALL_TEXTS)]}
    sends = {kind: [(Connection(LOOPBACK, service.port), _post(p)) for p in ps] for kind, ps in parts.items()}

    async def timed(send: list[tuple[Connection, bytes]]) -> dict[str, Any]:
        for connection, _ in send:  # opened afresh, unmeasured: idle through the other kind's sends, they
            connection.close()  # would have passed uvicorn's 5 s keep-alive timeout
        await asyncio.gather(*(c.exchange(HEALTHZ) for c, _ in send))
        meter = Meter(service.pid)
        answers = await asyncio.gather(*(c.exchange(request) for c, request in send))
        usage, each = meter.stop(), BIG_TEXTS // len(send)
        got = {(status, len(orjson.loads(body)["data"]) if status == 200 else 0) for status, body in answers}
        if got != {(200, each)}:
            raise RuntimeError(f"requests of {each} texts got these (status, embeddings): {got}")
        rate, cpu = BIG_TEXTS / usage.wall_s, usage.service_cpu_s / BIG_TEXTS * 1e3
        return {"seconds": usage.wall_s, "texts_per_s": rate, "service_core_s_per_1000_texts": cpu}

    repeats, runs = range(1, plan.repeats + 1), list[dict[str, Any]]()
    order = [(0, kind, 1) for kind in KINDS if plan.warm_up]  # round 0: the warm-up, not recorded
    order += [(r, kind, n) for r in range(1, plan.rounds + 1) for kind in alternating(KINDS, r) for n in repeats]
    try:
        for round_, kind, repeat in order:
            run = {"round": round_, "variant": kind, "repeat": repeat, **await timed(sends[kind])}
            runs += [run] if round_ else []
            at = f"round {round_}" if round_ else "warm-up"
            say(f"{at}, {kind} #{repeat}: {run['texts_per_s']:.0f} texts/s ({run['seconds']:.2f}s)")
    finally:
        for connection, _ in (pair for send in sends.values() for pair in send):
            connection.close()
    rate, found = itemgetter("texts_per_s"), ratio(runs, *KINDS, itemgetter("texts_per_s"))
    per, words = {kind: per_round(runs, kind, rate) for kind in KINDS}, statistics.mean(len(t.split()) for t in texts)
    rounds = [{"round": r, **{f"{k}_texts_per_s": per[k][r] for k in KINDS}} for r in per[KINDS[0]]]
    batch = {"texts": BIG_TEXTS, "distinct_texts": len(set(texts)), "mean_words_per_text": words, "runs": runs}
    batch |= {"small_concurrency": len(parts[KINDS[1]])}
    batch["rounds"] = [r | {"ratio": r[f"{KINDS[0]}_texts_per_s"] / r[f"{KINDS[1]}_texts_per_s"]} for r in rounds]
    batch |= {f"{k}_texts_per_s": statistics.median(rate(r) for r in runs if r["variant"] == k) for k in KINDS}
    return batch | {"ratio": found["median"], "ratio_per_round": found["per_round"], "ratio_spread": found["spread"]}


def run(ctx: Context) -> dict[str, Any]:
    plan: Plan = ctx.plan
    ctx.settings.update(refusal_rate_per_s=HELD_RATE, closed_concurrency=HELD_CONCURRENCY, overload_factor=OVERLOAD)
    gate = ctx.logs / "encoder.gate"  # while it exists, the encoder waits
    ctx.logs.mkdir(parents=True, exist_ok=True)
    settings = {"max_queue_texts": str(QUEUE_TEXTS), "max_texts_per_request": str(QUEUE_TEXTS)}
    settings |= {"request_timeout_s": "300", "test_encoder_gate": str(gate), "lanes": "false", "cache_bytes": "0"}
    gate.touch()
    try:
        with ctx.stacks.started(embedding("embedding-small-queue", xla=plan.xla, **settings)) as service:
            refusals = asyncio.run(_refusals(service, partial(gate.unlink, missing_ok=True), plan))
    finally:
        gate.unlink(missing_ok=True)
    with ctx.stacks.started(helper_server("null")) as null:
        closed = figures(asyncio.run(closed_loop(null, one, plan)[1]), ok=REFUSED)
        label, load = open_loop(null, one, plan)
        null_at_rate = summarise(label, asyncio.run(load))
    say(f"null server: closed loop {closed['requests_per_s']:.0f}/s; {label} {null_at_rate['outcomes']}")
    with ctx.stacks.started(embedding("embedding-default", xla=plan.xla, cache_bytes="0")) as service:
        batch = asyncio.run(_batch(service, plan))
    # The load client's headroom: the null server's closed-loop rate over the highest rate an open loop asked
    # of it (the runs the latency and CPU targets are judged on), and over the held closed-loop rate.
    held, null_per_s = refusals["held"], closed["requests_per_s"]
    offered = max(held["at_rate"]["requests"] / held["at_rate"]["wall_s"], refusals["overload"]["offered_per_s"])
    saturated, ceiling = held["saturated"]["refusals_per_s"], held["saturated"]["client_ceiling_per_s"]
    client = {"null_server": {"at_rate": null_at_rate}, "highest_open_loop_rate_per_s": offered}
    client |= {"null_over_open_loop_rate": null_per_s / offered, "null_over_refusals": null_per_s / saturated}
    client["ceiling_over_refusals"] = None if ceiling is None else ceiling / saturated
    client["healthz_over_refusals"] = held["healthz"]["admitted_per_s"] / saturated
    return {"refusals": refusals, "client": client, "batch": batch, "headroom": {"null_server": closed}}


def _per(run: dict[str, Any], kind: str, key: str = "service_us_per_refusal") -> float | None:
    """The CPU per refusal ("raw" or "net"), where the run measured it."""
    return None if run[key] is None else float(run[key][kind])


def targets(results: dict[str, Any]) -> list[Target]:
    refusals, client = results["refusals"], results["client"]
    at, saturated, over = refusals["held"]["at_rate"], refusals["held"]["saturated"], refusals["overload"]["run"]
    rate = f"{at['refusals_per_s']:.0f}/s"
    net, fraction = _per(at, "net"), _per(at, "net", "core_fraction_at_1000_per_s")
    gate, null = refusals["released"]["gate_cost_under_load_us_per_request"], client["null_server"]["at_rate"]
    highest, null_rate = f"{client['highest_open_loop_rate_per_s']:.0f}/s", client["null_over_open_loop_rate"]
    sat = f"held, saturated ({saturated['load']})"
    return [
        at_most(f"held at {rate}: 429 p50 from send (ms)", at["refusal_ms_from_send"]["p50"], 2.0),
        info(f"held at {rate}: 429 p99 from send (ms)", at["refusal_ms_from_send"]["p99"]),
        below(f"held at {rate}: CPU per refusal x 1,000/s, share of a core (net of idle)", fraction, 0.1),
        below(f"held at {rate}: CPU per refusal, us = core-ms per 1,000 (net of idle)", net, 100.0),
        info(f"held at {rate}: the same, less the gate's cost under load (estimate)", net and net - gate),
        info(f"{sat}: refusals/s", saturated["refusals_per_s"]),
        info(f"{sat}: 429 p50 from send (ms)", saturated["refusal_ms_from_send"]["p50"]),
        below("held, saturated: CPU per refusal (us, net of idle)", _per(saturated, "net"), 100),
        info(f"null server at {rate}: its CPU per request (us; the asyncio floor)", _per(null, "net")),
        at_most("3x overload: 429 p50 from send (ms)", over["refusal_ms_from_send"]["p50"], 2.0),
        info("3x overload: 429 p99 from send (ms)", over["refusal_ms_from_send"]["p99"]),
        info("3x overload: refusals/s", over["refusals_per_s"]),
        at_least("one request of 2,048 / 64 requests of 32 (c64), texts/s", results["batch"]["ratio"], 0.90),
        at_least(f"load client: null-server rate / highest open-loop rate ({highest})", null_rate, 3.0),
        info("load client: its CPU per request, held saturated run (us)", saturated["client_us_per_request"]),
        info("load client: its one-core ceiling / held saturated rate", client["ceiling_over_refusals"]),
        info("load client: null-server rate / held saturated refusal rate", client["null_over_refusals"]),
        info("load client: /healthz rate / held saturated refusal rate", client["healthz_over_refusals"]),
    ]


def tables(report: dict[str, Any]) -> list[str]:
    results, plan = report["results"], report["settings"]["plan"]
    held, released, over = (results["refusals"][k] for k in ("held", "released", "overload"))
    batch, counted, big, small = results["batch"], over["run"]["server_counted"], *(f"{k}_texts_per_s" for k in KINDS)
    rows = [("held", held[k]) for k in ("at_rate", "saturated", "healthz", "healthz_at_rate")]
    rows += [("released", released["healthz_at_rate"]), ("capacity", over["capacity"]), ("3x overload", over["run"])]
    rows += [("null server (*service*: it)", results["client"]["null_server"]["at_rate"])]
    return [
        f"## Refusals (small queue: max_queue_texts {QUEUE_TEXTS})\n",
        f"Idle CPU, subtracted for *net*: {held['idle']['service_cores']:.3f} cores held, "
        f"{released['idle']['service_cores']:.3f} released; the held gate's extra cost under load: "
        f"{num(released['gate_cost_under_load_us_per_request'], 1)} us per request. 3x overload, refused before "
        f"the body was read: {counted['before_body_requests']:.0f} requests, after it (the route's reservation): "
        f"{counted['after_body_texts']:.0f} texts; CPU per refusal, estimated: "
        f"{num(over['run']['attributed']['service_us_per_refusal_estimate'], 1)} us.\n",
        "| phase | load | requests | 429/s | 429 p50 ms | 429 p99 ms | 200/s | 200 p50 ms | service us/429 | "
        "net us/429 | service cores | client us/request | client cores |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {name} | {r['load']} | {r['requests']} | {r['refusals_per_s']:.0f} | "
            f"{num(r['refusal_ms_from_send']['p50'])} | {num(r['refusal_ms_from_send']['p99'])} | "
            f"{r['admitted_per_s']:.0f} | {num(r['admitted_ms_from_send']['p50'])} | {num(_per(r, 'raw'), 1)} | "
            f"{num(_per(r, 'net'), 1)} | {r['service_cores']:.3f} | {num(r['client_us_per_request'], 1)} | "
            f"{r['client_cores']:.3f} |"
            for name, r in rows
        ),
        "\n## One request of 2,048 texts against 64 requests of 32\n",
        f"The same {batch['texts']:,} distinct texts ({batch['mean_words_per_text']:.1f} words on average), "
        f"the 64 requests at once (c{batch['small_concurrency']}), encoder XLA {'on' if plan['xla'] else 'off'}; "
        f"per round, the median of {plan['repeats']} send(s) of each kind.\n",
        "| round | one of 2,048: texts/s | 64 of 32: texts/s | ratio |",
        "|---|---:|---:|---:|",
        *(f"| {r['round']} | {r[big]:.0f} | {r[small]:.0f} | {r['ratio']:.3f} |" for r in batch["rounds"]),
        f"| all sends: medians; ratio: median of rounds (spread {num(batch['ratio_spread'], 3)}) | "
        f"{batch[big]:.0f} | {batch[small]:.0f} | {batch['ratio']:.3f} |",
    ]


def checks(results: dict[str, Any]) -> list[str]:
    held, over, batch = results["refusals"]["held"], results["refusals"]["overload"]["run"], results["batch"]
    problems = [
        f"held {name} run answered {held[name]['outcomes']}, not only 429s"
        for name in ("at_rate", "saturated")
        if held[name]["refusals"] == 0 or set(held[name]["outcomes"]) != {REFUSED}
    ]
    if held["at_rate"]["server_counted"]["before_body_requests"] != held["at_rate"]["refusals"]:
        problems.append(f"held at rate: the service counted {held['at_rate']['server_counted']} before the body")
    if held["fill_request"] != {"texts": QUEUE_TEXTS, "status": 200, "embeddings": QUEUE_TEXTS}:
        problems.append(f"the request that held the queue full got {held['fill_request']}")
    if held["healthz"]["admitted"] == 0:
        problems.append("held: no GET /healthz was answered 200")
    if over["refusals"] == 0 or over["admitted"] == 0 or not set(over["outcomes"]) <= {"200", REFUSED}:
        problems.append(f"3x overload answered {over['outcomes']}: wanted both 200s and 429s, nothing else")
    if batch["distinct_texts"] != BIG_TEXTS:
        problems.append(f"the batch phase sent {batch['distinct_texts']} distinct texts, not {BIG_TEXTS}")
    return problems


PER_REFUSAL = ("refusal_ms_from_send.p50", "service_us_per_refusal.net", "core_fraction_at_1000_per_s.net")
FIGURES = (
    *(f"refusals.held.{run}.{figure}" for run in ("at_rate", "saturated") for figure in PER_REFUSAL),
    *("refusals.held.at_rate.client_us_per_request", "refusals.held.saturated.client_ceiling_per_s"),
    *("refusals.held.idle.service_cores", "refusals.released.gate_cost_under_load_us_per_request"),
    *(f"refusals.overload.{f}" for f in ("capacity.admitted_per_s", "offered_per_s", "run.refusal_ms_from_send.p50")),
    "refusals.overload.run.attributed.service_us_per_refusal_estimate",
    *(f"client.{f}" for f in ("null_server.at_rate.service_us_per_refusal.net", "null_over_open_loop_rate")),
    *(f"client.{f}" for f in ("null_over_refusals", "ceiling_over_refusals", "healthz_over_refusals")),
    *(f"batch.{f}" for f in (*(f"{k}_texts_per_s" for k in KINDS), "ratio", "ratio_per_round.0", "runs.0.variant")),
    "headroom.null_server.requests_per_s",
)
TITLE = "Embedding endpoint: refusals, and one request of 2,048 texts"
SCENARIO = Scenario("endpoint", TITLE, {"quick": QUICK, "full": FULL}, run, targets, tables, FIGURES, checks)
