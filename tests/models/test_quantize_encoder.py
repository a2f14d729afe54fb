"""models.quantize_encoder: the int8 contract (min cosine >= 0.99, no head more than a point below fp32) and a
build that misses it, which says by how much and writes nothing. (The real build is `make models-int8`'s,
checked in tests/embedding_service/test_precision_served.py.)"""

from pathlib import Path

import pytest

from embedding_service.int8_manifest import INT8_DIR, CheckedHead, Fidelity
from models.quantize_encoder import CALIBRATION, contract_misses, main
from models.train_head import DATA, SHIPPED_HEADS

HOLDS = Fidelity(min_cosine=0.996, mean_cosine=0.999, texts=360)


def head(fp32: float, int8: float) -> CheckedHead:
    return CheckedHead(name="topic", version=1, fp32_accuracy=fp32, int8_accuracy=int8, examples=200)


@pytest.mark.parametrize(
    ("fidelity", "heads", "misses"),
    [
        (HOLDS, [head(0.93, 0.93), head(0.88, 0.89)], []),
        (HOLDS, [head(0.93, 0.92)], []),  # exactly one point: within
        (Fidelity(min_cosine=0.99, mean_cosine=0.995, texts=360), [], []),  # exactly the floor: within
        (
            Fidelity(min_cosine=0.9812, mean_cosine=0.995, texts=360),
            [],
            ["min cosine to fp32 0.9812 is 0.0088 below 0.99"],
        ),
        (
            HOLDS,
            [head(0.93, 0.915)],
            [
                "head topic version 1: held-out accuracy 0.9150 at int8 is 1.50 points below fp32's 0.9300, "
                "0.50 over the 1-point limit"
            ],
        ),
    ],
)
def test_the_contract(fidelity: Fidelity, heads: list[CheckedHead], misses: list[str]) -> None:
    assert contract_misses(fidelity, heads) == misses


def test_the_calibration_texts_are_neither_held_out_nor_benchmark_texts() -> None:
    from perf.sentences import SENTENCES

    calibration = set(CALIBRATION.read_text(encoding="utf-8").splitlines())
    held_out = {
        line.split("\t", 1)[1]
        for name in SHIPPED_HEADS
        for line in (DATA / name / "test.tsv").read_text("utf-8").splitlines()
    }
    assert len(calibration) >= 100
    assert not calibration & held_out and not calibration & set(SENTENCES)


@pytest.mark.slow
def test_a_build_that_misses_writes_nothing_and_says_by_how_much(
    tiny_encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A floor no int8 model can reach (a build may ask for more than 0.99, never less)."""
    with pytest.raises(
        SystemExit, match=r"misses its contract; not written:\n  min cosine to fp32 [01]\.\d{4} is 1\.\d{4} below 2\.0"
    ):
        main(["--encoder", str(tiny_encoder), "--heads", str(tmp_path / "no-heads"), "--min-cosine", "2.0"])
    assert not (tiny_encoder / INT8_DIR).exists()
    assert "no version under" in capsys.readouterr().out  # heads it could not check are named, and never fed
    with pytest.raises(SystemExit):
        main(["--encoder", str(tiny_encoder), "--min-cosine", "0.98"])
    assert "a build may only ask for more" in capsys.readouterr().err
