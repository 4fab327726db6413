"""The installed user's pages: one page per ready mapping under docs/platforms/, listing exactly
the environment variables the mapping reads and naming its webhook path, and a troubleshooting
entry for every finding code ``validate`` can report."""

import re
from pathlib import Path
from typing import List

import pytest

from generic_connector.config import check_channel
from generic_connector.errors import FINDING_CODES

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = sorted((ROOT / "mappings").glob("*.yml"))
PLATFORMS = ROOT / "docs" / "platforms"


def section(text: str, heading: str) -> str:
    """The text under a heading, up to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#|\Z)", text, re.M | re.S)
    assert match, f"no heading {heading!r}"
    return match.group(1)


def listed(text: str) -> List[str]:
    """The names of a section's list items: ``- `NAME` ...``."""
    return re.findall(r"^- `([A-Z][A-Z0-9_]*)`", text, re.M)


def test_every_ready_mapping_has_a_page_and_no_page_is_left_over() -> None:
    assert len(MAPPINGS) >= 28
    assert {p.stem for p in PLATFORMS.glob("*.md")} == {p.stem for p in MAPPINGS}


@pytest.mark.parametrize("mapping", MAPPINGS, ids=lambda p: p.stem)
def test_the_page_lists_the_variables_and_the_webhook_path(mapping: Path) -> None:
    text = (PLATFORMS / f"{mapping.stem}.md").read_text(encoding="utf-8")
    config, findings, _ = check_channel({"mapping": str(mapping)})
    assert config is not None and findings == []
    required = config.env_names()  # what validate prints after "reads", rasa run requires
    optional = {name for e in config.expressions() for name in e.optional_env_names}
    assert listed(section(text, "Environment variables")) == required
    optional_listed = listed(section(text, "Optional")) if "### Optional" in text else []
    assert sorted(optional_listed) == sorted(optional - set(required))
    assert f"/webhooks/{config.name}/webhook" in text
    assert f"mapping: {mapping.stem}" in text
    assert "## Set-up on the platform" in text
    if re.search(r"^setup:", mapping.read_text(encoding="utf-8"), re.M):  # telegram, viber, line
        assert f"generic-connector setup {mapping.stem} --url https://" in text


def test_every_finding_code_has_a_troubleshooting_entry() -> None:
    text = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^#{2,4} (\S+)\s*$", text, re.M))
    anchors = set(re.findall(r'id="([a-z-]+)"', text))
    assert [code for code in FINDING_CODES if code not in headings | anchors] == []
