"""The head registry's rules, in-process over a stand-in for TF Serving's status and metadata calls."""

import asyncio
from pathlib import Path

import pytest

from orchestrator.heads import HeadRegistry, configured_heads
from orchestrator.labels import LabelCatalog
from service_common.deadline import Deadline
from service_common.errors import BadGatewayError, NotFoundError
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
    """Each model's available versions and their input dimensions; counts metadata and label reads."""

    def __init__(self, models: dict[str, dict[int, int]]) -> None:
        self.models = models
        self.reads: list[tuple[str, int]] = []

    async def versions(self, model: str, timeout_s: float) -> list[int]:
        return sorted(self.models.get(model, {}))

    async def input_dimension(self, model: str, version: int, timeout_s: float) -> int | None:
        self.reads.append((model, version))
        return self.models[model][version]

    async def label_names(self, model: str, version: int, dimensions: int, deadline: Deadline) -> list[str]:
        return [f"{model}-a", f"{model}-b"]


async def refreshed(tmp_path: Path, serving: Serving, *names: str, dimensions: int = 384) -> HeadRegistry:
    write_config(tmp_path / "models.config", *names)
    registry = HeadRegistry(tmp_path / "models.config", "sentiment")
    await registry.refresh(serving, LabelCatalog(serving, 1.0), dimensions, 1.0)  # type: ignore[arg-type]
    return registry


def test_the_names_come_from_tf_servings_own_config_file() -> None:
    assert configured_heads(services.MODELS_CONFIG) == ["sentiment", "topic"]


async def test_heads_versions_labels_and_dimensions_are_read_once_per_version(tmp_path: Path) -> None:
    serving = Serving({"sentiment": {1: 384}, "topic": {1: 384, 2: 384}})
    registry = await refreshed(tmp_path, serving, "sentiment", "topic")
    topic = registry.check("topic", "head")
    assert [(v.version, v.input_dimension, v.labels) for v in topic.versions] == [
        (1, 384, ["topic-a", "topic-b"]),
        (2, 384, ["topic-a", "topic-b"]),
    ]
    await registry.refresh(serving, LabelCatalog(serving, 1.0), 384, 1.0)  # type: ignore[arg-type]
    assert sorted(serving.reads) == [("sentiment", 1), ("topic", 1), ("topic", 2)]
    assert registry.not_ready_reason() is None and registry.problems() == {}


async def test_a_head_for_another_embedding_size_is_refused_and_the_others_serve(tmp_path: Path) -> None:
    registry = await refreshed(tmp_path, Serving({"sentiment": {1: 384}, "wide": {1: 768}}), "sentiment", "wide")
    assert registry.not_ready_reason() is None  # the default head is fine
    assert "768-dimensional" in registry.problems()["wide"]
    with pytest.raises(BadGatewayError) as refused:
        registry.check("wide", "heads[1]")
    assert "'wide'" in refused.value.message and refused.value.status_code == 502
    registry.check("sentiment", "head")


async def test_unknown_and_versionless_heads(tmp_path: Path) -> None:
    registry = await refreshed(tmp_path, Serving({"sentiment": {1: 384}}), "sentiment", "pending")
    with pytest.raises(NotFoundError) as unknown:
        registry.check("nope", "heads[0]")
    assert unknown.value.param == "heads[0]" and "pending, sentiment" in unknown.value.message
    assert registry.check("pending", "head").versions == []  # the call itself will report it exactly
    assert "has no available version" in registry.problems()["pending"]


async def test_before_the_config_is_read_no_name_is_unknown(tmp_path: Path) -> None:
    registry = HeadRegistry(tmp_path / "missing.config", "sentiment")
    assert registry.check("anything", "head").name == "anything"
    assert "cannot read" not in (registry.not_ready_reason() or "")


async def test_the_default_heads_problem_is_what_makes_it_not_ready(tmp_path: Path) -> None:
    registry = await refreshed(tmp_path, Serving({"topic": {1: 384}}), "sentiment", "topic")
    assert "'sentiment' has no available version" in (registry.not_ready_reason() or "")
    missing = await refreshed(tmp_path, Serving({"topic": {1: 384}}), "topic")
    assert "not in" in (missing.not_ready_reason() or "")


async def test_heads_added_to_or_removed_from_the_config_follow_it(tmp_path: Path) -> None:
    serving = Serving({"sentiment": {1: 384}, "topic": {1: 384}})
    registry = await refreshed(tmp_path, serving, "sentiment")
    assert [h.name for h in registry.heads] == ["sentiment"]
    write_config(tmp_path / "models.config", "sentiment", "topic")
    await registry.refresh(serving, LabelCatalog(serving, 1.0), 384, 1.0)  # type: ignore[arg-type]
    assert [h.name for h in registry.heads] == ["sentiment", "topic"]
    write_config(tmp_path / "models.config", "topic")
    await registry.refresh(serving, LabelCatalog(serving, 1.0), 384, 1.0)  # type: ignore[arg-type]
    assert [h.name for h in registry.heads] == ["topic"]
    (tmp_path / "models.config").write_text("model_config_list { config { name: ")  # broken: kept as it was
    await registry.refresh(serving, LabelCatalog(serving, 1.0), 384, 1.0)  # type: ignore[arg-type]
    assert [h.name for h in registry.heads] == ["topic"]


async def test_no_name_is_unknown_while_the_first_look_is_under_way(tmp_path: Path) -> None:
    serving = Serving({"sentiment": {1: 384}})
    release = asyncio.Event()
    looked = serving.versions

    async def slow_versions(model: str, timeout_s: float) -> list[int]:
        await release.wait()
        return await looked(model, timeout_s)

    serving.versions = slow_versions  # type: ignore[method-assign]
    write_config(tmp_path / "models.config", "sentiment")
    registry = HeadRegistry(tmp_path / "models.config", "sentiment")
    refreshing = asyncio.create_task(registry.refresh(serving, LabelCatalog(serving, 1.0), 384, 1.0))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    assert registry.check("sentiment", "head").name == "sentiment"  # not a 404 mid-refresh
    release.set()
    await refreshing
    with pytest.raises(NotFoundError):
        registry.check("nope", "head")
