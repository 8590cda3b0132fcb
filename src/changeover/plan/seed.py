"""A reader for the seed checklist (Markdown): its checkbox items, success criteria, decision
points, contacts, war-room fields and notes, each with where it stands in the document.

The default plan is built from this document, and the coverage test uses this reader to prove
that every item of the seed has its step in the plan, in the same place and with the same words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources

SEED_RESOURCE = "seed-checklist.md"

_PART = re.compile(r"^## (?P<title>.+?)\s*$")
_SECTION = re.compile(r"^### (?P<title>.+?)\s*$")
_CHECKBOX = re.compile(r"^- \[[ xX]\] (?P<text>.+?)\s*$")
# "**Pre-deployment**:" opens a sub-section; "**Decision point**: Proceed ..." is a labelled value.
_BOLD = re.compile(r"^\*\*(?P<label>.+?)\*\*:?\s*(?P<value>.*?)\s*$")
_CRITERION = re.compile(r"^(?P<number>\d+)\.\s+✅\s+(?P<text>.+?)\s*$")
_TABLE_ROW = re.compile(r"^\|(?P<cells>.*)\|\s*$")


@dataclass(frozen=True)
class SeedItem:
    """One ``- [ ]`` line: the ``##`` part, ``###`` section and bold sub-heading it stands under."""

    part: str
    section: str | None
    subsection: str | None
    text: str
    line: int


@dataclass(frozen=True)
class SeedCriterion:
    """A numbered success criterion; ``text`` is what follows the check mark."""

    number: int
    text: str
    line: int


@dataclass(frozen=True)
class SeedDecision:
    """A ``**Decision point**:`` line at the end of a traffic phase."""

    part: str
    section: str | None
    text: str
    line: int


@dataclass(frozen=True)
class SeedContact:
    role: str
    person: str
    phone: str
    slack: str


@dataclass(frozen=True)
class SeedDocument:
    items: list[SeedItem]
    criteria: list[SeedCriterion]
    decisions: list[SeedDecision]
    contacts: list[SeedContact]
    war_room: dict[str, str] = field(default_factory=dict)
    notes: str = ""


def read_seed() -> str:
    """The seed checklist shipped with the package (the copy the default plan was made from)."""
    return resources.files("changeover.plan").joinpath(SEED_RESOURCE).read_text(encoding="utf-8")


def parse_seed(text: str) -> list[SeedItem]:
    """Every checkbox item of the seed, in document order."""
    return parse_seed_document(text).items


def parse_seed_document(text: str) -> SeedDocument:
    """Read the whole seed: items, criteria, decision points, contacts, war room and notes."""
    items: list[SeedItem] = []
    criteria: list[SeedCriterion] = []
    decisions: list[SeedDecision] = []
    contacts: list[SeedContact] = []
    war_room: dict[str, str] = {}
    notes: list[str] = []
    part = ""
    section: str | None = None
    subsection: str | None = None
    in_fence = False

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            if part == "Notes":
                notes.append(line)
            continue
        if match := _PART.match(line):
            part, section, subsection = match["title"], None, None
        elif match := _SECTION.match(line):
            section, subsection = match["title"], None
        elif match := _CHECKBOX.match(line):
            items.append(SeedItem(part, section, subsection, match["text"], number))
        elif match := _CRITERION.match(line):
            criteria.append(SeedCriterion(int(match["number"]), match["text"], number))
        elif match := _BOLD.match(line):
            label, value = match["label"].strip(), match["value"]
            if label == "Decision point":
                decisions.append(SeedDecision(part, section, value, number))
            elif value:
                if part == "War Room Setup":
                    war_room[label] = value
            else:
                subsection = label
        elif (match := _TABLE_ROW.match(line)) and part == "Contact Information":
            cells = [cell.strip() for cell in match["cells"].split("|")]
            if cells and cells[0] not in ("Role", "") and not set(cells[0]) <= set("-: "):
                cells += [""] * (4 - len(cells))
                contacts.append(SeedContact(*cells[:4]))

    return SeedDocument(
        items=items,
        criteria=criteria,
        decisions=decisions,
        contacts=contacts,
        war_room=war_room,
        notes="\n".join(notes).strip(),
    )
