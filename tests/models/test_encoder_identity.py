"""The encoder identity on tiny random checkpoints, in-process: what changes it (everything that changes the
vectors or the tokens the service feeds them) and what does not (how and where the weights are saved, the
pooler, the tokenizer's truncation and padding), and the manifest of an export made before identities."""

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from embedding_service.manifest import IDENTITY_PATTERN, MANIFEST_FILE, EncoderManifest
from embedding_service.tokenizer import Tokenizer
from models import encoder_identity as identity_module
from models.checkpoint import Checkpoint
from models.encoder_identity import encoder_identity
from tests.models.tiny_checkpoint import write_tiny_checkpoint

Edit = Callable[[Path], None]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("identity") / "ckpt"
    write_tiny_checkpoint(path)
    return path


def identity_of(path: Path) -> str:
    return encoder_identity(Checkpoint.read(path))


def edited(base: Path, tmp_path: Path, edit: Edit) -> Path:
    copy = tmp_path / "edited"
    shutil.copytree(base, copy)
    edit(copy)
    return copy


def edit_json(relative: str, **fields: object) -> Edit:
    """Sets top-level fields of a JSON object file in the checkpoint."""

    def apply(path: Path) -> None:
        target = path / relative
        target.write_text(json.dumps({**json.loads(target.read_text(encoding="utf-8")), **fields}), encoding="utf-8")

    return apply


def without_normalize(path: Path) -> None:
    modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
    (path / "modules.json").write_text(json.dumps([m for m in modules if "Normalize" not in m["type"]]))


def edit_weights(change: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], **metadata: str) -> Edit:
    def apply(path: Path) -> None:
        save_file(change(load_file(str(path / "model.safetensors"))), str(path / "model.safetensors"), metadata)

    return apply


def nudged(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    name = "bert.encoder.layer.1.output.dense.bias"
    return {**tensors, name: tensors[name] + np.float32(1e-3)}


def with_pooler(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        **tensors,
        "bert.pooler.dense.weight": rng.normal(size=(32, 32)).astype(np.float32),
        "bert.pooler.dense.bias": rng.normal(size=32).astype(np.float32),
        "bert.embeddings.position_ids": np.arange(64, dtype=np.int64)[np.newaxis],
    }


def unprefixed_in_reverse(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Named as BertModel names them (the tiny checkpoint's are BertForPreTraining's `bert.` names)."""
    assert all(name.startswith("bert.") for name in tensors)
    return {name.removeprefix("bert."): np.array(value) for name, value in sorted(tensors.items(), reverse=True)}


def renamed_vocabulary_entry(path: Path) -> None:
    """`film` becomes `movie`, keeping its id, in both the fast tokenizer's JSON and vocab.txt."""
    tokenizer = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tokenizer["model"]["vocab"]
    tokenizer["model"]["vocab"] = {("movie" if token == "film" else token): index for token, index in vocab.items()}
    (path / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    text = (path / "vocab.txt").read_text(encoding="utf-8")
    (path / "vocab.txt").write_text(text.replace("\nfilm\n", "\nmovie\n"), encoding="utf-8")


# Each edit changes what the vectors are, so each must change the identity. The bug each catches: that
# part of the recipe left out of the hashed description.
CHANGES: dict[str, Edit] = {
    "pooling": edit_json("1_Pooling/config.json", pooling_mode_mean_tokens=False, pooling_mode_cls_token=True),
    "normalize": without_normalize,
    "max_seq_length": edit_json("sentence_bert_config.json", max_seq_length=24),
    "lower-casing": edit_json("tokenizer_config.json", do_lower_case=False),
    "vocabulary entry": renamed_vocabulary_entry,
    "one weight": edit_weights(nudged),
    "activation": edit_json("config.json", hidden_act="relu"),
    "layer norm epsilon": edit_json("config.json", layer_norm_eps=1e-6),
    "attention heads": edit_json("config.json", num_attention_heads=2),
}


def test_the_identity_is_16_hex_digits_and_the_same_each_time(base: Path) -> None:
    """Bug caught: anything unstable in the description (a set's order, a temporary path, a time)."""
    first = identity_of(base)
    assert re.fullmatch(IDENTITY_PATTERN, first)
    assert identity_of(base) == first


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_what_changes_the_vectors_changes_the_identity(base: Path, tmp_path: Path, change: str) -> None:
    assert identity_of(edited(base, tmp_path, CHANGES[change])) != identity_of(base)


@pytest.mark.parametrize("change", ["lower-casing", "vocabulary entry"])
def test_a_tokenizer_change_is_one_the_embedding_service_runs(base: Path, tmp_path: Path, change: str) -> None:
    """The tokenizer edits above are real: the service's own tokenizer (as it loads the exported tokenizer
    directory) gives other ids for them, so the identity follows what the service runs."""
    probe = ["GOOD film"]
    before = Tokenizer(base, 32)(probe)[0].ids
    after = Tokenizer(edited(base, tmp_path, CHANGES[change]), 32)(probe)[0].ids
    assert before.tolist() != after.tolist()


# Edits that leave the vectors as they are, so the identity must stay. The bug each catches in turn: the
# file's bytes (or its tensor order, or the `bert.` prefix) hashed; the pooler not skipped like load_bert
# skips it; the tokenizer's truncation and padding (which the service turns off) hashed; the path hashed.
SAME: dict[str, Edit] = {
    "re-saved in another order, unprefixed, with metadata": edit_weights(unprefixed_in_reverse, format="pt"),
    "unused weights added": edit_weights(with_pooler),
    "tokenizer truncation and padding": edit_json(
        "tokenizer.json",
        truncation={"direction": "Right", "max_length": 16, "strategy": "LongestFirst", "stride": 0},
        padding={
            "strategy": "BatchLongest",
            "direction": "Right",
            "pad_to_multiple_of": None,
            "pad_id": 0,
            "pad_type_id": 0,
            "pad_token": "[PAD]",
        },
    ),
    "moved": lambda path: None,
}


@pytest.mark.parametrize("change", sorted(SAME))
def test_what_leaves_the_vectors_alone_keeps_the_identity(base: Path, tmp_path: Path, change: str) -> None:
    assert identity_of(edited(base, tmp_path, SAME[change])) == identity_of(base)


def test_the_recipe_version_is_part_of_the_identity(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug caught: the format version left out, so a changed recipe could give an old identity new meaning."""
    before = identity_of(base)
    monkeypatch.setattr(identity_module, "FORMAT_VERSION", identity_module.FORMAT_VERSION + 1)
    assert identity_of(base) != before


def test_a_manifest_from_before_identities_says_to_re_export(tmp_path: Path) -> None:
    """Bug caught: pydantic's bare 'Field required', which does not say what to do."""
    manifest = {
        "model_name": "m",
        "embedding_dim": 32,
        "max_seq_length": 32,
        "pooling": "mean",
        "normalize": True,
        "vocab_size": 49,
        "source": "somewhere",
    }
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ValueError, match=r"exported before identities existed; re-export it with `python -m models"):
        EncoderManifest.read(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({**manifest, "identity": "0123456789abcdef"}), encoding="utf-8")
    assert EncoderManifest.read(tmp_path).identity == "0123456789abcdef"
