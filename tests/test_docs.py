"""The README is the first hour, and every command it names exists (issue 20)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_stays_a_first_hour_read():
    assert len(README.encode()) <= 12 * 1024
    for heading in ("## Two commands", "## Architecture", "## Cluster quickstart (kind)", "## Documentation"):
        assert heading in README
    assert "```mermaid" in README
    assert "make run" in README and "make test" in README


def test_every_make_target_the_readme_names_exists():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z0-9-]+):", makefile, flags=re.M))
    named = set(re.findall(r"`make ([a-z0-9-]+)", README)) | set(re.findall(r"^make ([a-z0-9-]+)", README, flags=re.M))
    assert {"run", "test", "kind-up", "site"} <= named
    assert named <= targets, named - targets


def test_every_page_the_readme_links_exists_and_is_in_the_site():
    linked = re.findall(r"\]\((docs/[a-z-]+\.md)\)", README)
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert len(linked) >= 7
    for link in linked:
        assert (ROOT / link).is_file(), link
        assert Path(link).name in nav, link
