"""Fair lanes and the exact embedding cache, side by side in one run.

1. Noisy neighbour. Two pipelines in turn: A with fair lanes (EMBEDDING_LANES=true, the cache at its
   default size), B with one FIFO queue (EMBEDDING_LANES=false) and no cache. On each, after a warm-up:
   (a) an interactive caller (/v1/embeddings, one text a request, user "web", c2) and /classify (one text,
   c2) alone; (b) both under a bulk flood (4 closed-loop workers, 256 texts a request, user "bulk-job"; a
   429 waits out its Retry-After, at most 2 s), the callers running on until the flood's last answer; (c)
   the flood alone. Every text is new (a counter appended), so the cache answers none. The keyless callers
   are flows (`user`) of the shared `anonymous` lane; /classify's texts are in the orchestrator's lane (its
   key). Per lane: texts, refusals and queue wait, from the embedding service's counters.
2. Repeats. Zipf draws (s = 1.1, a fixed seed) over 10,000 distinct texts, one a request at c64, against
   A's embedding service (cache on) and B's (cache off); the cache's counts from its counters.
3. Weighted share. An embedding service alone with keyed lanes `fast` (weight 4: 16 workers, 16 short texts
   a request) and `bulk` (weight 1: 4 workers, 64 texts of ~120 tokens), both kept backlogged with new
   texts: `fast`'s share of embedding_lane_tokens_total over a window after a warm-up (its weight's: 0.80).

Latencies are from send, of the 200s; the flood's rate is texts over the time to its last answer. The load
client's headroom (its c64 rate against the null server and A's embedding /healthz) sits beside the rates."""

import asyncio
import itertools
import math
import secrets
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from embedding_service.lanes import ANONYMOUS
from perf.harness.client import http_request, one_hop
from perf.harness.headroom import headroom, headroom_targets
from perf.harness.load import TIMEOUT_S, Run, closed_calls, closed_run
from perf.harness.meters import counter
from perf.harness.progress import say
from perf.harness.report import Target, at_least, at_most, dig, info, num, side_by_side
from perf.harness.scenario import Context, Scenario
from perf.harness.stacks import Started, embedding, pipeline, running
from perf.harness.stats import figures, quotient, said
from perf.sentences import SENTENCES, new_texts
from stack.services import ORCHESTRATOR_LANE

WEB, BULK, REPEATS = "web", "bulk-job", "repeats"  # OpenAI's `user`: flows of the anonymous lane
LANES = (ORCHESTRATOR_LANE, ANONYMOUS)  # the lanes read: /classify's (the orchestrator's key) and the keyless
FAST, SLOW = "fast", "bulk"  # the weighted share's lanes: named API keys
SHARE_WEIGHTS = f"{ORCHESTRATOR_LANE}:4,{FAST}:4"  # the orchestrator's weight kept; `bulk` weighs 1, as any lane
SHARE_GOAL, SHARE_TOLERANCE = 0.8, 0.05
CALLERS, CALLER_NAMES = 2, {"interactive": "interactive", "classify": "/classify"}  # c2 each; name: as shown
BULK_WORKERS, BULK_TEXTS = 4, 256  # the flood: closed-loop workers, texts per request
RETRY_CAP_S = 2.0  # the longest a bulk worker waits out a 429's Retry-After
ZIPF_S, ZIPF_TEXTS, ZIPF_SEED = 1.1, 10_000, 20261201
HIGH, ENDLESS = 64, 10**9  # the repeats' and the headroom's concurrency; requests of a run that ends by time
CACHE_COUNTERS = {k: f"embedding_cache_{k}_total" for k in ("hits", "misses", "evictions")}
CACHE_COUNTERS["shared_in_flight"] = "embedding_inflight_shared_total"
LANE_COUNTERS = {k: f"embedding_lane_{k}_total" for k in ("texts", "tokens", "refusals")}
LANE_COUNTERS |= {"queue_s": "embedding_lane_queue_seconds_sum", "queued": "embedding_lane_queue_seconds_count"}
TITLE = "Fair lanes and the embedding cache"
# Each stack's embedding settings (EMBEDDING_* overrides by lower-case name), and what they make it.
POLICIES = {"a": ({"lanes": "true"}, "lanes on, cache on (its default size)")}
POLICIES["b"] = ({"lanes": "false", "cache_bytes": "0"}, "lanes off, cache off")
# The weighted share's (its API keys are made for each run). At a fifth of the encoder, bulk's requests of 64
# long texts can queue past the default 30 s timeout: raised to the client's (a 504 would waste their texts).
SHARE_SETTINGS = {"lane_weights": SHARE_WEIGHTS, "request_timeout_s": f"{TIMEOUT_S:g}"}
# name, the plan's duration field, with the callers, with the flood
PHASES = (("alone", "alone_s", True, False), ("flood", "flood_s", True, True), ("bulk_alone", "bulk_s", False, True))
NAMES, WHEN, QS = [name for name, *_ in PHASES], (("alone", "alone"), ("flood", "under the flood")), ("p50", "p99")
SENDERS = (*itertools.product(NAMES[:2], CALLER_NAMES), *itertools.product(NAMES[1:], ["bulk"]))  # phase, who
PAIRED = (  # a figure's name, its path in a stack's summary, and A's goal (B's for information)
    ("interactive p99 under the flood (ms)", "interactive.flood_ms.p99", at_most, 250),
    ("/classify p99 under the flood (ms)", "classify.flood_ms.p99", at_most, 300),
    ("bulk texts/s under the flood / alone", "bulk.ratio", at_least, 0.6),
    ("interactive and /classify errors, alone and under the flood", "callers_errors", at_most, 0),
    ("bulk errors other than 429", "bulk.errors", at_most, 0),
    ("bulk 429s", "bulk.refusals", None, 0),
    *((f"{shown} p99, under the flood / alone", f"{c}.p99_ratio", None, 0) for c, shown in CALLER_NAMES.items()),
)
NEIGHBOUR = (  # figures of a stack's; those of the targets table left out
    *((f"{n}: {q} ms {w}", f"summary.{c}.{a}_ms.{q}", 2) for c, n in CALLER_NAMES.items() for a, w in WHEN for q in QS),
    *((f"bulk: texts/s {when}", f"summary.bulk.{at}_texts_per_s", 2) for at, when in WHEN),
    ("cache hits over the three phases (every text new: 0)", "summary.cache_hits", 0),
    *((f"{name}: {who} requests", f"{name}.{who}.requests", 0) for name, who in SENDERS),
)
LANE_FIGURES = (("texts", "texts", 0), ("refusals", "refusals", 0), ("mean queue wait ms", "queue_mean_ms", 2))
REPEATS_ROWS = (  # figures of a repeats run
    *(("requests/s", "throughput_per_s", 1), ("p50 ms", "latency_ms.p50", 2), ("p99 ms", "latency_ms.p99", 2)),
    *(("errors", "errors", 0), *((f"cache {k}", f"cache.{k}", 0) for k in (*CACHE_COUNTERS, "bytes"))),
    ("hit rate", "hit_rate", 3),
)
SHARES_ROWS = (  # figures of a keyed lane's
    *(("workers", "sender.workers", 0), ("texts per request", "sender.texts_per_request", 0)),
    *(("texts", "texts", 0), ("tokens", "tokens", 0), ("tokens per text", "tokens_per_text", 1)),
    *(("tokens/s", "tokens_per_s", 0), ("mean queue wait ms", "queue_mean_ms", 2), ("requests", "run.outcomes", 0)),
)


@dataclass(frozen=True)
class Plan:
    mode: str
    xla: bool  # the embedding services' encoder XLA-compiled (quick: off, so they start in seconds)
    warm_s: float  # per stack: the callers and the flood together, not recorded
    alone_s: float  # (a) the callers alone
    flood_s: float  # (b) the flood sends this long; the callers run until its last answer
    bulk_s: float  # (c) the flood alone
    repeats: int  # requests per repeats run
    repeats_cap_s: float  # a bound on each repeats run, far above what it takes
    headroom_s: float  # each of the load client's headroom runs
    share_warm_s: float  # the weighted share: both lanes backlogged, not recorded
    share_s: float  # its window (its service's start and the last answers add a few seconds)


QUICK = Plan("quick", False, 1.0, 2.0, 3.0, 2.0, 800, 90.0, 1.0, 5.0, 20.0)
FULL = Plan("full", True, 5.0, 20.0, 30.0, 20.0, 10_000, 240.0, 4.0, 10.0, 60.0)


def embeddings_body(texts: str | list[str], user: str) -> bytes:
    return orjson.dumps({"input": texts, "encoding_format": "base64", "user": user})


def measured(run: Run, items_per_request: int = 1) -> dict[str, Any]:
    return figures(run, items_per_request=items_per_request) | {"errors": len(run.samples) - len(run.ok())}


async def flood(url: str, texts: Iterator[str], seconds: float, shape: tuple[int, int, str, str]) -> dict[str, Any]:
    """`shape`'s workers, each sending its number of new texts as its user (with its bearer key if any) when its
    last request is answered, for `seconds`, a 429 waiting out its Retry-After (at most RETRY_CAP_S) first."""
    (workers, size, user, key), waited = shape, []
    headers = {"content-type": "application/json"} | ({"authorization": f"Bearer {key}"} if key else {})
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S, headers=headers) as client:

        async def call(_: int) -> tuple[str, bytes]:
            try:
                body = embeddings_body([*itertools.islice(texts, size)], user)
                response = await client.post("/v1/embeddings", content=body)
            except httpx.HTTPError as exc:
                return type(exc).__name__, b""
            if response.status_code == 429:
                waited.append(min(float(response.headers.get("retry-after", "1")), RETRY_CAP_S))
                await asyncio.sleep(waited[-1])
            elif response.status_code == 200 and len(orjson.loads(response.content)["data"]) != size:
                return "200 short", b""
            return str(response.status_code), b""

        run = await closed_calls([call] * workers, requests=ENDLESS, duration_s=seconds, warm_up=False)
    found, refusals = measured(run, size), run.ok("429")
    found |= {"refusals": len(refusals), "errors": found["errors"] - len(refusals), "texts": len(run.ok()) * size}
    return found | {"retry_after_waited_s": sum(waited)}


async def lane_counts(client: httpx.AsyncClient, url: str, lanes: Sequence[str] = LANES, before: Any = None) -> Any:
    """The embedding service's per-lane counters and its cache hits; given those `before`, the figures since."""
    found = {"cache_hits": await counter(client, url, CACHE_COUNTERS["hits"])}
    for lane, (key, name) in itertools.product(lanes, LANE_COUNTERS.items()):
        found[f"{lane}/{key}"] = await counter(client, url, name, f'lane="{lane}"')
    if before is None:
        return found
    d = {key: found[key] - before[key] for key in found}
    per_lane = {n: {k: d[f"{n}/{k}"] for k in ("texts", "tokens", "refusals", "queued")} for n in lanes}
    for n, mine in per_lane.items():
        mine["queue_mean_ms"] = quotient(d[f"{n}/queue_s"] * 1e3, d[f"{n}/queued"])
    return {"cache_hits": d["cache_hits"], "lanes": per_lane}


async def phase(client: httpx.AsyncClient, up: dict[str, Started], texts: Iterator[str], s: float, how: Any) -> Any:
    """`how` (a PHASES row): the callers for `s` s, the flood for `s` s, or both, the callers until its last answer."""
    encoder, front = (next(v for k, v in up.items() if k.startswith(kind)) for kind in ("embedding", "orchestrator"))
    before, done, start = await lane_counts(client, encoder.url), asyncio.Event(), time.perf_counter()
    found: dict[str, Any] = {}
    routes = [
        one_hop(encoder.port, lambda _: http_request("POST", "/v1/embeddings", embeddings_body(next(texts), WEB))),
        one_hop(front.port, lambda _: http_request("POST", "/classify", orjson.dumps({"text": next(texts)}))),
    ]
    until = math.inf if how[3] else s
    call = partial(closed_run, concurrency=CALLERS, requests=ENDLESS, duration_s=until, stop=done)
    calling = [asyncio.create_task(call(route)) for route in routes[: 2 * how[2]]]
    if how[3]:
        found["bulk"] = await flood(encoder.url, texts, s, (BULK_WORKERS, BULK_TEXTS, BULK, ""))
        done.set()
    runs = await asyncio.gather(*calling)
    found |= {"wall_s": time.perf_counter() - start, **await lane_counts(client, encoder.url, before=before)}
    found |= {name: measured(run) for name, run in zip(CALLER_NAMES, runs, strict=False)}
    say(f"{how[0]}: " + "; ".join(f"{n} {said(found[n])}" for n in (*CALLER_NAMES, "bulk") if n in found))
    return found


async def neighbour(up: dict[str, Started], texts: Iterator[str], plan: Plan) -> dict[str, Any]:
    """A warm-up (the callers and the flood, not recorded), then (a), (b) and (c), and their summary."""
    async with httpx.AsyncClient(timeout=30.0) as client:
        await phase(client, up, texts, plan.warm_s, ("warm-up", "warm_s", True, True))
        found = {how[0]: await phase(client, up, texts, getattr(plan, how[1]), how) for how in PHASES}
    alone, flooded, bulk_alone = found.values()
    summary: dict[str, Any] = {}
    for caller, (one, two) in ((c, (alone[c], flooded[c])) for c in CALLER_NAMES):
        summary[caller] = {"alone_ms": one["latency_ms"], "flood_ms": two["latency_ms"]}
        summary[caller] |= {"p99_ratio": quotient(two["latency_ms"]["p99"], one["latency_ms"]["p99"])}
        summary[caller]["errors"] = one["errors"] + two["errors"]
    rates = (flooded["bulk"]["throughput_per_s"], bulk_alone["bulk"]["throughput_per_s"])
    summary["bulk"] = {"alone_texts_per_s": rates[1], "flood_texts_per_s": rates[0], "ratio": quotient(*rates)}
    summary["bulk"] |= {count: flooded["bulk"][count] + bulk_alone["bulk"][count] for count in ("refusals", "errors")}
    summary["callers_errors"] = sum(summary[caller]["errors"] for caller in CALLER_NAMES)
    summary["cache_hits"] = sum(p["cache_hits"] for p in found.values())
    return {**found, "summary": summary}


async def repeats_run(encoder: Started, plan: Plan) -> tuple[dict[str, Any], dict[str, Any]]:
    """`plan.repeats` Zipf draws (and HIGH opening ones) at c64, the cache's counters read around; and the workload."""
    weights = 1.0 / np.arange(1, ZIPF_TEXTS + 1) ** ZIPF_S
    drawn = np.random.default_rng(ZIPF_SEED).choice(ZIPF_TEXTS, size=plan.repeats + HIGH, p=weights / weights.sum())
    draws, work = drawn.tolist(), {"zipf_s": ZIPF_S, "texts": ZIPF_TEXTS, "seed": ZIPF_SEED, "sent": len(drawn)}
    work |= {"distinct_sent": len(set(draws)), "ideal_hit_rate": 1 - len(set(draws)) / len(draws)}
    texts = (f"{SENTENCES[k % len(SENTENCES)]} [{k // len(SENTENCES)}]" for k in range(ZIPF_TEXTS))
    bodies = [http_request("POST", "/v1/embeddings", embeddings_body(text, REPEATS)) for text in texts]
    sequence, url = iter(draws), encoder.url
    route = one_hop(encoder.port, lambda _: bodies[next(sequence)])
    async with httpx.AsyncClient(timeout=30.0) as client:
        before = {key: await counter(client, url, name) for key, name in CACHE_COUNTERS.items()}
        run = await closed_run(route, concurrency=HIGH, requests=len(draws) - HIGH, duration_s=plan.repeats_cap_s)
        cache = {key: await counter(client, url, name) - before[key] for key, name in CACHE_COUNTERS.items()}
        cache["bytes"] = await counter(client, url, "embedding_cache_bytes")
    return measured(run) | {"cache": cache, "hit_rate": quotient(cache["hits"], cache["hits"] + cache["misses"])}, work


async def shares_run(encoder: Started, keys: Mapping[str, str], plan: Plan) -> dict[str, Any]:
    """Both keyed lanes flooding from before a warm-up to past the window's end, so that both stay backlogged."""
    shapes = {FAST: (16, 16, FAST, keys[FAST]), SLOW: (4, 64, SLOW, keys[SLOW])}  # workers, texts, user, key
    texts = {FAST: new_texts(), SLOW: new_texts(8)}  # bulk's: 8 sentences and a counter, about 120 tokens
    seconds = plan.share_warm_s + plan.share_s + 1.0  # the second: reading the counters
    floods = [asyncio.create_task(flood(encoder.url, texts[lane], seconds, shape)) for lane, shape in shapes.items()]
    async with httpx.AsyncClient(timeout=30.0) as client:
        await asyncio.sleep(plan.share_warm_s)
        before, start = await lane_counts(client, encoder.url, tuple(shapes)), time.perf_counter()
        await asyncio.sleep(plan.share_s)
        found: dict[str, Any] = await lane_counts(client, encoder.url, tuple(shapes), before)
        found["wall_s"] = time.perf_counter() - start
    for (lane, (workers, size, *_)), run in zip(shapes.items(), await asyncio.gather(*floods), strict=True):
        mine = found["lanes"][lane]
        mine["sender"], mine["run"] = {"workers": workers, "texts_per_request": size}, run  # run: its warm-up too
        mine["tokens_per_s"] = mine["tokens"] / found["wall_s"]
        mine["tokens_per_text"] = quotient(mine["tokens"], mine["texts"])
    fast, slow = (found["lanes"][lane]["tokens"] for lane in shapes)
    found["fast_share"] = quotient(fast, fast + slow)
    say(f"weighted share: {FAST} {num(found['fast_share'], 3)} of the tokens")
    return found


def run(ctx: Context) -> dict[str, Any]:
    plan: Plan = ctx.plan
    ctx.settings["policies"] = {k: {"title": t, "embedding_settings": s} for k, (s, t) in POLICIES.items()}
    ctx.settings["policies"]["w"] = {"title": "keyed lanes fast:4, bulk:1", "embedding_settings": SHARE_SETTINGS}
    ctx.settings.update(users={"interactive": WEB, "bulk": BULK}, callers_concurrency=CALLERS, repeats_concurrency=HIGH)
    ctx.settings["lanes"] = {"orchestrator": ORCHESTRATOR_LANE, "keyless": ANONYMOUS, "weighted_share": [FAST, SLOW]}
    ctx.settings["bulk"] = {"workers": BULK_WORKERS, "texts_per_request": BULK_TEXTS, "retry_after_cap_s": RETRY_CAP_S}
    texts, stacks, repeats = new_texts(), {}, {}
    first = http_request("POST", "/v1/embeddings", embeddings_body(f"{SENTENCES[0]} [0]", REPEATS))  # the null server's
    with tempfile.TemporaryDirectory(prefix="lanes-") as folder:
        for k, (settings, title) in POLICIES.items():
            with running(ctx.stacks, pipeline(Path(folder), k, xla=plan.xla, embedding_settings=settings)) as up:
                say(f"stack {k.upper()}: {title}")
                found = asyncio.run(neighbour(up, texts, plan))
                stacks[k], encoder = {"title": title, "settings": settings, **found}, up[f"embedding-{k}"]
                repeats[k], repeats["workload"] = asyncio.run(repeats_run(encoder, plan))
                say(f"{k}, repeats: {said(repeats[k])}, {repeats[k]['cache']}")
                if k == "a":
                    room = headroom(ctx.stacks, lambda _: first, {"embedding": encoder}, duration_s=plan.headroom_s)
    keys = {lane: secrets.token_urlsafe(24) for lane in (FAST, SLOW)}
    api_keys = ",".join(f"{lane}:{key}" for lane, key in keys.items())
    with ctx.stacks.started(embedding("embedding-w", xla=plan.xla, api_keys=api_keys, **SHARE_SETTINGS)) as alone:
        shares = asyncio.run(shares_run(alone, keys, plan))
    repeats["throughput_ratio"] = repeats["a"]["throughput_per_s"] / repeats["b"]["throughput_per_s"]
    return {"stacks": stacks, "repeats": repeats, "headroom": room, "shares": shares}


def targets(results: dict[str, Any]) -> list[Target]:
    a, b = (results["stacks"][key]["summary"] for key in ("a", "b"))
    repeats, share = results["repeats"], results["shares"]["fast_share"]
    fastest = max(repeats["a"]["throughput_per_s"], repeats["b"]["throughput_per_s"])
    met = None if share is None else abs(share - SHARE_GOAL) <= SHARE_TOLERANCE
    return [
        *(goal(f"A: {n}", dig(a, p), limit) if goal else info(f"A: {n}", dig(a, p)) for n, p, goal, limit in PAIRED),
        *(info(f"B (lanes off): {n}", dig(b, p)) for n, p, *_ in PAIRED),
        at_least("repeats (Zipf, c64): cache on / cache off, requests/s", repeats["throughput_ratio"], 2.0),
        info("repeats: cache hit rate (A)", repeats["a"]["hit_rate"]),
        *headroom_targets(results["headroom"], fastest),
        Target(f"weighted share: {FAST}'s share of the tokens", share, f"{SHARE_GOAL:g} ± {SHARE_TOLERANCE:g}", met),
    ]


def checks(results: dict[str, Any]) -> list[str]:
    """What the run must show, speed aside: all answered, texts new, lanes and cache as configured."""
    stacks, repeats, shares = results["stacks"], results["repeats"], results["shares"]
    problems = [  # nothing else loads the services: every answer alone a 200
        f"{k.upper()}, {p}: {c} answered {s[p][c]['outcomes']}"
        for k, s in stacks.items()
        for p, c in itertools.product(("alone", "flood"), CALLER_NAMES)
        if not s[p][c]["latency_ms"]["p50"] or (p == "alone" and set(s[p][c]["outcomes"]) != {"200"})
    ]
    problems += [
        f"{k.upper()}, {p}: no bulk text" for k in stacks for p in NAMES[1:] if not stacks[k][p]["bulk"]["texts"]
    ]
    problems += [f"{k.upper()}: the cache answered a new text" for k, s in stacks.items() if s["summary"]["cache_hits"]]
    problems += [f"repeats on {k.upper()}: {repeats[k]['outcomes']}" for k in ("a", "b") if repeats[k]["errors"]]
    problems += [
        f"weighted share, {lane}: {f['texts']} texts, {f['run']['outcomes']}"
        for lane, f in shares["lanes"].items()
        if not 0 < f["texts"] < f["tokens"] or set(f["run"]["outcomes"]) != {"200"}
    ]
    a, b = ({lane: found["texts"] for lane, found in stacks[k]["flood"]["lanes"].items()} for k in ("a", "b"))
    on, off = repeats["a"]["cache"], repeats["b"]["cache"]
    null, healthz = (results["headroom"][name]["outcomes"] for name in ("null_server", "embedding_healthz"))
    fast, slow = (shares["lanes"][lane]["tokens_per_text"] for lane in (FAST, SLOW))
    cached, repeated = on["hits"] and on["misses"] and not (off["hits"] or off["bytes"]), shares["cache_hits"]
    wrong = {  # a problem: whether it is so
        f"A: /classify's and the keyless texts not each in their own lane: {a}": not all(a.values()),
        f"B (lanes off): texts not all in the one queue: {b}": b[ORCHESTRATOR_LANE] or not b[ANONYMOUS],
        f"repeats: the cache on A {on}, off on B {off}": not cached,
        f"headroom: {null}, {healthz}": set(null) != {"429"} or set(healthz) != {"200"},
        "weighted share: texts repeated, or bulk's not four times as long as fast's": repeated or slow <= 4 * fast,
    }
    problems += [problem for problem, so in wrong.items() if so]
    return problems


def tables(report: dict[str, Any]) -> list[str]:
    results, plan = report["results"], report["settings"]["plan"]
    stacks, repeats, shares = results["stacks"], results["repeats"], results["shares"]
    phases = {f"{k.upper()}, {name}": stacks[k][name]["lanes"] for k in ("a", "b") for name in NAMES}
    lanes = [(f"{lane}: {n}", f"{lane}.{path}", d) for lane in LANES for n, path, d in LANE_FIGURES]
    work, policies = repeats["workload"], {f"{k.upper()}: {title}": k for k, (_, title) in POLICIES.items()}
    return [
        "\n## Noisy neighbour\n",
        f"(a) the callers alone, {plan['alone_s']:g} s; (b) under the flood, which sends for {plan['flood_s']:g} s; "
        f"(c) the flood alone, {plan['bulk_s']:g} s. The flood's effect on p99s, errors and 429s: in the targets.\n",
        *side_by_side(NEIGHBOUR, {title: stacks[key] for title, key in policies.items()}),
        "\nPer lane, from the embedding service's counters over each phase:\n",
        *side_by_side(lanes, phases),
        "\n## Repeats\n",
        f"{work['sent']:,} requests (the first {HIGH} open the connections, unmeasured), {work['distinct_sent']:,} "
        f"distinct texts: an exact cache keeping all (no two misses of a text at once) would hit "
        f"{work['ideal_hit_rate']:.1%}. Cache on / off, requests/s: {num(repeats['throughput_ratio'])}.\n",
        *side_by_side(REPEATS_ROWS, {title: repeats[key] for title, key in policies.items()}),
        "\n## Weighted share\n",
        f"EMBEDDING_LANE_WEIGHTS={SHARE_WEIGHTS}; the lanes' counters over {plan['share_s']:g} s after "
        f"{plan['share_warm_s']:g} s of warm-up. `{FAST}`'s share of the tokens: **{num(shares['fast_share'], 3)}** "
        f"(its weight entitles it to {SHARE_GOAL:g}). Cache hits in the window (every text new: 0): "
        f"{shares['cache_hits']:.0f}. Requests: over the whole run, warm-up and tail too.\n",
        *side_by_side(SHARES_ROWS, shares["lanes"]),
    ]


FIGURES = (
    *(f"stacks.{k}.{p}.{c}.latency_ms.p99" for k in ("a", "b") for p in ("alone", "flood") for c in CALLER_NAMES),
    *(f"stacks.{k}.{p}.bulk.throughput_per_s" for k in ("a", "b") for p in ("flood", "bulk_alone")),
    *(f"stacks.{k}.{p}" for k in ("a", "b") for p in ("flood.lanes.anonymous.queue_mean_ms", "summary.bulk.ratio")),
    *(f"stacks.{k}.summary.{c}.p99_ratio" for k in ("a", "b") for c in CALLER_NAMES),
    *(f"repeats.{k}.{p}" for k in ("a", "b") for p in ("throughput_per_s", "latency_ms.p99", "cache.misses")),
    *("repeats.a.hit_rate", "repeats.workload.ideal_hit_rate", "repeats.throughput_ratio", "shares.fast_share"),
    *(f"headroom.{name}.requests_per_s" for name in ("null_server", "embedding_healthz")),
    *(f"shares.lanes.{lane}.tokens_per_text" for lane in (FAST, SLOW)),
)
SCENARIO = Scenario("lanes", TITLE, {"quick": QUICK, "full": FULL}, run, targets, tables, FIGURES, checks)
