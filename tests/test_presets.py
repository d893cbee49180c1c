"""Presets and mapping: each tool's messy export becomes exactly the reviewed canonical rows.

The ``*.expected.jsonl`` files were reviewed by hand against the fixtures (mojibake repaired,
duplicated headers read by position, ranges moved out of counts, connection levels only
on events that prove a connection); these tests pin them down.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pyarrow as pa
import pytest

from sources.canonical import open_source
from sources.mapping import MappingError, apply_mapping, choose_preset, plan_mapping
from sources.presets import PRESETS, lusha_document
from sources.presets.values import repair_mojibake

FIXTURES = Path(__file__).parent / "fixtures" / "presets"

# fixture file -> the preset ``auto`` must choose for it
CASES = {
    "apollo.csv": "apollo",
    "zoominfo.csv": "zoominfo",
    "lusha.csv": "lusha",
    "lusha_api.json": "lusha",
    "clearbit.jsonl": "clearbit",
    "clay.csv": "clay",
    "heyreach.json": "heyreach",
    "prosp.jsonl": "prosp",
    "canonical.csv": "canonical",
    "generic.csv": "generic",
}


def _rows(source: object) -> list[dict[str, object]]:
    rows = []
    for batch in source:  # type: ignore[attr-defined]
        for row in batch.to_pylist():
            row.pop("_om_source")
            rows.append(row)
    return rows


def _expected(fixture: str) -> list[dict[str, object]]:
    stem = fixture.rsplit(".", 1)[0]
    lines = (FIXTURES / f"{stem}.expected.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _batch(columns: Mapping[str, Sequence[object]]) -> pa.RecordBatch:
    n = len(next(iter(columns.values())))
    data = {k: pa.array(v) for k, v in columns.items()}
    data["_om_source"] = pa.array(["test"] * n)
    data["_om_row"] = pa.array(range(1, n + 1), pa.int64())
    return pa.RecordBatch.from_pydict(data)


@pytest.mark.parametrize("fixture", list(CASES))
def test_fixture_maps_to_expected_canonical_rows(fixture: str) -> None:
    source = open_source(FIXTURES / fixture)
    assert source.plan.preset == CASES[fixture], source.plan.reason
    assert _rows(source) == _expected(fixture)


@pytest.mark.parametrize("fixture", list(CASES))
def test_every_fixture_is_messy_where_it_matters(fixture: str) -> None:
    """Guard the fixtures themselves: a cleaned-up fixture would make the test above weak."""
    rows = _expected(fixture)
    assert len(rows) >= 3
    assert any(v is None for r in rows for k, v in r.items() if k != "_om_row")


def test_auto_says_what_it_chose_and_why() -> None:
    plan = open_source(FIXTURES / "apollo.csv").plan
    assert plan.reason.startswith("auto: apollo (matched ")
    assert "Company Name for Emails" in plan.reason


def test_bom_and_mojibake_in_apollo_export() -> None:
    rows = _rows(open_source(FIXTURES / "apollo.csv"))
    assert rows[0]["lead_first_name"] == "Ana"  # the BOM did not stick to "First Name"
    assert (rows[1]["lead_first_name"], rows[1]["lead_last_name"]) == ("Jürgen", "Müller")
    assert rows[1]["company_name"] == "Müller Maschinenbau GmbH"


def test_generic_fallback_on_seamless_like_headers_reports_used_columns() -> None:
    headers = [
        "First Name",
        "Last Name",
        "Title",
        "Company",
        "Company Domain",
        "Email 1",
        "Email 1 Validation",
        "Contact LI Profile URL",
        "Company LI Profile URL",
        "Company Staff Count",
        "Company Staff Count Range",
        "Industry",
        "Contact Phone 1",
    ]
    plan = plan_mapping(headers)
    assert plan.preset == "generic"
    assert plan.reason.startswith("auto: generic")
    for used in ("Email 1", "Contact LI Profile URL", "Company Domain", "Company Staff Count"):
        assert used in plan.reason
    assert plan.columns["lead_email"] == "Email 1"
    assert plan.columns["lead_linkedin_url"] == "Contact LI Profile URL"
    assert plan.columns["company_domain"] == "Company Domain"
    assert plan.unused == ["Email 1 Validation", "Contact Phone 1"]


def test_generic_matches_headers_ignoring_case_spaces_and_underscores() -> None:
    plan = plan_mapping(["WORK_EMAIL", "first name", "LinkedIn-Profile", "company_domain_x"], preset="generic")
    assert plan.columns == {
        "lead_email": "WORK_EMAIL",
        "lead_linkedin_url": "LinkedIn-Profile",
        "lead_first_name": "first name",
    }
    assert plan.unused == ["company_domain_x"]


def test_duplicated_header_is_read_by_position_first_non_empty_wins() -> None:
    plan = plan_mapping(["Email", "Email__2", "First Name"], preset="generic")
    assert plan.columns["lead_email"] == ["Email", "Email__2"]
    batch = _batch({"Email": ["", "a@example.com", None], "Email__2": ["b@example.com", "c@example.com", None]})
    batch = pa.RecordBatch.from_pydict({**batch.to_pydict(), "First Name": ["x", "y", "z"]})
    out = apply_mapping(batch, plan).to_pydict()
    assert out["lead_email"] == ["b@example.com", "a@example.com", None]


def test_auto_picks_canonical_for_api_named_columns_and_generic_otherwise() -> None:
    assert choose_preset(["lead_email", "company_domain", "notes"])[0] == "canonical"
    assert choose_preset(["Email", "Website"])[0] == "generic"
    assert choose_preset([])[0] == "generic"


def test_unknown_preset_is_an_error_naming_it() -> None:
    with pytest.raises(MappingError, match=r"'apolo'.*did you mean 'apollo'"):
        plan_mapping(["Email"], preset="apolo")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mapping.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_mapping_file_overrides_columns_sets_constants_and_orders(tmp_path: Path) -> None:
    mapping = _write(
        tmp_path,
        """
preset = "apollo"
order_by = "Updated"
[columns]
lead_email = ["Secondary Email", "Email"]
company_domain = ""
lead_status = "Stage"
[constants]
workspace_id = "65f0c0ffee0000000000beef"
tags = ["q3", "webinar"]
platform = "apollo-q3"
""",
    )
    headers = ["Email", "Secondary Email", "Website", "Stage", "Updated", "First Name"]
    plan = plan_mapping(headers, mapping_file=mapping)
    assert plan.preset == "apollo"
    assert plan.columns["lead_email"] == ["Secondary Email", "Email"]
    assert "company_domain" not in plan.columns
    assert plan.constants == {
        "platform": "apollo-q3",
        "workspace_id": "65f0c0ffee0000000000beef",
        "tags": ["q3", "webinar"],
    }
    assert plan.order_by == "Updated"
    assert plan.unused == ["Website"]
    batch = _batch(
        {
            "Email": ["a@example.com", "b@example.com"],
            "Secondary Email": [None, "b2@example.com"],
            "Website": ["example.com", "example.org"],
            "Stage": ["Cold", " "],
            "Updated": [20260102, 9],
            "First Name": ["A", "B"],
        }
    )
    out = apply_mapping(batch, plan)
    assert out.column("tags").type == pa.list_(pa.string())
    d = out.to_pydict()
    assert d["lead_email"] == ["a@example.com", "b2@example.com"]
    assert d["lead_status"] == ["Cold", None]
    assert d["workspace_id"] == ["65f0c0ffee0000000000beef"] * 2
    assert d["tags"] == [["q3", "webinar"]] * 2
    assert d["platform"] == ["apollo-q3"] * 2
    assert "company_domain" not in d
    # integers are zero-padded so that text order is number order ("9" < "20260102")
    assert d["_om_order"][1] < d["_om_order"][0]
    assert d["_om_row"] == [1, 2] and d["_om_source"] == ["test", "test"]


def test_cli_constants_win_over_mapping_file_and_replace_columns(tmp_path: Path) -> None:
    mapping = _write(tmp_path, '[constants]\nimport_name = "from file"\nicp = "A"\n')
    plan = plan_mapping(
        ["lead_email", "icp"], mapping_file=mapping, constants={"import_name": "from cli", "tags": "x, y"}
    )
    assert plan.constants == {"import_name": "from cli", "icp": "A", "tags": ["x", "y"]}
    assert "icp" not in plan.columns  # a constant replaces the column of the same field
    assert plan.unused == ["icp"]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[columns]\nlead_emial = "Email"\n', r"lead_emial.*did you mean 'lead_email'"),
        ('[constants]\nlead_email = "x@example.com"\n', r"unknown constant field 'lead_email'"),
        ("[constants]\nlinkedin_connection_level = 4\n", r"linkedin_connection_level.*must be one of"),
        ("colums = {}\n", r"colums"),
        ('[columns]\nlead_email = "Emial"\n', r"column 'Emial' for lead_email is not in the source"),
        ('order_by = "updated"\n', r"order_by column 'updated' is not in the source"),
        ('preset = "zoom"\n', r"unknown preset 'zoom'"),
        ("[columns\n", r"not valid TOML"),
    ],
)
def test_bad_mapping_file_is_a_clear_error(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(MappingError, match=message):
        plan_mapping(["Email", "Website"], mapping_file=_write(tmp_path, toml))


def test_missing_mapping_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="does not exist"):
        plan_mapping(["Email"], mapping_file=tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("raw", "fixed"),
    [
        ("MÃ¼ller", "Müller"),
        ("JosÃ© GarcÃ\xada", "José García"),
        ("FranÃ§ois", "François"),
        ("CafÃ© â€“ Bar", "Café – Bar"),
        ("Ã…sa StrÃ¶m", "Åsa Ström"),
        ("ÃƒÂ¼ber", "über"),  # decoded wrongly twice
        # left alone: genuine text, or not certain
        ("São Paulo", "São Paulo"),
        ("Zoë", "Zoë"),
        ("Ægir", "Ægir"),
        ("Ã", "Ã"),
        ("ÃŸ straße", "ÃŸ straße"),  # mixes a wrong decode with a right one: not certain
        ("MÃ¼ller 東京", "MÃ¼ller 東京"),  # a character cp1252 cannot hold
        ("plain ascii", "plain ascii"),
    ],
)
def test_mojibake_repaired_only_where_certain(raw: str, fixed: str) -> None:
    assert repair_mojibake(pa.array([raw, None])).to_pylist() == [fixed, None]


def test_numbers_become_digit_strings_and_lists_stay_lists() -> None:
    plan = plan_mapping(["company_employee_count", "company_name", "tags", "lead_email"])
    batch = _batch(
        {
            "company_employee_count": [1240.0, None, 3.0],
            "company_name": [1, 2, 3],
            "tags": [[" a ", ""], None, []],
            "lead_email": ["x@example.com", "  ", None],
        }
    )
    out = apply_mapping(batch, plan)
    assert all(out.column(n).type == pa.string() for n in ("company_employee_count", "company_name", "lead_email"))
    d = out.to_pydict()
    assert d["company_employee_count"] == ["1240", None, "3"]
    assert d["company_name"] == ["1", "2", "3"]
    assert d["tags"] == [["a"], None, None]
    assert d["lead_email"] == ["x@example.com", None, None]


def test_range_shaped_counts_move_to_the_range_and_an_explicit_range_wins() -> None:
    plan = plan_mapping(["company_domain", "company_employee_count", "company_employee_range"])
    batch = _batch(
        {
            "company_domain": ["a.example", "b.example", "c.example", "d.example"],
            "company_employee_count": ["1,240", "51-200", "10,001+", "201 to 500"],
            "company_employee_range": [None, None, None, "201-500"],
        }
    )
    d = apply_mapping(batch, plan).to_pydict()
    assert d["company_employee_count"] == ["1,240", None, None, None]
    assert d["company_employee_range"] == [None, "51-200", "10,001+", "201-500"]


def test_every_batch_of_a_source_has_the_same_columns() -> None:
    plan = plan_mapping(["Email", "Employees"], preset="generic")
    with_range = apply_mapping(_batch({"Email": ["a@example.com"], "Employees": ["51-200"]}), plan)
    without = apply_mapping(_batch({"Email": ["a@example.com"], "Employees": ["12"]}), plan)
    assert with_range.schema == without.schema


def _event_batch(events: list[str | None], senders: list[str | None]) -> pa.RecordBatch:
    n = len(events)
    return _batch(
        {
            "event_type": events,
            "lead.profile_url": [f"https://www.linkedin.com/in/lead-{i}" for i in range(n)],
            "sender.profile_url": senders,
        }
    )


def test_connection_level_only_on_events_that_prove_a_connection() -> None:
    plan = plan_mapping(["event_type", "lead.profile_url", "sender.profile_url"], preset="heyreach")
    s = "https://www.linkedin.com/in/sender"
    batch = _event_batch(
        [
            "CONNECTION_REQUEST_ACCEPTED",
            "message_reply_received",
            "CONNECTION_REQUEST_SENT",
            "INMAIL_REPLY_RECEIVED",
            "CONNECTION_REQUEST_ACCEPTED",
            None,
        ],
        [s, s, s, s, None, s],
    )
    d = apply_mapping(batch, plan).to_pydict()
    assert d["linkedin_connection_level"] == ["1", "1", None, None, None, None]
    assert d["sender"] == [s, s, None, None, None, None]


def test_a_mapping_that_sets_the_connection_itself_disables_the_derivation() -> None:
    plan = plan_mapping(
        ["event_type", "lead.profile_url", "sender.profile_url"],
        preset="heyreach",
        constants={"sender": "https://www.linkedin.com/in/me", "linkedin_connection_level": 2},
    )
    d = apply_mapping(_event_batch(["CONNECTION_REQUEST_SENT"], [None]), plan).to_pydict()
    assert d["sender"] == ["https://www.linkedin.com/in/me"]
    assert d["linkedin_connection_level"] == ["2"]


def test_lusha_bulk_document_joins_companies_and_skips_not_found() -> None:
    doc = json.loads((FIXTURES / "lusha_api.json").read_text(encoding="utf-8"))
    rows = list(lusha_document(doc) or [])
    assert [r["contactId"] for r in rows] == ["1", "3", "4"]
    assert rows[0]["company"]["domain"] == "vltava-example.com"
    assert rows[0]["emailAddresses"] == ["hana.novak@vltava-example.com", "hana.novak@example.net"]
    assert "company" not in rows[2]  # companyId 777 is not in the map: nothing invented
    single = {"contact": {"data": {"firstName": "A", "company": {"name": "B"}}}}
    assert list(lusha_document(single) or []) == [{"firstName": "A", "company": {"name": "B"}}]
    assert lusha_document([{"contacts": {}}]) is None
    assert lusha_document({"data": [{"a": 1}]}) is None


def test_every_preset_maps_only_to_api_fields() -> None:
    from destinations.outreach_magic.settings import CANONICAL_FIELDS

    for preset in PRESETS.values():
        assert set(preset.columns) <= set(CANONICAL_FIELDS), preset.name
    assert set(PRESETS) == {
        "apollo",
        "zoominfo",
        "lusha",
        "clearbit",
        "clay",
        "heyreach",
        "prosp",
        "canonical",
        "generic",
    }


def test_readme_documents_every_preset_column_and_marks_guesses() -> None:
    readme = (Path(__file__).parent.parent / "sources" / "README.md").read_text(encoding="utf-8")
    for preset in PRESETS.values():
        if preset.name == "canonical":
            continue
        section = readme.split(f"### `{preset.name}`", 1)[1].split("\n### ", 1)[0]
        for field_name, aliases in preset.columns.items():
            row = next(line for line in section.splitlines() if line.startswith(f"| `{field_name}` |"))
            for alias in aliases:
                assert f"`{alias}`" + (" †" if alias in preset.guessed else "") in row, (preset.name, alias)


def test_readers_alone_know_the_lusha_bulk_form() -> None:
    """A fresh interpreter that imports only the readers still gets one row per Lusha contact."""
    import subprocess
    import sys

    code = (
        "from sources.readers import read_source\n"
        f"rows = [r for b in read_source({str(FIXTURES / 'lusha_api.json')!r}) for r in b.to_pylist()]\n"
        "print(len(rows), rows[0]['company.domain'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["3", "vltava-example.com"]


def test_a_key_first_seen_after_the_header_peek_is_still_mapped(tmp_path: Path) -> None:
    """Listing JSONL columns samples the first records; the plan follows the real rows."""
    path = tmp_path / "events.jsonl"
    event = {"event_type": "CONNECTION_REQUEST_SENT", "campaign": {"name": "c"}, "sender": {"profile_url": "s"}}
    lines = [json.dumps({**event, "lead": {"profile_url": f"https://www.linkedin.com/in/p{i}"}}) for i in range(1500)]
    lines.append(
        json.dumps(
            {**event, "lead": {"profile_url": "https://www.linkedin.com/in/late", "email_address": "late@example.com"}}
        )
    )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    source = open_source(path)
    assert source.plan.preset == "heyreach"
    emails = [e for b in source for e in b.column("lead_email").to_pylist() if e]
    assert emails == ["late@example.com"]
    assert source.plan.columns["lead_email"] == "lead.email_address"
