"""The mathematical contract is cited by its place in the repository, and every citation resolves.

``docs/math.md`` holds the definition of the loss in numbered sections (1 tail statistics,
2 blended logits, 3 hard-negative terms, 4 ``beta_t``, 5 presets, 6 gradient, 7 numerics,
8 exact-arithmetic rules, 9 pairing forms). Code and documentation cite them as
``docs/math.md section N``. Two checks:

- no file of the repository cites the specification document that is not in the repository
  (its name is built below, so that this file does not mention it itself); the reference vectors
  under ``tests/data`` are data as published and are left as they are;
- every ``docs/math.md section N`` (or ``sections N-M``, ``sections N, M and P``) in a ``.py`` or
  ``.md`` file names a numbered heading (``## N. Title``) of ``docs/math.md``.

Each checker is first tried on a small synthetic repository, so that a pass means "no finding"
and not "the checker looks nowhere".
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MATH = Path("docs") / "math.md"

# The document that is not in the repository, by name and by short name (built from parts, so
# that this file does not cite it itself). Both "<name>.md section 4" and the short forms
# "<name> section 6", "(<name>: ...)", "<name> 1.8" are citations of it.
SHORT_NAME = "SP" + "EC"
OUTSIDE_SPEC = SHORT_NAME + ".md"
STALE_CITATION = re.compile(rf"\b{SHORT_NAME}(?:\.md)?\b")
# Directories never searched: version control, environments, caches, build outputs (as in
# .gitignore), and the reference vectors, which are data as published.
SKIPPED_NAMES = {
    ".git",
    ".venv",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    ".hypothesis",
    "build",
    "dist",
    "site",
    "weince-out",
}
SKIPPED_PATHS = {Path("tests") / "data"}
# "docs/math.md section 9", "docs/math.md sections 2, 3 and 6", "docs/math.md sections 1-4";
# a citation may wrap onto the next line of a comment or docstring.
CITATION = re.compile(
    r"docs/math\.md,?[\s#*]+sections?\s+"
    r"(?P<numbers>\d+(?:\s*(?:-|–|,|,?\s*and|,?\s*or|to)\s*\d+)*)"
)
NUMBERED_HEADING = re.compile(r"^## (?P<number>\d+)\. \S", re.MULTILINE)


def repository_files(root: Path) -> list[Path]:
    """Every file under ``root`` (relative paths) outside the skipped directories."""
    files = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        parents = [relative, *relative.parents]
        if any(part in SKIPPED_NAMES or part.endswith(".egg-info") for part in relative.parts):
            continue
        if any(parent in SKIPPED_PATHS for parent in parents):
            continue
        if path.is_file():
            files.append(relative)
    return files


def read_text(path: Path) -> str | None:
    """A file's text, or None for a binary file."""
    data = path.read_bytes()
    if b"\0" in data:
        return None
    return data.decode("utf-8", errors="replace")


def stale_citations(root: Path) -> list[str]:
    """``path:line: text`` for every line of the repository that cites the outside document."""
    found = []
    for relative in repository_files(root):
        text = read_text(root / relative)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if STALE_CITATION.search(line):
                found.append(f"{relative}:{number}: {line.strip()}")
    return found


def cited_sections(numbers: str) -> list[int]:
    """The section numbers of one citation: ``"1-4"`` is 1, 2, 3, 4; ``"2, 3 and 9"`` 2, 3, 9."""
    cited: list[int] = []
    for part in re.split(r"\s*(?:,?\s*and|,?\s*or|,)\s*", numbers):
        low, _, high = re.sub(r"\s*(?:-|–|to)\s*", "-", part).partition("-")
        cited.extend(range(int(low), int(high or low) + 1))
    return cited


def numbered_sections(root: Path) -> list[int]:
    """The numbers of the numbered headings of docs/math.md, in order."""
    text = (root / MATH).read_text(encoding="utf-8")
    return [int(match["number"]) for match in NUMBERED_HEADING.finditer(text)]


def dangling_citations(root: Path) -> list[str]:
    """``path:line: docs/math.md section N`` for every citation of a section that does not exist."""
    sections = set(numbered_sections(root))
    found = []
    for relative in repository_files(root):
        if relative.suffix not in {".py", ".md"}:
            continue
        text = read_text(root / relative)
        if text is None:
            continue
        for match in CITATION.finditer(text):
            missing = [n for n in cited_sections(match["numbers"]) if n not in sections]
            if missing:
                line = text.count("\n", 0, match.start()) + 1
                cited = " ".join(match.group(0).split())
                found.append(f"{relative}:{line}: {cited} (no section {missing})")
    return found


def make_repository(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


SYNTHETIC_MATH = "# The math\n\n## 1. Tails\n\n### 1.1 Not a section\n\n## 2. Logits\n\n## Notes\n"


def test_stale_citation_checker_on_a_synthetic_repository(tmp_path):
    root = make_repository(
        tmp_path,
        {
            "docs/math.md": SYNTHETIC_MATH,
            "pkg/cited.py": f'"""Tails (see {OUTSIDE_SPEC} section 1)."""\n',
            "pkg/short.py": f"# the gradient ({SHORT_NAME} section 6)\n",
            # Other words that begin with the name are no citations.
            "pkg/clean.py": f"# docs/math.md section 1; {SHORT_NAME}TRUM, {SHORT_NAME}_SIZE\n",
            ".ci/run": f"# see {OUTSIDE_SPEC}\n",
            "tests/data/golden/case.json": f'{{"from": "{OUTSIDE_SPEC}"}}\n',
            ".venv/lib/site.py": f"# {OUTSIDE_SPEC}\n",
            "pkg/__pycache__/cited.pyc": f"{OUTSIDE_SPEC}\0",
            "weince.egg-info/PKG-INFO": f"{OUTSIDE_SPEC}\n",
        },
    )
    assert sorted(stale_citations(root)) == [
        f".ci/run:1: # see {OUTSIDE_SPEC}",
        f'pkg/cited.py:1: """Tails (see {OUTSIDE_SPEC} section 1)."""',
        f"pkg/short.py:1: # the gradient ({SHORT_NAME} section 6)",
    ]


def test_citation_checker_on_a_synthetic_repository(tmp_path):
    assert cited_sections("9") == [9]
    assert cited_sections("1-4") == [1, 2, 3, 4]
    assert cited_sections("2, 3 and 9") == [2, 3, 9]
    assert cited_sections("6 and 9") == [6, 9]
    root = make_repository(
        tmp_path,
        {
            "docs/math.md": SYNTHETIC_MATH,
            "pkg/good.py": (
                '"""Tails (docs/math.md section 1) and logits (docs/math.md sections 1-2).\n\n'
                'Wrapped: docs/math.md\n    section 2."""\n'
            ),
            "pkg/bad.py": (
                "# fine: docs/math.md section 2\n"
                "# missing: docs/math.md section 3\n"
                "# a range running past the end: docs/math.md sections 1-3\n"
                "# wrapped past the end: docs/math.md\n# section 7, step 2\n"
            ),
            "docs/page.md": "See docs/math.md sections 2 and 5.\n",
            "notes.txt": "docs/math.md section 8 (not a .py or .md file)\n",
            "tests/data/golden/case.md": "docs/math.md section 8\n",
        },
    )
    assert numbered_sections(root) == [1, 2]
    assert sorted(dangling_citations(root)) == [
        "docs/page.md:1: docs/math.md sections 2 and 5 (no section [5])",
        "pkg/bad.py:2: docs/math.md section 3 (no section [3])",
        "pkg/bad.py:3: docs/math.md sections 1-3 (no section [3])",
        "pkg/bad.py:4: docs/math.md # section 7 (no section [7])",
    ]


def test_math_sections_are_numbered_1_to_9():
    # The numbering is part of the contract: code cites these numbers.
    assert numbered_sections(ROOT) == list(range(1, 10))


def test_every_math_citation_names_a_section():
    dangling = dangling_citations(ROOT)
    assert not dangling, "citations of sections docs/math.md does not have:\n" + "\n".join(dangling)


def test_no_file_cites_the_outside_specification():
    # The definition lives in docs/math.md; a citation of the outside document points nowhere.
    # Replace "<that document> section N" by "docs/math.md section N" (the numbers are the same).
    stale = stale_citations(ROOT)
    assert not stale, f"{len(stale)} lines cite {OUTSIDE_SPEC}, not in the repository:\n" + (
        "\n".join(stale)
    )
