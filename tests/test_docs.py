"""The repository is self-contained: every relative link in its Markdown resolves to a path inside it (and
to a heading there, when it names one), its documents (README.md and docs/) link nothing outside it, and no
file refers to a sibling checkout or to a path on the machine it was written on. The documents are one set:
the README indexes every page of docs/, no paragraph is written twice, and docs/benchmarks.md indexes every
committed result and links every benchmark scenario."""

import os
import re
import subprocess
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

from perf.scenarios import NAMES as SCENARIOS
from stack.services import ROOT

# Built from parts, so this file does not contain what it looks for.
FORBIDDEN = ("/".join(("..", "shared")), "/".join(("", "work", "shared")))

# Where a walk (no git available) never looks: environments, build outputs, third-party tools.
SKIPPED_DIRS = frozenset(
    {".git", ".venv", "build", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
)
SKIPPED_PREFIXES = ("deploy/tools/",)

TEXT_SUFFIXES = frozenset({".md", ".py", ".yaml", ".yml", ".toml", ".cfg", ".ini", ".sh", ".config", ".txt"})
TEXT_NAMES = frozenset({"Makefile", "Dockerfile", ".dockerignore", ".gitignore"})

ALLOWED_SCHEMES = ("http://", "https://", "mailto:")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[`~]*[ \t]*$", re.MULTILINE | re.DOTALL)
# On one line: wrapped code spans are rare, and table rows hold empty ones (``) that must not pair up.
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)")
INLINE = re.compile(r"\]\(\s*(<[^<>\n]*>|[^)\s]*)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]\n]+\]:[ \t]*(<[^<>\n]*>|\S+)", re.MULTILINE)
ANGLE = re.compile(r"<([^<>\s]+)>")
HTML_ATTRIBUTE = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)[ \t]*#*[ \t]*$", re.MULTILINE)
# Prose shorter than this may repeat (a "see X" line); longer paragraphs and list items are written once.
PARAGRAPH_MIN_CHARS = 120


def _repository_files() -> list[str]:
    """Tracked files and new ones git does not ignore, relative to the root, with `/` separators."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        return sorted(_walk())
    return sorted(name for name in listed.split("\0") if name)


def _walk() -> list[str]:
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [name for name in dirs if name not in SKIPPED_DIRS and not name.endswith(".egg-info")]
        found += [(Path(folder) / name).relative_to(ROOT).as_posix() for name in files]
    return found


def _existing(names: list[str]) -> list[Path]:
    return [ROOT / name for name in names if not name.startswith(SKIPPED_PREFIXES) and (ROOT / name).is_file()]


def _is_text(path: Path) -> bool:
    return path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES or path.name.endswith(".Dockerfile")


def markdown_files() -> list[Path]:
    return [path for path in _existing(_repository_files()) if path.suffix == ".md"]


def documents() -> list[Path]:
    """What a reader reads: the README and the pages of docs/ (not generated reports)."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def text_files() -> list[Path]:
    return [path for path in _existing(_repository_files()) if _is_text(path)]


def link_targets(markdown: str) -> list[str]:
    """Every link target outside code: inline `[text](target)` and images, reference definitions
    `[x]: target`, HTML `href`/`src`, and paths in angle brackets (`<docs/x.md>`)."""
    prose = CODE_SPAN.sub("code", FENCE.sub("", markdown))
    targets = [match.group(1) for pattern in (INLINE, REFERENCE, HTML_ATTRIBUTE) for match in pattern.finditer(prose)]
    for match in ANGLE.finditer(prose):
        inner = match.group(1)
        # `<br/>`, `</p>` and `<name>` placeholders are not paths; `<docs/x.md>` and `<https://...>` are links.
        if SCHEME.match(inner) or "/" in inner.strip("/") or re.search(r"\.[A-Za-z0-9]+$", inner):
            targets.append(inner)
    return [target.removeprefix("<").removesuffix(">").strip() for target in targets]


def anchors(markdown: str) -> set[str]:
    """The ids GitHub gives the headings of `markdown`: lower case, punctuation dropped, spaces to hyphens,
    a repeated id suffixed -1, -2..."""
    seen: Counter[str] = Counter()
    ids = set()
    for heading in HEADING.findall(FENCE.sub("", markdown)):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        ids.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
        seen[slug] += 1
    return ids


def broken_links(markdown_file: Path, markdown: str) -> list[str]:
    """Why each link of `markdown` (the text of `markdown_file`) does not stay inside the repository, as
    `file: target (why)`; relative targets resolve against the file's folder."""
    name = markdown_file.relative_to(ROOT).as_posix()
    problems = []
    for target in link_targets(markdown):
        if target.startswith(ALLOWED_SCHEMES) or target.startswith("#"):
            continue
        if SCHEME.match(target):
            problems.append(f"{name}: {target} (only http, https and mailto URLs may leave the repository)")
            continue
        path = unquote(re.split(r"[#?]", target, maxsplit=1)[0])
        if not path:
            problems.append(f"{name}: {target!r} (empty link target)")
            continue
        resolved = (markdown_file.parent / path).resolve()
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{name}: {target} (resolves outside the repository, to {resolved})")
        elif not resolved.exists():
            problems.append(f"{name}: {target} (no such path in the repository)")
        elif "#" in target and resolved.suffix == ".md" and resolved.is_file():
            fragment = unquote(target.split("#", 1)[1])
            if fragment not in anchors(resolved.read_text(encoding="utf-8")):
                problems.append(f"{name}: {target} (no heading #{fragment} there)")
    for target in link_targets(markdown):
        if target.startswith("#") and unquote(target[1:]) not in anchors(markdown):
            problems.append(f"{name}: {target} (no such heading in this file)")
    return problems


def outside_links(markdown_file: Path, markdown: str) -> list[str]:
    """The links of a document that may leave the repository: any URL (a document links into the repository
    only), and any relative path that climbs (`..`): a page links within its own folder and below, and names
    a file elsewhere by its path from the repository's root."""
    name = markdown_file.relative_to(ROOT).as_posix()
    problems = []
    for target in link_targets(markdown):
        if SCHEME.match(target) or target.startswith("//"):
            problems.append(f"{name}: {target} (a URL: documents link only into the repository)")
        elif not target.startswith("#"):
            path = unquote(re.split(r"[#?]", target, maxsplit=1)[0])
            if ".." in Path(path).parts or path.startswith("/"):
                problems.append(f"{name}: {target} (climbs out of its folder: name the file by its path instead)")
    return problems


def paragraphs(markdown: str) -> list[str]:
    """The prose of `markdown`, one string per paragraph or list item, whitespace collapsed; code, tables
    and headings left out."""
    units: list[str] = []
    for block in re.split(r"\n[ \t]*\n", FENCE.sub("\n", markdown)):
        current: list[str] = []
        for line in block.splitlines():
            stripped = line.strip()
            if stripped.startswith(("|", "#")):
                continue
            item = re.match(r"([-*+]|\d+\.)\s+", stripped)
            if item and current:
                units.append(" ".join(current))
                current = []
            current.append(stripped[item.end() :] if item else stripped)
        if current:
            units.append(" ".join(current))
    return [unit for unit in units if len(unit) >= PARAGRAPH_MIN_CHARS]


def test_the_walk_finds_the_documents() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in markdown_files()}
    assert {"README.md", "docs/architecture.md"} <= names, names


def test_every_relative_link_resolves_inside_the_repository() -> None:
    problems = [
        problem for path in markdown_files() for problem in broken_links(path, path.read_text(encoding="utf-8"))
    ]
    assert not problems, "\n".join(problems)


def test_no_file_refers_outside_the_repository() -> None:
    offenders = [
        f"{path.relative_to(ROOT).as_posix()}:{number}: {line.strip()}"
        for path in text_files()
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1)
        if any(needle in line for needle in FORBIDDEN)
    ]
    assert not offenders, "\n".join(offenders)


def test_the_link_finder_sees_every_kind_of_link() -> None:
    markdown = "\n".join(
        (
            "See [the design](docs/a.md#why) and ![chart](<perf/x y.png> 'title').",
            "[ref]: ../elsewhere.md",
            '<a href="docs/b.md">b</a> and <docs/c.md>, not <br/> nor <name>.',
            "Not in code: `[x](ignored.md)`.",
            "```",
            "[x](ignored-too.md)",
            "```",
        )
    )
    assert link_targets(markdown) == ["docs/a.md#why", "perf/x y.png", "../elsewhere.md", "docs/b.md", "docs/c.md"]


def test_a_link_outside_the_repository_is_reported() -> None:
    document = ROOT / "docs" / "example.md"  # never written: only its folder matters
    markdown = "[out](../../elsewhere.md) [gone](missing.md) [ok](../README.md) [a](#x) [f](file:///etc/hosts)\n# X"
    problems = broken_links(document, markdown)
    assert len(problems) == 3, problems
    assert "docs/example.md: ../../elsewhere.md (resolves outside the repository" in problems[0]
    assert "no such path" in problems[1]
    assert "only http, https and mailto" in problems[2]


def test_documents_link_nothing_outside_the_repository() -> None:
    problems = [problem for path in documents() for problem in outside_links(path, path.read_text(encoding="utf-8"))]
    assert not problems, "\n".join(problems)


def test_a_url_or_an_escaping_path_in_a_document_is_reported() -> None:
    document = ROOT / "docs" / "example.md"  # never written: only its folder matters
    markdown = (
        "[a](https://example.com) <http://x.org/y> [b](../../up.md) [c](../README.md) [ok](api.md#errors) "
        "[d](#x) `[e](https://e)`"
    )
    problems = outside_links(document, markdown)
    assert [problem.split(" (")[0] for problem in problems] == [
        "docs/example.md: https://example.com",
        "docs/example.md: ../../up.md",
        "docs/example.md: ../README.md",
        "docs/example.md: http://x.org/y",
    ], problems


def test_headings_give_githubs_anchors() -> None:
    markdown = (
        "# Sharing the encoder: lanes\n## `POST /classify`: text in\n## The orchestrator's key\n## Flags\n## Flags\n"
    )
    assert anchors(markdown) == {
        "sharing-the-encoder-lanes",
        "post-classify-text-in",
        "the-orchestrators-key",
        "flags",
        "flags-1",
    }


def test_a_link_to_a_missing_heading_is_reported() -> None:
    problems = broken_links(ROOT / "README.md", "[a](docs/architecture.md#no-such-heading) [b](#nor-here)")
    assert len(problems) == 2, problems
    assert all("heading" in problem for problem in problems), problems


def test_the_readme_indexes_every_page_of_the_docs() -> None:
    readme = ROOT / "README.md"
    linked = {
        (readme.parent / unquote(target.split("#", 1)[0])).resolve()
        for target in link_targets(readme.read_text(encoding="utf-8"))
        if not SCHEME.match(target) and not target.startswith("#")
    }
    pages = set((ROOT / "docs").glob("*.md"))
    assert pages, "docs/ has no page"
    assert pages <= linked, sorted(page.name for page in pages - linked)


def test_no_paragraph_is_written_twice() -> None:
    where: dict[str, list[str]] = {}
    for path in documents():
        for unit in paragraphs(path.read_text(encoding="utf-8")):
            where.setdefault(unit, []).append(path.relative_to(ROOT).as_posix())
    repeated = {unit[:80]: places for unit, places in where.items() if len(places) > 1}
    assert not repeated, repeated


def test_the_paragraph_finder_splits_prose_and_skips_the_rest() -> None:
    long = "word " * 30
    markdown = f"{long}\ncontinued\n\n- {long}\n- {long}x\n\n| {long} |\n\n```\n{long}\n```\n# {long}\n"
    assert [(unit[:4], unit[-9:]) for unit in paragraphs(markdown)] == [
        ("word", "continued"),
        ("word", "word word"),
        ("word", "ord word x"[-9:]),
    ]


def test_the_benchmarks_page_indexes_every_result_and_names_every_scenario() -> None:
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    named = {ROOT / path for path in re.findall(r"`([a-z][\w./-]*)`", page) if (ROOT / path).is_file()}
    results = sorted(folder for folder in (ROOT / "perf" / "results").iterdir() if folder.is_dir())
    unindexed = [
        folder.name
        for folder in results
        if not any(path.is_relative_to(folder) and path.suffix == ".md" for path in named)
    ]
    assert not unindexed, f"results with no report named in docs/benchmarks.md: {unindexed}"
    scenarios = {ROOT / "perf" / "scenarios" / f"{name}.py" for name in SCENARIOS}
    assert scenarios <= named, sorted(path.name for path in scenarios - named)
