"""The README's configuration table lists every setting, and nothing that is not one."""

import re

from embedding_service.settings import EmbeddingSettings
from tests.servers import ROOT


def test_every_embedding_setting_is_documented_and_nothing_else() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(EMBEDDING_[A-Z_]+)` \|", readme, flags=re.MULTILINE))
    settings = {f"EMBEDDING_{name.upper()}" for name in EmbeddingSettings.model_fields}
    assert documented == settings


def test_documented_defaults_are_the_real_defaults() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `EMBEDDING_([A-Z_]+)` \| `([^`]*)` \|", readme, flags=re.MULTILINE))
    for name, field in EmbeddingSettings.model_fields.items():
        default = field.default
        expected = str(default).lower() if isinstance(default, bool) else str(default).removesuffix(".0")
        assert rows[name.upper()] == expected, name
