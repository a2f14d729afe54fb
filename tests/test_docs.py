"""The repository is self-contained: every relative link in its Markdown resolves to a path inside it, and no
file refers to a sibling checkout or to a path on the machine it was written on."""

import os
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

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
    return problems


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


def test_the_readme_links_to_the_architecture() -> None:
    readme = ROOT / "README.md"
    resolved = {
        (readme.parent / unquote(target.split("#", 1)[0])).resolve()
        for target in link_targets(readme.read_text(encoding="utf-8"))
        if not SCHEME.match(target) and not target.startswith("#")
    }
    assert ROOT / "docs" / "architecture.md" in resolved


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
    markdown = "[out](../../elsewhere.md) [gone](missing.md) [ok](../README.md) [a](#x) [f](file:///etc/hosts)"
    problems = broken_links(document, markdown)
    assert len(problems) == 3, problems
    assert "docs/example.md: ../../elsewhere.md (resolves outside the repository" in problems[0]
    assert "no such path" in problems[1]
    assert "only http, https and mailto" in problems[2]
