"""The head registry's rules, in-process over a stand-in for TF Serving's status, metadata and constant
signatures: which heads are served, each version's facts read once, and which version a head's texts go to
for which encoder."""

import asyncio
from pathlib import Path

import pytest

from orchestrator.clients.head import ENCODER_SIGNATURE, LABELS_SIGNATURE, PROBABILITIES_SIGNATURE, Signatures
from orchestrator.heads import HeadRegistry, configured_heads, version_problem
from orchestrator.versions import VersionCatalog
from service_common.deadline import Deadline
from service_common.errors import BadGatewayError, DeadlineExceededError, NotFoundError, UnavailableError
from stack import services

CONFIG = """
model_config_list {{
{models}
}}
"""


def write_config(path: Path, *names: str) -> None:
    models = "\n".join(
        f'  config {{ name: "{name}" base_path: "/models/heads/{name}" model_platform: "tensorflow" '
        "model_version_policy { latest { num_versions: 1 } } }"
        for name in names
    )
    path.write_text(CONFIG.format(models=models))


class Serving:
    """Each model's available versions and the encoder each was trained on (None: no stamp); counts
    metadata reads and status calls, which wait while `release` is clear."""

    def __init__(self, models: dict[str, dict[int, str | None]]) -> None:
        self.models = models
        self.reads: list[tuple[str, int]] = []
        self.looks = 0
        self.failing = False  # its calls answer 503 head_unavailable
        self.down: str | None = None  # the protocol's: never down as a retry rule counts it
        self.release = asyncio.Event()
        self.release.set()

    async def versions(self, model: str, timeout_s: float) -> list[int]:
        self.looks += 1
        await self.release.wait()
        if self.failing:
            raise UnavailableError("the head at x is unavailable", code="head_unavailable")
        return sorted(self.models.get(model, {}))

    async def signatures(self, model: str, version: int, timeout_s: float) -> Signatures:
        self.reads.append((model, version))
        names = {PROBABILITIES_SIGNATURE, LABELS_SIGNATURE}
        return Signatures(384, frozenset(names | ({ENCODER_SIGNATURE} if self.models[model][version] else set())))

    async def constants(
        self, model: str, version: int, signature: str, dimensions: int, deadline: Deadline
    ) -> list[str]:
        if signature == ENCODER_SIGNATURE:
            return [str(self.models[model][version])]
        return [f"{model}-a", f"{model}-b"]


async def refreshed(tmp_path: Path, serving: Serving, *names: str) -> HeadRegistry:
    write_config(tmp_path / "models.config", *names)
    registry = HeadRegistry(tmp_path / "models.config", "sentiment")
    await refresh(registry, serving)
    return registry


async def refresh(registry: HeadRegistry, serving: Serving) -> None:
    await registry.refresh(serving, VersionCatalog(serving, 1.0), 1.0)  # type: ignore[arg-type]


def test_the_names_come_from_tf_servings_own_config_file() -> None:
    assert configured_heads(services.MODELS_CONFIG) == ["sentiment", "topic"]


async def test_each_versions_labels_and_encoder_are_read_once(tmp_path: Path) -> None:
    serving = Serving({"sentiment": {1: "e1"}, "topic": {1: None, 2: "e1"}})
    catalog = VersionCatalog(serving, 1.0)  # type: ignore[arg-type]
    write_config(tmp_path / "models.config", "sentiment", "topic")
    registry = HeadRegistry(tmp_path / "models.config", "sentiment")
    await registry.refresh(serving, catalog, 1.0)  # type: ignore[arg-type]
    topic = registry.get("topic")
    assert topic is not None
    assert [(v.version, v.input_dimension, v.labels, v.encoder) for v in topic.versions] == [
        (1, 384, ["topic-a", "topic-b"], None),
        (2, 384, ["topic-a", "topic-b"], "e1"),
    ]
    await registry.refresh(serving, catalog, 1.0)  # type: ignore[arg-type]
    assert sorted(serving.reads) == [("sentiment", 1), ("topic", 1), ("topic", 2)]
    assert registry.not_ready_reason({"e1"}) is None


async def test_a_head_takes_the_encoder_of_its_newest_version_whose_encoder_is_served(tmp_path: Path) -> None:
    registry = await refreshed(tmp_path, Serving({"sentiment": {1: "e1", 2: "e2"}}), "sentiment")
    assert registry.route("sentiment", "head", {"e1"}) == "e1"  # e2 not served yet: version 1 answers
    assert registry.route("sentiment", "head", {"e1", "e2"}) == "e2"  # e2 served: the new version answers
    old, new = registry.version_for("sentiment", "e1"), registry.version_for("sentiment", "e2")
    assert (old and old.version, new and new.version) == (1, 2)
    assert registry.version_for("sentiment", "e3") is None  # never a version of another encoder


async def test_a_head_no_served_encoder_can_feed_is_refused_naming_both_encoders(tmp_path: Path) -> None:
    registry = await refreshed(tmp_path, Serving({"sentiment": {1: "e1"}, "old": {3: "e0"}}), "sentiment", "old")
    with pytest.raises(BadGatewayError) as refused:
        registry.route("old", "heads[1]", {"e1"})
    assert refused.value.code == "encoder_mismatch" and refused.value.param == "heads[1]"
    assert "e0" in refused.value.message and "e1" in refused.value.message and "version 3" in refused.value.message
    assert registry.not_ready_reason({"e1"}) is None  # only the default head decides readiness
    assert "encoder e1" in (registry.not_ready_reason({"e9"}) or "")  # the default head's encoder gone


async def test_a_version_without_a_stamp_is_refused_with_the_command_that_stamps_it(tmp_path: Path) -> None:
    registry = await refreshed(tmp_path, Serving({"sentiment": {1: None}}), "sentiment")
    with pytest.raises(BadGatewayError) as refused:
        registry.route("sentiment", "head", {"e1"})
    assert refused.value.code == "unstamped_head" and "models.stamp_head" in refused.value.message
    assert registry.version_for("sentiment", "e1") is None
    assert "no encoder stamp" in (registry.not_ready_reason({"e1"}) or "")


async def test_unknown_and_versionless_heads(tmp_path: Path) -> None:
    registry = await refreshed(tmp_path, Serving({"sentiment": {1: "e1"}}), "sentiment", "pending")
    with pytest.raises(NotFoundError) as unknown:
        registry.route("nope", "heads[0]", {"e1"})
    assert unknown.value.param == "heads[0]" and "pending, sentiment" in unknown.value.message
    with pytest.raises(UnavailableError) as pending:
        registry.route("pending", "head", {"e1"})
    assert pending.value.code == "head_unavailable" and "no available version" in pending.value.message


async def test_before_the_config_is_read_no_name_is_unknown(tmp_path: Path) -> None:
    registry = HeadRegistry(tmp_path / "missing.config", "sentiment")
    registry.known("anything", "head")
    with pytest.raises(UnavailableError):
        registry.route("anything", "head", {"e1"})
    assert "cannot read" not in (registry.not_ready_reason({"e1"}) or "")


async def test_the_default_heads_problem_is_what_makes_it_not_ready(tmp_path: Path) -> None:
    registry = await refreshed(tmp_path, Serving({"topic": {1: "e1"}}), "sentiment", "topic")
    assert "'sentiment' has no available version" in (registry.not_ready_reason({"e1"}) or "")
    missing = await refreshed(tmp_path, Serving({"topic": {1: "e1"}}), "topic")
    assert "not in" in (missing.not_ready_reason({"e1"}) or "")


async def test_a_head_that_cannot_be_read_keeps_the_versions_known_before(tmp_path: Path) -> None:
    serving = Serving({"sentiment": {1: "e1"}})
    registry = await refreshed(tmp_path, serving, "sentiment")
    serving.failing = True
    await refresh(registry, serving)
    head = registry.get("sentiment")
    assert head is not None and "cannot be read" in (head.problem or "")
    assert registry.route("sentiment", "head", {"e1"}) == "e1"  # the call finds out whether version 1 answers


async def test_concurrent_rereads_of_a_head_share_one_look(tmp_path: Path) -> None:
    serving = Serving({"sentiment": {1: "e1"}})
    registry = await refreshed(tmp_path, serving, "sentiment")
    serving.models["sentiment"] = {2: "e2"}
    catalog = VersionCatalog(serving, 1.0)  # type: ignore[arg-type]
    looks = serving.looks
    rereads = (registry.reread(serving, catalog, "sentiment", Deadline(1), 1.0) for _ in range(5))  # type: ignore[arg-type]
    await asyncio.gather(*rereads)
    assert serving.looks == looks + 1
    assert registry.route("sentiment", "head", {"e1", "e2"}) == "e2"


async def test_heads_added_to_or_removed_from_the_config_follow_it(tmp_path: Path) -> None:
    serving = Serving({"sentiment": {1: "e1"}, "topic": {1: "e1"}})
    registry = await refreshed(tmp_path, serving, "sentiment")
    assert [h.name for h in registry.heads] == ["sentiment"]
    write_config(tmp_path / "models.config", "sentiment", "topic")
    await refresh(registry, serving)
    assert [h.name for h in registry.heads] == ["sentiment", "topic"]
    write_config(tmp_path / "models.config", "topic")
    await refresh(registry, serving)
    assert [h.name for h in registry.heads] == ["topic"]
    (tmp_path / "models.config").write_text("model_config_list { config { name: ")  # broken: kept as it was
    await refresh(registry, serving)
    assert [h.name for h in registry.heads] == ["topic"]


async def test_no_name_is_unknown_while_the_first_look_is_under_way(tmp_path: Path) -> None:
    serving = Serving({"sentiment": {1: "e1"}})
    serving.release.clear()
    write_config(tmp_path / "models.config", "sentiment")
    registry = HeadRegistry(tmp_path / "models.config", "sentiment")
    refreshing = asyncio.create_task(refresh(registry, serving))
    await asyncio.sleep(0.01)
    registry.known("sentiment", "head")  # not a 404 mid-refresh
    serving.release.set()
    await refreshing
    with pytest.raises(NotFoundError):
        registry.known("nope", "head")


async def test_a_reread_that_outlasts_a_callers_deadline_is_a_504_and_still_serves_the_patient(tmp_path: Path) -> None:
    serving = Serving({"sentiment": {1: "e1"}})
    registry = await refreshed(tmp_path, serving, "sentiment")
    serving.models["sentiment"] = {2: "e2"}
    serving.release.clear()
    catalog = VersionCatalog(serving, 1.0)  # type: ignore[arg-type]
    patient = asyncio.create_task(registry.reread(serving, catalog, "sentiment", Deadline(5), 5.0))  # type: ignore[arg-type]
    with pytest.raises(DeadlineExceededError) as impatient:
        await registry.reread(serving, catalog, "sentiment", Deadline(0.01), 5.0)  # type: ignore[arg-type]
    assert impatient.value.code == "head_timeout"
    serving.release.set()
    await patient  # the shared look ran on its own budget, not the impatient caller's
    assert registry.route("sentiment", "head", {"e1", "e2"}) == "e2"


async def test_a_version_number_served_again_is_read_anew_never_taken_for_what_it_was(tmp_path: Path) -> None:
    serving = Serving({"sentiment": {1: "e1", 2: "e2"}})
    catalog = VersionCatalog(serving, 1.0)  # type: ignore[arg-type]
    write_config(tmp_path / "models.config", "sentiment")
    registry = HeadRegistry(tmp_path / "models.config", "sentiment")
    await registry.refresh(serving, catalog, 1.0)  # type: ignore[arg-type]
    serving.models["sentiment"] = {1: "e1"}  # version 2 rolled back...
    await registry.refresh(serving, catalog, 1.0)  # type: ignore[arg-type]
    serving.models["sentiment"] = {1: "e1", 2: "e1"}  # ...and its number reused for a head trained on e1
    await registry.refresh(serving, catalog, 1.0)  # type: ignore[arg-type]
    again = registry.version_for("sentiment", "e1")
    assert again is not None and again.version == 2 and registry.version_for("sentiment", "e2") is None


async def test_a_head_goes_to_an_encoder_a_ready_service_serves_when_one_of_its_versions_allows(
    tmp_path: Path,
) -> None:
    registry = await refreshed(tmp_path, Serving({"sentiment": {1: "e1", 2: "e2"}}), "sentiment")
    assert registry.route("sentiment", "head", {"e1", "e2"}, ready={"e1"}) == "e1"  # e2's service is down
    assert registry.route("sentiment", "head", {"e1", "e2"}, ready=set()) == "e2"  # none up: the newest
    assert registry.route("sentiment", "head", {"e1", "e2"}, ready={"e1", "e2"}) == "e2"


async def test_a_malformed_stamp_is_never_an_encoder_and_says_so(tmp_path: Path) -> None:
    registry = await refreshed(tmp_path, Serving({"sentiment": {1: "not hex"}}), "sentiment")
    head = registry.get("sentiment")
    assert head is not None
    assert "malformed encoder stamp" in (version_problem(head.versions[0], {"not hex"}) or "")


async def test_a_head_looked_at_before_the_first_refresh_is_kept(tmp_path: Path) -> None:
    """A request to an orchestrator just started routes its head before the monitor's first look."""
    serving = Serving({"sentiment": {1: "e1"}})
    write_config(tmp_path / "models.config", "sentiment")
    registry = HeadRegistry(tmp_path / "models.config", "sentiment")
    catalog = VersionCatalog(serving, 1.0)  # type: ignore[arg-type]
    await registry.reread(serving, catalog, "sentiment", Deadline(1), 1.0)  # type: ignore[arg-type]
    assert registry.route("sentiment", "head", {"e1"}) == "e1"
