"""The default plan is the whole seed checklist: every item, in its place, in the seed's words.

The seed is the copy shipped in the package (``changeover/plan/seed-checklist.md``), read with
``changeover.plan.seed``; the plan is the packaged ``default_plan.yaml``. The last test prints the
automation coverage (``pytest -s`` shows it) and holds it above floors.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from changeover.plan.default import (
    EXTRA_STEPS,
    TOTAL,
    coverage_table,
    default_plan,
    format_coverage_table,
)
from changeover.plan.model import Plan, Step
from changeover.plan.seed import (
    SeedDocument,
    SeedItem,
    parse_seed,
    parse_seed_document,
    read_seed,
)

# Parts of the seed whose "###" sections are sections of one stage; in "Day of Cutover" each
# "###" is a stage of its own and the bold sub-headings are its sections.
DAY_OF_CUTOVER = "Day of Cutover"
ROLLBACK_PART = "Rollback Triggers"
ROLLBACK_GROUPS = {"Immediate Rollback If": "immediate", "Graceful Rollback If": "graceful"}


@pytest.fixture(scope="module")
def seed() -> SeedDocument:
    return parse_seed_document(read_seed())


@pytest.fixture(scope="module")
def plan() -> Plan:
    return default_plan()


@dataclass(frozen=True)
class Placed:
    """A step of the plan and where it stands, in the seed's terms."""

    step: Step
    stage_title: str | None  # None for rollback triggers and success criteria
    stage_part: str | None
    section_title: str | None  # the rollback group for rollback triggers
    sections_in_stage: int


def placed_steps(plan: Plan) -> list[Placed]:
    out = []
    for stage in plan.stages:
        for section in stage.sections:
            for step in section.steps:
                out.append(
                    Placed(step, stage.title, stage.part, section.title, len(stage.sections))
                )
    for group in ("immediate", "graceful"):
        for step in getattr(plan.rollback, group):
            out.append(Placed(step, None, None, group, 0))
    return out


def is_in_place(item: SeedItem, placed: Placed) -> bool:
    """Whether ``placed`` stands where the seed puts ``item``."""
    if item.part == ROLLBACK_PART:
        return placed.stage_title is None and placed.section_title == ROLLBACK_GROUPS.get(
            item.subsection or ""
        )
    if item.part == DAY_OF_CUTOVER:
        if placed.stage_title != item.section or placed.stage_part != DAY_OF_CUTOVER:
            return False
        if item.subsection is None:  # "2 Hours Before" has no bold sub-headings: one section
            return placed.sections_in_stage == 1
        return placed.section_title == item.subsection
    return placed.stage_title == item.part and placed.section_title == item.section


# --- the seed reader ------------------------------------------------------------------------


def test_seed_has_174_checkbox_items_with_11_rollback_triggers(seed: SeedDocument) -> None:
    assert len(seed.items) == 174
    assert len(parse_seed(read_seed())) == 174
    triggers = [i for i in seed.items if i.part == ROLLBACK_PART]
    assert Counter(i.subsection for i in triggers) == {
        "Immediate Rollback If": 7,
        "Graceful Rollback If": 4,
    }


def test_seed_item_texts_are_unique_within_their_section(seed: SeedDocument) -> None:
    # The same words may recur in different stages ("Error rate < 1%"), never in one section,
    # so (place, text) identifies an item.
    keys = Counter((i.part, i.section, i.subsection, i.text) for i in seed.items)
    assert [k for k, n in keys.items() if n > 1] == []


def test_reader_places_items_under_part_section_and_bold_subheading() -> None:
    text = "\n".join(
        [
            "# Title",
            "## Day",
            "### Phase 1",
            "**Pre-deployment**:",
            "- [ ] First thing",
            "**Decision point**: Go on if green",
            "### Phase 2",
            "- [x] Second thing",
            "## Success Criteria",
            "**Done When**:",
            "1. ✅ It works (100%)",
            "## Contact Information",
            "| Role | Person | Phone | Slack |",
            "|------|--------|-------|-------|",
            "| Lead | Ana | 123 | @ana |",
            "## War Room Setup",
            "**Zoom**: [Add link]",
            "## Notes",
            "```",
            "free text",
            "```",
        ]
    )
    doc = parse_seed_document(text)
    assert doc.items == [
        SeedItem("Day", "Phase 1", "Pre-deployment", "First thing", 5),
        SeedItem("Day", "Phase 2", None, "Second thing", 8),
    ]
    assert [(d.section, d.text, d.line) for d in doc.decisions] == [
        ("Phase 1", "Go on if green", 6)
    ]
    assert [(c.number, c.text) for c in doc.criteria] == [(1, "It works (100%)")]
    assert [(c.role, c.person, c.phone, c.slack) for c in doc.contacts] == [
        ("Lead", "Ana", "123", "@ana")
    ]
    assert doc.war_room == {"Zoom": "[Add link]"}
    assert doc.notes == "free text"


# --- every seed item in the plan ------------------------------------------------------------


def test_every_seed_item_is_exactly_one_step_in_its_place(seed: SeedDocument, plan: Plan) -> None:
    steps = placed_steps(plan)
    used: dict[str, SeedItem] = {}
    problems = []
    for item in seed.items:
        matches = [p for p in steps if p.step.title == item.text and is_in_place(item, p)]
        if len(matches) != 1:
            elsewhere = [p.step.id for p in steps if p.step.title == item.text]
            problems.append(
                f"line {item.line} {item.text!r}: {len(matches)} steps in its place"
                + (f" (same words elsewhere: {elsewhere})" if elsewhere else "")
            )
            continue
        step_id = matches[0].step.id
        if step_id in used:
            problems.append(f"line {item.line}: step {step_id} already stands for another item")
        used[step_id] = item
    assert problems == []
    assert len(used) == 174


def test_every_step_comes_from_the_seed_or_is_a_documented_extra(
    seed: SeedDocument, plan: Plan
) -> None:
    from_seed = set()
    for placed in placed_steps(plan):
        if any(i.text == placed.step.title and is_in_place(i, placed) for i in seed.items):
            from_seed.add(placed.step.id)
    stage_and_rollback_ids = {p.step.id for p in placed_steps(plan)}
    assert stage_and_rollback_ids - from_seed == set(EXTRA_STEPS)
    assert all(reason.strip() for reason in EXTRA_STEPS.values())


def test_stages_follow_the_seed_order_and_headings(seed: SeedDocument, plan: Plan) -> None:
    headings = []
    for item in seed.items:
        if item.part == ROLLBACK_PART:
            continue
        heading = (
            (item.section, DAY_OF_CUTOVER) if item.part == DAY_OF_CUTOVER else (item.part, None)
        )
        if heading not in headings:
            headings.append(heading)
    assert [(s.title, s.part) for s in plan.stages] == headings


def test_sections_follow_the_seed_order(seed: SeedDocument, plan: Plan) -> None:
    for stage in plan.stages:
        if stage.part == DAY_OF_CUTOVER:
            expected = [i.subsection for i in seed.items if i.section == stage.title]
        else:
            expected = [i.section for i in seed.items if i.part == stage.title]
        in_order = list(dict.fromkeys(expected))
        if in_order == [None]:
            assert len(stage.sections) == 1, stage.id
        else:
            assert [s.title for s in stage.sections] == in_order, stage.id


def test_steps_follow_the_seed_order_within_each_section(seed: SeedDocument, plan: Plan) -> None:
    order = {(i.part, i.section, i.subsection, i.text): i.line for i in seed.items}
    for placed_group in _by_section(plan):
        lines = []
        for placed in placed_group:
            lines += [
                line
                for (part, section, subsection, text), line in order.items()
                if text == placed.step.title
                and is_in_place(SeedItem(part, section, subsection, text, line), placed)
            ]
        assert lines == sorted(lines)


def _by_section(plan: Plan) -> list[list[Placed]]:
    groups: dict[tuple[str | None, str | None], list[Placed]] = {}
    for placed in placed_steps(plan):
        groups.setdefault((placed.stage_title, placed.section_title), []).append(placed)
    return list(groups.values())


# --- criteria, decisions, contacts, war room, notes ----------------------------------------


def test_success_criteria_are_the_seeds_in_order(seed: SeedDocument, plan: Plan) -> None:
    assert len(seed.criteria) == 13
    assert [s.title for s in plan.success_criteria] == [c.text for c in seed.criteria]
    assert plan.success_criteria[0].title == "Data migration verified (100% data integrity)"


def test_decision_points_end_the_phases_the_seed_puts_them_in(
    seed: SeedDocument, plan: Plan
) -> None:
    assert [d.text for d in seed.decisions] == [
        "Proceed to 50% traffic if all metrics green",
        "Proceed to full cutover if all green",
    ]
    for decision in seed.decisions:
        stage = next(s for s in plan.stages if s.title == decision.section)
        assert stage.phase is not None and stage.phase.decision is not None
        assert stage.phase.decision.title == decision.text
    with_decision = [s.id for s in plan.stages if s.phase and s.phase.decision]
    assert with_decision == ["canary", "staged"]


def test_contacts_are_the_seeds_roles(seed: SeedDocument, plan: Plan) -> None:
    assert [(c.title, c.name) for c in plan.contacts] == [(c.role, c.person) for c in seed.contacts]
    assert [c.role for c in plan.contacts] == [
        "deployment-lead",
        "dba",
        "backend-lead",
        "qa-lead",
        "on-call",
        "escalation",
    ]


def test_war_room_keeps_the_seeds_values_and_placeholders(seed: SeedDocument, plan: Plan) -> None:
    fields = {label.lower().replace(" ", "_"): value for label, value in seed.war_room.items()}
    assert plan.war_room.model_dump() == fields
    assert plan.war_room.slack_channel == "#cutover-war-room"
    assert plan.war_room.zoom == "[Add link]"


def test_notes_block_is_the_seeds(seed: SeedDocument, plan: Plan) -> None:
    assert plan.notes.strip() == seed.notes == "Space for cutover notes during deployment"


# --- how much is automated ------------------------------------------------------------------


def test_automation_coverage_table(plan: Plan) -> None:
    rows = coverage_table(plan)
    total = rows[-1]
    assert total.group == TOTAL
    assert total.total == len(list(plan.all_steps())) == 174 + 13 + len(EXTRA_STEPS)

    seed_steps = [p.step for p in placed_steps(plan) if p.step.id not in EXTRA_STEPS]
    by_kind = Counter("probe" if s.kind == "check" else s.kind for s in seed_steps)
    # Shown with `pytest -s`.
    print("\n\nautomation coverage of the default plan (steps per stage):")
    print(format_coverage_table(rows))
    print(
        "the 174 seed items: "
        + ", ".join(f"{by_kind[k]} {k}" for k in ("probe", "action", "gate", "manual"))
        + f"; {len(EXTRA_STEPS)} extra steps ({', '.join(EXTRA_STEPS)})\n"
    )

    assert sum(by_kind.values()) == 174
    assert by_kind["probe"] >= 60  # checked by a probe with real evidence
    assert by_kind["manual"] <= 40  # only what people alone can do
    rows_by_stage = {row.group: row for row in rows}
    # Monitoring windows and rollback triggers are watched, not signed off.
    assert rows_by_stage["rollback"].gate == 11
    for phase in ("canary", "staged", "full"):
        assert rows_by_stage[phase].gate >= 5
    # The checks before the night are mostly automatic.
    pre = rows_by_stage["pre-deployment"]
    assert pre.probe / pre.total >= 0.6
