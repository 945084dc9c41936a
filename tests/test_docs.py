"""The documentation stays true to the code: the configuration page is the generator's output,
the security table's tests exist, the README fits on one screen, and no link leads nowhere."""

import ast
import re
from pathlib import Path

from tools import configuration_doc

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
TEST_REFERENCE = re.compile(r"(tests/test_\w+\.py)::(test_\w+)")


def test_the_configuration_page_is_generated_from_the_code():
    page = DOCS / "configuration.md"
    assert page.read_text() == configuration_doc.render(), \
        f"docs/configuration.md is not current: run `{configuration_doc.REGENERATE}`"


def test_the_generator_lists_every_field_of_every_option_class():
    page = configuration_doc.render()
    for _, _, arguments_class in configuration_doc.EXECUTORS.values():
        for option_class in configuration_doc.classes(arguments_class):
            section = page.split(f"`{option_class.__name__}` (`{option_class.__module__}`)", 1)
            assert len(section) == 2, f"{option_class.__name__} has no section"
            for field in option_class.__dataclass_fields__:
                assert f"| `{field}` |" in section[1], f"{option_class.__name__}.{field} is not listed"


def defined_tests(path: Path) -> set[str]:
    """The names of the test functions a test file defines."""
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")}


def test_every_test_the_security_table_names_exists():
    rows = [line for line in (DOCS / "security.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith(("| attack", "|---"))]
    assert rows, "docs/security.md has no table rows"
    missing = []
    for row in rows:
        references = TEST_REFERENCE.findall(row)
        assert references, f"this row of docs/security.md names no test: {row[:80]}…"
        for file, name in references:
            if not (ROOT / file).exists() or name not in defined_tests(ROOT / file):
                missing.append(f"{file}::{name}")
    assert missing == [], "docs/security.md names tests that do not exist"


def test_the_readme_fits_on_one_screen():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= 250, f"README.md has {lines} lines: move the detail into docs/"


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings (a repeated heading gets -1, -2, …)."""
    found, seen = set(), {}
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for heading in re.findall(r"^#+ (.+)$", text, flags=re.M):
        anchor = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        found.add(f"{anchor}-{seen[anchor]}" if anchor in seen else anchor)
        seen[anchor] = seen.get(anchor, 0) + 1
    return found


def test_every_relative_link_leads_to_a_file_and_heading_that_exist():
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold no links
        for link in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z][a-z0-9+.-]*:", link):  # https:, mailto:
                continue
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists():
                broken.append(f"{page.relative_to(ROOT)}: {link} (no such file)")
            elif anchor and target.suffix == ".md" and anchor not in anchors(target):
                broken.append(f"{page.relative_to(ROOT)}: {link} (no such heading)")
    assert broken == []
