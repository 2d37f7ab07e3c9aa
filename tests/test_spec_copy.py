"""The published interface specs travel with the repository (docs/spec/), and stay
byte-identical to the workplace's copy (../shared/spec/) while that folder exists: a
clone is read without it, and the two must never say different things."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
OURS = REPO / "docs" / "spec"
PUBLISHED = REPO.parent / "shared" / "spec"


def test_every_spec_is_in_the_repository() -> None:
    names = {path.name for path in OURS.glob("*.md")}
    assert {"pos-cup.md", "bank-h2h.md", "online.md", "settlement.md"} <= names


@pytest.mark.skipif(not PUBLISHED.is_dir(), reason="no ../shared/spec beside this clone")
def test_the_copies_match_the_published_specs() -> None:
    published = {path.name: path.read_bytes() for path in PUBLISHED.glob("*.md")}
    ours = {path.name: path.read_bytes() for path in OURS.glob("*.md")}
    assert sorted(ours) == sorted(published)
    stale = [name for name in published if ours[name] != published[name]]
    assert not stale, f"docs/spec differs from ../shared/spec in {stale}: copy them again"
