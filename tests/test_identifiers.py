"""Identifier normalization: every rule of ``identifiers.py``, the traps, and the columnar path.

The tables below are the specification in examples: ``(input, expected)`` for values that
normalize, ``(input, reason fragment)`` for values that must be rejected. Each valid
output is also checked against the contract's own format rules, and every input is run
through ``normalize_table`` both with and without the Arrow prefilters, which must agree.
"""

from __future__ import annotations

import math
import socket
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from destinations.outreach_magic import identifiers as ids
from destinations.outreach_magic import settings as s
from destinations.outreach_magic.contract import format_error
from destinations.outreach_magic.identifiers import (
    NORMALIZERS,
    IdentifierError,
    RowIssue,
    normalize_connection_level,
    normalize_domain,
    normalize_email,
    normalize_employee_count,
    normalize_linkedin_company_url,
    normalize_linkedin_profile_url,
    normalize_sales_navigator_url,
    normalize_table,
    normalize_tags,
    normalize_text,
)

P = "https://www.linkedin.com/in/"

EMAIL_OK = [
    ("jane.doe@example.com", "jane.doe@example.com"),
    ("  Jane.Doe@Example.COM ", "jane.doe@example.com"),
    ("mailto:jane@example.com", "jane@example.com"),
    ("MAILTO:jane@example.com?subject=Hello", "jane@example.com"),
    ("<jane@example.com>", "jane@example.com"),
    ("Jane Doe <Jane.Doe@Example.com>", "jane.doe@example.com"),
    ('"jane@example.com"', "jane@example.com"),
    ("jane@bücher.example", "jane@xn--bcher-kva.example"),
    ("jane@BÜCHER.example", "jane@xn--bcher-kva.example"),
    ("jane.doe+crm@gmail.com", "jane.doe+crm@gmail.com"),  # +tags and dots are part of the address
    ("j.a.n.e@gmail.com", "j.a.n.e@gmail.com"),
    ("jane@sub.example.co.uk", "jane@sub.example.co.uk"),
    ("jane@example.com.", "jane@example.com"),
    ("\u200bjane@example.com\ufeff", "jane@example.com"),
    ("o'brien@example.ie", "o'brien@example.ie"),
    ("josé@example.com", "josé@example.com"),
]
EMAIL_BAD = [
    ("n/a", "placeholder"),
    ("N/A", "placeholder"),
    ("-", "placeholder"),
    ("none", "placeholder"),
    ("unknown", "placeholder"),
    ("null", "placeholder"),
    ("email_not_unlocked@domain.com", "Apollo"),
    ("jane.example.com", "no '@'"),
    ("jane@@example.com", "several '@'"),
    ("jane@example.com; john@example.com", "several '@'"),
    ("jane doe@example.com", "spaces"),
    ("jane@localhost", "not an email address"),
    ("jane..doe@example.com", "not an email address"),
    (".jane@example.com", "not an email address"),
    ("jane@example.123", "not an email address"),
    ("@example.com", "empty"),
    ("jane@-bad-.com", "not an email address"),
    ("a" * 65 + "@example.com", "too long"),
]

PROFILE_OK = [
    ("https://www.linkedin.com/in/jane-doe/", P + "jane-doe/"),
    ("https://www.linkedin.com/in/jane-doe", P + "jane-doe/"),
    ("http://www.linkedin.com/in/jane-doe", P + "jane-doe/"),
    ("linkedin.com/in/jane-doe", P + "jane-doe/"),
    ("www.linkedin.com/in/jane-doe/", P + "jane-doe/"),
    ("//www.linkedin.com/in/jane-doe", P + "jane-doe/"),
    ("https://uk.linkedin.com/in/jane-doe", P + "jane-doe/"),
    ("https://m.linkedin.com/in/jane-doe", P + "jane-doe/"),
    ("HTTPS://WWW.LINKEDIN.COM/IN/JANE-DOE", P + "jane-doe/"),
    ("https://www.linkedin.com/in/Jane-Doe-1a2b3c", P + "jane-doe-1a2b3c/"),
    ("https://www.linkedin.com/in/jane-doe?trk=public_profile", P + "jane-doe/"),
    ("https://de.linkedin.com/in/jane-doe?originalSubdomain=de", P + "jane-doe/"),
    ("https://www.linkedin.com/in/jane-doe#experience", P + "jane-doe/"),
    ("https://www.linkedin.com/in/jane-doe/en", P + "jane-doe/"),
    ("https://www.linkedin.com/in/jane-doe/details/experience/", P + "jane-doe/"),
    ("https://www.linkedin.com/in/jane-doe/recent-activity/all/", P + "jane-doe/"),
    ("https://www.linkedin.com/in/jane-doe/overlay/contact-info/", P + "jane-doe/"),
    ("https://www.linkedin.com/mwlite/in/jane-doe", P + "jane-doe/"),
    ("https://www.linkedin.com/comm/in/jane-doe/", P + "jane-doe/"),
    ("in/jane-doe", P + "jane-doe/"),
    ("/in/jane-doe", P + "jane-doe/"),
    ("https://www.linkedin.com/in/%C3%A9lodie-durand", P + "élodie-durand/"),
    ("https://www.linkedin.com/in/%C3%89LODIE-DURAND/", P + "élodie-durand/"),
    ("https://www.linkedin.com/in/%E6%9D%8E%E5%A8%9C", P + "李娜/"),
    ("https://www.linkedin.com/in/ACoAAAbCdEfGhIjKlMnOp", P + "ACoAAAbCdEfGhIjKlMnOp/"),
    ("https://www.linkedin.com/in/ACwAAAbCdEf/details/", P + "ACwAAAbCdEf/"),
    # /pub/: LinkedIn's redirect target, reversed id segments, the later two zero-padded
    ("https://www.linkedin.com/pub/jane-doe/1a/2b/3c", P + "jane-doe-03c02b1a/"),
    ("https://sy.linkedin.com/pub/krzysztof-marzec/a7/576/b50?trk=biz", P + "krzysztof-marzec-b50576a7/"),
    ("https://uk.linkedin.com/pub/abdi-ahmed/100/384/6b0", P + "abdi-ahmed-6b0384100/"),
]
PROFILE_BAD = [
    ("https://lnkd.in/dAbC123", "lnkd.in short link"),
    ("https://www.linkedin.com/company/acme", "company page"),
    ("https://www.linkedin.com/school/mit/", "school page"),
    ("https://www.linkedin.com/sales/lead/ACwAAA1,NAME_SEARCH,x", "Sales Navigator"),
    ("https://www.linkedin.com/profile/view?id=12345", "profile/view"),
    ("https://www.linkedin.com/pub/dir/jane/doe", "without its id segments"),
    ("https://www.linkedin.com/pub/jane-doe", "without its id segments"),
    ("https://www.linkedin.com/in/", "not a LinkedIn profile URL"),
    ("https://www.linkedin.com/feed/", "not a LinkedIn profile URL"),
    ("https://www.example.com/in/jane-doe", "not a LinkedIn URL"),
    ("https://linkedin.com.evil.example/in/jane", "not a LinkedIn URL"),
    ("ftp://www.linkedin.com/in/jane", "scheme"),
    ("https://www.linkedin.com/in/jane doe", "spaces"),
    ("https://www.linkedin.com/in/%FF%FE", "percent-encoded"),
    ("n/a", "placeholder"),
    ("jane-doe", "not a LinkedIn"),
]

S = "https://www.linkedin.com/sales/lead/"
SALES_OK = [
    ("https://www.linkedin.com/sales/lead/ACwAAAbCdEf,NAME_SEARCH,x1Yz", S + "ACwAAAbCdEf"),
    ("https://www.linkedin.com/sales/lead/ACwAAAbCdEf,NAME_SEARCH,x1Yz?_ntb=abc", S + "ACwAAAbCdEf"),
    ("http://linkedin.com/sales/people/ACwAAAbCdEf,NAME_SEARCH", S + "ACwAAAbCdEf"),
    ("https://www.linkedin.com/sales/lead/ACwAAAbCdEf%2CNAME_SEARCH%2Cx1Yz", S + "ACwAAAbCdEf"),
    ("https://www.linkedin.com/sales/lead/ACwAAAbCdEf", S + "ACwAAAbCdEf"),
    ("https://www.linkedin.com/sales/lead/ACwAAAbCdEf/", S + "ACwAAAbCdEf"),
]
SALES_BAD = [
    # a tool lower-cased the whole URL: the id's case is lost; it is not "repaired"
    ("https://www.linkedin.com/sales/lead/acwaaabcdef,name_search,x1yz", "lower-cased"),
    ("https://www.linkedin.com/sales/company/1234", "not a Sales Navigator lead URL"),
    ("https://www.linkedin.com/sales/search/people?query=x", "not a Sales Navigator lead URL"),
    ("https://www.linkedin.com/in/jane-doe", "belongs in lead_linkedin_url"),
    ("https://www.linkedin.com/sales/lead/ACw!AA,NAME", "unexpected characters"),
    ("https://lnkd.in/x", "lnkd.in"),
]

C = "https://www.linkedin.com/company/"
COMPANY_OK = [
    ("https://www.linkedin.com/company/acme-inc/", C + "acme-inc/"),
    ("https://www.linkedin.com/company/Acme-Inc", C + "acme-inc/"),
    ("linkedin.com/company/acme-inc/about/", C + "acme-inc/"),
    ("https://uk.linkedin.com/company/acme-inc/people/?viewAsMember=true", C + "acme-inc/"),
    ("company/acme-inc", C + "acme-inc/"),
    ("https://www.linkedin.com/company/1035/", C + "1035/"),
    ("https://www.linkedin.com/company/soci%C3%A9t%C3%A9-g%C3%A9n%C3%A9rale", C + "société-générale/"),
    ("https://www.linkedin.com/school/mit/", "https://www.linkedin.com/school/mit/"),
    ("https://www.linkedin.com/showcase/acme-cloud/", "https://www.linkedin.com/showcase/acme-cloud/"),
    ("https://www.linkedin.com/mwlite/company/acme-inc", C + "acme-inc/"),
]
COMPANY_BAD = [
    ("https://www.linkedin.com/in/jane-doe", "a person's profile"),
    ("in/jane-doe", "a person's profile"),
    ("https://www.linkedin.com/company/", "not a LinkedIn company URL"),
    ("https://lnkd.in/x", "lnkd.in"),
    ("https://www.acme.com", "not a LinkedIn URL"),
    ("--", "placeholder"),
]

DOMAIN_OK = [
    ("example.com", "example.com"),
    ("Example.COM", "example.com"),
    ("www.example.com", "example.com"),
    ("https://www.example.com", "example.com"),
    ("http://example.com/", "example.com"),
    ("https://www.example.com/about-us?utm_source=linkedin&utm_medium=social#team", "example.com"),
    ("https://shop.example.com:8443/p?id=1", "example.com"),
    ("https://user:pw@www.example.com/", "example.com"),
    ("example.com.", "example.com"),
    ("//example.com/x", "example.com"),
    ("www.example.co.uk", "example.co.uk"),
    ("https://blog.example.co.uk/post", "example.co.uk"),
    ("example.com.au", "example.com.au"),
    # PSL private section: the registrable domain sits under the private suffix
    ("foo.github.io", "foo.github.io"),
    ("https://www.foo.github.io/", "foo.github.io"),
    ("x.herokuapp.com", "x.herokuapp.com"),
    ("my-shop.myshopify.com", "my-shop.myshopify.com"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("https://www.BÜCHER.example/katalog", "xn--bcher-kva.example"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("jane@example.com", "example.com"),
    ("mailto:Jane@Mail.Example.co.uk", "example.co.uk"),
    ("jane@bücher.example", "xn--bcher-kva.example"),
    ("acme.internal", "acme.internal"),  # the PSL's implicit "*" rule for unlisted TLDs
    ("linkedin.com", "linkedin.com"),  # LinkedIn's own site is a company website
    ("www.ck", "www.ck"),  # a PSL exception rule (!www.ck)
]
DOMAIN_BAD = [
    ("github.io", "public suffix"),
    ("co.uk", "public suffix"),
    ("localhost", "single label"),
    ("http://192.168.0.1/", "IP address"),
    ("http://[::1]/", "IP address"),
    ("https://www.linkedin.com/company/acme", "a page on linkedin.com"),
    ("https://facebook.com/acme", "a page on facebook.com"),
    ("ftp://example.com", "scheme"),
    ("example .com", "spaces"),
    ("n/a", "placeholder"),
    ("email_not_unlocked@domain.com", "email without a usable domain"),
    ("my_site.example.com", "invalid host name"),
    ("example.com:http", "bad port"),
]

EMPLOYEES_OK: list[tuple[Any, str]] = [
    ("1240", "1240"),
    (" 1,240 ", "1240"),
    ("10,000", "10000"),
    ("1 240", "1240"),
    ("1\u00a0240", "1240"),
    ("1'240", "1240"),
    ("1.240", "1240"),  # a dot before exactly three digits can only group thousands
    ("1240.0", "1240"),
    ("1.2k", "1200"),
    ("12K", "12000"),
    ("3M", "3000000"),
    ("250 employees", "250"),
    ("0", "0"),
    ("007", "7"),
    (1240, "1240"),
    (1240.0, "1240"),
]
EMPLOYEES_BAD: list[tuple[Any, str]] = [
    ("51-200", "a range"),
    ("51 - 200", "a range"),
    ("51 to 200", "a range"),
    ("10,001+", "a range"),
    ("~500", "approximation"),
    ("<50", "approximation"),
    ("1.5", "not a whole number"),
    ("1.2345k", "not a whole number"),
    ("-5", "negative"),
    (-5, "negative"),
    (12.5, "not a whole"),
    ("n/a", "placeholder"),
    ("lots", "not a whole number"),
    (True, "not text"),
]

LEVEL_OK: list[tuple[Any, str]] = [
    ("1", "1"),
    (1, "1"),
    (2.0, "2"),
    ("1st", "1"),
    ("2nd", "2"),
    ("3rd", "3"),
    ("3rd+", "3"),
    ("2ND", "2"),
    ("first", "1"),
    ("2nd degree", "2"),
    ("DISTANCE_3", "3"),
]
LEVEL_BAD: list[tuple[Any, str]] = [
    ("4", "1, 2 or 3"),
    ("OUT_OF_NETWORK", "1, 2 or 3"),
    ("1st+", "1, 2 or 3"),
    (0, "1, 2 or 3"),
]

TAGS_OK: list[tuple[Any, list[str]]] = [
    ("vip", ["vip"]),
    ("vip; q3-webinar ; ", ["vip", "q3-webinar"]),
    ("a,b|c;d", ["a", "b", "c", "d"]),
    (" a , a , b ", ["a", "b"]),
    (["vip", " q3 ", "", None, "vip"], ["vip", "q3"]),
    ('["vip", "needs follow-up"]', ["vip", "needs follow-up"]),
    ("  two  words  ", ["two words"]),
]

TEXT_OK = [
    ("  Jane  ", "Jane"),
    ("Jane\u00a0 Doe", "Jane Doe"),
    ("VP\tSales\nEMEA", "VP Sales EMEA"),
    ("Ja\x00ne\u200b", "Jane"),
    ("Cafe\u0301", "Café"),  # NFC: the same text compares equal
    ("n/a", "n/a"),  # kept: in free text a placeholder cannot be told from a value ("NA" = Namibia)
    ("NA", "NA"),
    ("مهرداد\u200cپور", "مهرداد\u200cپور"),  # ZWNJ carries meaning in Persian: kept
]


def _ids(cases: list[tuple[Any, Any]]) -> list[str]:
    return [repr(c[0])[:60] for c in cases]


def _check_ok(fn: Any, field: str, raw: Any, expected: Any) -> None:
    out = fn(raw)
    assert out == expected
    if isinstance(out, str):
        assert format_error(field, out) is None
    assert fn(out) == out  # normalizing twice changes nothing


def _check_bad(fn: Any, field: str, raw: Any, fragment: str) -> None:
    with pytest.raises(IdentifierError) as info:
        fn(raw)
    err = info.value
    assert err.column == field
    assert err.value == raw
    assert fragment in err.reason
    assert str(err) == f"{field}: {raw!r} is {err.reason}"
    assert isinstance(err, ValueError)


@pytest.mark.parametrize(("raw", "expected"), EMAIL_OK, ids=_ids(EMAIL_OK))
def test_email_normalizes(raw: str, expected: str) -> None:
    _check_ok(normalize_email, "lead_email", raw, expected)


@pytest.mark.parametrize(("raw", "fragment"), EMAIL_BAD, ids=_ids(EMAIL_BAD))
def test_email_invalid(raw: str, fragment: str) -> None:
    _check_bad(normalize_email, "lead_email", raw, fragment)


def test_error_message_reads_as_documented() -> None:
    with pytest.raises(IdentifierError) as info:
        normalize_email("n/a")
    assert str(info.value) == "lead_email: 'n/a' is not an email address (placeholder)"


@pytest.mark.parametrize(("raw", "expected"), PROFILE_OK, ids=_ids(PROFILE_OK))
def test_profile_url_normalizes(raw: str, expected: str) -> None:
    _check_ok(normalize_linkedin_profile_url, "lead_linkedin_url", raw, expected)


@pytest.mark.parametrize(("raw", "fragment"), PROFILE_BAD, ids=_ids(PROFILE_BAD))
def test_profile_url_invalid(raw: str, fragment: str) -> None:
    _check_bad(normalize_linkedin_profile_url, "lead_linkedin_url", raw, fragment)


def test_sender_uses_the_profile_rule_and_names_its_column() -> None:
    assert NORMALIZERS["sender"]("uk.linkedin.com/in/Sam-Seller?trk=x") == P + "sam-seller/"
    with pytest.raises(IdentifierError) as info:
        NORMALIZERS["sender"]("https://lnkd.in/x")
    assert info.value.column == "sender"


def test_two_people_with_the_same_name_stay_apart() -> None:
    a = normalize_linkedin_profile_url("https://www.linkedin.com/in/john-smith-1a2b3c/")
    b = normalize_linkedin_profile_url("https://uk.linkedin.com/in/John-Smith-4d5e6f?trk=x")
    assert a == P + "john-smith-1a2b3c/" and b == P + "john-smith-4d5e6f/"
    assert normalize_email("John.Smith@acme.example") != normalize_email("john.smith@globex.example")
    table = normalize_table(pa.table({"lead_linkedin_url": ["in/john-smith-1a2b3c", "in/john-smith-4d5e6f"]})).table
    assert len(set(table["lead_linkedin_url"].to_pylist())) == 2


def test_member_id_keeps_its_case_but_a_vanity_slug_does_not() -> None:
    assert normalize_linkedin_profile_url("linkedin.com/in/ACoAABcD") == P + "ACoAABcD/"
    assert normalize_linkedin_profile_url("linkedin.com/in/AcoaaBcD") == P + "acoaabcd/"


@pytest.mark.parametrize(("raw", "expected"), SALES_OK, ids=_ids(SALES_OK))
def test_sales_navigator_url_normalizes(raw: str, expected: str) -> None:
    _check_ok(normalize_sales_navigator_url, "lead_sales_navigator_url", raw, expected)


@pytest.mark.parametrize(("raw", "fragment"), SALES_BAD, ids=_ids(SALES_BAD))
def test_sales_navigator_url_invalid(raw: str, fragment: str) -> None:
    _check_bad(normalize_sales_navigator_url, "lead_sales_navigator_url", raw, fragment)


@pytest.mark.parametrize(("raw", "expected"), COMPANY_OK, ids=_ids(COMPANY_OK))
def test_company_url_normalizes(raw: str, expected: str) -> None:
    _check_ok(normalize_linkedin_company_url, "company_linkedin_url", raw, expected)


@pytest.mark.parametrize(("raw", "fragment"), COMPANY_BAD, ids=_ids(COMPANY_BAD))
def test_company_url_invalid(raw: str, fragment: str) -> None:
    _check_bad(normalize_linkedin_company_url, "company_linkedin_url", raw, fragment)


@pytest.mark.parametrize(("raw", "expected"), DOMAIN_OK, ids=_ids(DOMAIN_OK))
def test_domain_normalizes(raw: str, expected: str) -> None:
    _check_ok(normalize_domain, "company_domain", raw, expected)


@pytest.mark.parametrize(("raw", "fragment"), DOMAIN_BAD, ids=_ids(DOMAIN_BAD))
def test_domain_invalid(raw: str, fragment: str) -> None:
    _check_bad(normalize_domain, "company_domain", raw, fragment)


@pytest.mark.parametrize(("raw", "expected"), EMPLOYEES_OK, ids=_ids(EMPLOYEES_OK))
def test_employee_count_normalizes(raw: Any, expected: str) -> None:
    _check_ok(normalize_employee_count, "company_employee_count", raw, expected)


@pytest.mark.parametrize(("raw", "fragment"), EMPLOYEES_BAD, ids=_ids(EMPLOYEES_BAD))
def test_employee_count_invalid(raw: Any, fragment: str) -> None:
    _check_bad(normalize_employee_count, "company_employee_count", raw, fragment)


def test_employee_range_column_keeps_ranges_as_text() -> None:
    assert NORMALIZERS["company_employee_range"](" 51-200 ") == "51-200"
    assert NORMALIZERS["company_employee_range"]("10,001+") == "10,001+"


@pytest.mark.parametrize(("raw", "expected"), LEVEL_OK, ids=_ids(LEVEL_OK))
def test_connection_level_normalizes(raw: Any, expected: str) -> None:
    assert normalize_connection_level(raw) == expected
    assert expected in s.CONNECTION_LEVELS


@pytest.mark.parametrize(("raw", "fragment"), LEVEL_BAD, ids=_ids(LEVEL_BAD))
def test_connection_level_invalid(raw: Any, fragment: str) -> None:
    _check_bad(normalize_connection_level, "linkedin_connection_level", raw, fragment)


@pytest.mark.parametrize(("raw", "expected"), TAGS_OK, ids=_ids(TAGS_OK))
def test_tags_normalize(raw: Any, expected: list[str]) -> None:
    assert normalize_tags(raw) == expected


def test_tags_result_is_a_fresh_list_each_call() -> None:
    first = normalize_tags("a;b")
    assert first is not None
    first.append("mutated")
    assert normalize_tags("a;b") == ["a", "b"]


@pytest.mark.parametrize(("raw", "expected"), TEXT_OK, ids=_ids(TEXT_OK))
def test_text_normalizes(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_description_keeps_line_breaks() -> None:
    assert NORMALIZERS["company_description"](" We build\r\nrockets.\r\n\r\nAnd cars. ") == (
        "We build\nrockets.\n\nAnd cars."
    )


def test_text_over_the_contract_limit_is_invalid_not_truncated() -> None:
    with pytest.raises(IdentifierError, match="longer than"):
        NORMALIZERS["company_name"]("x" * (s.MAX_STRING_LENGTH + 1))


@pytest.mark.parametrize(
    ("field", "raw", "expected"),
    [
        ("unified_lead_id", " 65A1F0C2B3D4E5F607182930 ", "65a1f0c2b3d4e5f607182930"),
        ("unified_company_id", "65a1f0c2b3d4e5f607182930", "65a1f0c2b3d4e5f607182930"),
        ("workspace_id", "65A1F0C2B3D4E5F607182930", "65a1f0c2b3d4e5f607182930"),
        ("lead_linkedin_id", " ACoAAAbCdEf ", "ACoAAAbCdEf"),
        ("lead_linkedin_id", 123456789, "123456789"),
    ],
)
def test_ids_normalize(field: str, raw: Any, expected: str) -> None:
    assert NORMALIZERS[field](raw) == expected
    assert format_error(field, expected) is None


@pytest.mark.parametrize(
    ("field", "raw", "fragment"),
    [
        ("unified_lead_id", "65a1f0c2b3d4e5f6071829", "24-character hex"),
        ("unified_company_id", "zz a1f0c2b3d4e5f607182930", "24-character hex"),
        ("workspace_id", "n/a", "placeholder"),
        ("lead_linkedin_id", "https://www.linkedin.com/in/jane", "a URL is not an id"),
        ("lead_linkedin_id", "unknown", "placeholder"),
    ],
)
def test_ids_invalid(field: str, raw: Any, fragment: str) -> None:
    _check_bad(NORMALIZERS[field], field, raw, fragment)


def test_normalizers_cover_every_canonical_field() -> None:
    assert set(NORMALIZERS) == set(s.CANONICAL_FIELDS)


@pytest.mark.parametrize("field", s.CANONICAL_FIELDS)
@pytest.mark.parametrize("empty", [None, "", "   ", "\u200b", math.nan], ids=repr)
def test_empty_means_not_provided_in_every_column(field: str, empty: Any) -> None:
    assert NORMALIZERS[field](empty) is None


def test_placeholder_is_invalid_in_identifier_columns_but_kept_in_text() -> None:
    for field in (*s.LEAD_IDENTIFIERS, *s.COMPANY_IDENTIFIERS, "sender", "company_employee_count"):
        with pytest.raises(IdentifierError, match="placeholder"):
            NORMALIZERS[field]("N/A")
    assert NORMALIZERS["lead_job_title"]("N/A") == "N/A"


# --- offline PSL -----------------------------------------------------------------------


def test_public_suffix_list_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    import requests

    monkeypatch.setattr(requests.Session, "request", refuse)
    extractor = ids.public_suffix_extractor.__wrapped__()  # a fresh one, loading its list now
    assert tuple(extractor.suffix_list_urls) == ()
    result = extractor.extract_str("www.foo.github.io")
    assert (result.domain, result.suffix) == ("foo", "github.io")
    ids.public_suffix_extractor.cache_clear()
    ids._domain.cache_clear()
    ids._suffix_sets.cache_clear()
    try:
        assert normalize_domain("https://x.herokuapp.com/app") == "x.herokuapp.com"
        assert normalize_table(pa.table({"company_domain": ["www.acme.co.uk"]})).table[0][0].as_py() == (
            "acme.co.uk"
        )
    finally:
        ids.public_suffix_extractor.cache_clear()
        ids._suffix_sets.cache_clear()


# --- the columnar path -----------------------------------------------------------------

ALL_CASES: dict[str, list[Any]] = {
    "lead_email": [c[0] for c in EMAIL_OK + EMAIL_BAD],
    "lead_linkedin_url": [c[0] for c in PROFILE_OK + PROFILE_BAD],
    "lead_sales_navigator_url": [c[0] for c in SALES_OK + SALES_BAD],
    "company_linkedin_url": [c[0] for c in COMPANY_OK + COMPANY_BAD],
    "company_domain": [c[0] for c in DOMAIN_OK + DOMAIN_BAD],
    "company_employee_count": [c[0] for c in EMPLOYEES_OK + EMPLOYEES_BAD if isinstance(c[0], str)],
    "linkedin_connection_level": [c[0] for c in LEVEL_OK + LEVEL_BAD if isinstance(c[0], str)],
    "lead_first_name": [c[0] for c in TEXT_OK],
    "tags": [c[0] for c in TAGS_OK if isinstance(c[0], str)],
}


def _expected(field: str, raw: Any) -> tuple[Any, str | None]:
    try:
        return NORMALIZERS[field](raw), None
    except IdentifierError as exc:
        return None, exc.reason


@pytest.mark.parametrize("field", list(ALL_CASES))
@pytest.mark.parametrize("fast", [True, False], ids=["prefiltered", "python-only"])
def test_normalize_table_matches_the_scalar_functions(field: str, fast: bool) -> None:
    values = [*ALL_CASES[field], None, ""]
    result = normalize_table(pa.table({field: pa.array(values, pa.string())}), fast=fast)
    got = result.table[field].to_pylist()
    errors = {e.row: e for e in result.errors}
    for row, raw in enumerate(values):
        expected, reason = _expected(field, raw)
        assert got[row] == expected, raw
        if reason is None:
            assert row not in errors, raw
        else:
            assert errors[row] == RowIssue(row, field, raw, reason)
    assert len(errors) == len(result.errors)


def test_normalize_table_mixed_rows_report_row_column_and_value() -> None:
    batch = pa.record_batch(
        {
            "_om_row": pa.array([10, 11, 12], pa.int64()),
            "lead_email": ["Jane@Example.com", "n/a", None],
            "lead_linkedin_url": ["uk.linkedin.com/in/jane", "linkedin.com/in/john", "https://lnkd.in/x"],
            "company_domain": ["https://www.acme.co.uk/?utm_source=x", "acme.co.uk", "github.io"],
            "company_employee_count": pa.array([1240, None, 7], pa.int64()),
            "tags": ["a; b", None, "c"],
            "_om_source": ["f.csv", "f.csv", "f.csv"],
        }
    )
    result = normalize_table(batch)
    out = result.table
    assert isinstance(out, pa.RecordBatch)
    assert out.schema.names == batch.schema.names
    assert out.column("_om_row").equals(batch.column("_om_row"))
    assert out.column("_om_source").equals(batch.column("_om_source"))
    assert out.column("lead_email").to_pylist() == ["jane@example.com", None, None]
    assert out.column("lead_linkedin_url").to_pylist() == [P + "jane/", P + "john/", None]
    assert out.column("company_domain").to_pylist() == ["acme.co.uk", "acme.co.uk", None]
    assert out.column("company_employee_count").type == pa.string()
    assert out.column("company_employee_count").to_pylist() == ["1240", None, "7"]
    assert out.column("tags").type == pa.list_(pa.string())
    assert out.column("tags").to_pylist() == [["a", "b"], None, ["c"]]
    assert [(e.row, e.column, e.value) for e in result.errors] == [
        (1, "lead_email", "n/a"),
        (2, "lead_linkedin_url", "https://lnkd.in/x"),
        (2, "company_domain", "github.io"),
    ]
    assert "placeholder" in result.errors[0].reason
    for field in ("lead_email", "lead_linkedin_url", "company_domain", "company_employee_count"):
        for value in out.column(field).to_pylist():
            assert value is None or format_error(field, value) is None


def test_normalize_table_accepts_chunked_dictionary_and_list_columns() -> None:
    table = pa.concat_tables(
        [
            pa.table({"company_domain": pa.array(["www.acme.example", "n/a"]).dictionary_encode(),
                      "tags": pa.array([["x", " y "], None], pa.list_(pa.string()))}),
            pa.table({"company_domain": pa.array(["acme.example", None]).dictionary_encode(),
                      "tags": pa.array([["x", "x"], []], pa.list_(pa.string()))}),
        ]
    )  # fmt: skip
    result = normalize_table(table)
    assert isinstance(result.table, pa.Table)
    assert result.table["company_domain"].to_pylist() == ["acme.example", None, "acme.example", None]
    assert result.table["tags"].to_pylist() == [["x", "y"], None, ["x"], None]
    assert [(e.row, e.column) for e in result.errors] == [(1, "company_domain")]


def test_repetitive_columns_go_through_their_distinct_values_with_exact_error_rows() -> None:
    n = ids.REPETITIVE_SAMPLE * 2
    values = [("https://www.acme.co.uk/x", "unknown", "foo.github.io", None)[i % 4] for i in range(n)]
    result = normalize_table(pa.table({"company_domain": values}))
    got = result.table["company_domain"].to_pylist()
    assert got[:4] == ["acme.co.uk", None, "foo.github.io", None]
    assert got == [got[i % 4] for i in range(n)]
    assert [e.row for e in result.errors] == list(range(1, n, 4))
    assert all(e.value == "unknown" and "placeholder" in e.reason for e in result.errors)


def test_empty_and_all_null_tables() -> None:
    assert normalize_table(pa.table({"lead_email": pa.array([], pa.string())})).table.num_rows == 0
    result = normalize_table(pa.table({"lead_email": pa.nulls(3), "tags": pa.nulls(3)}))
    assert result.table["lead_email"].to_pylist() == [None, None, None]
    assert result.table["tags"].type == pa.list_(pa.string())
    assert result.errors == []


# Random URL-ish and email-ish strings: the Arrow prefilters must never disagree with Python.
_PIECES = st.sampled_from(
    ["https://", "http://", "HTTP://", "www.", "uk.", "m.", "linkedin.com", "LinkedIn.com", "/in/", "/IN/",
     "/company/", "/sales/lead/", "/mwlite", "/comm", "/pub/", "ACoAA", "ACwAA", "acwaa", "jane", "Doe", "-",
     "_", "1a", "%C3%A9", "?trk=x", "#f", "/", ",NAME_SEARCH", "@", "example", ".com", ".co.uk", ".github.io",
     ".", ":8080", " ", "\u00a0", "ü", "xn--", "email_not_unlocked", "n/a", "9", "%FF", "\\", "\t", ".ck",
     "www", ".uk", "co", ".herokuapp.com", "mailto:", "MAILTO:", "<", ">", "?", '"', "1,2", "k"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_PIECES, min_size=1, max_size=8).map("".join), min_size=1, max_size=12))
def test_prefilters_agree_with_the_python_path(values: list[str]) -> None:
    fields = ["lead_email", "lead_linkedin_url", "lead_sales_navigator_url", "company_linkedin_url",
              "company_domain", "company_employee_count", "lead_job_title"]  # fmt: skip
    table = pa.table({f: pa.array(values, pa.string()) for f in fields})
    fast, slow = normalize_table(table, fast=True), normalize_table(table, fast=False)
    assert fast.table.equals(slow.table)
    assert fast.errors == slow.errors
