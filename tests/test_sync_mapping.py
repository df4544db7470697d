"""SCIM user → Graph user properties (the README's mapping table)."""

from __future__ import annotations

from scim_server.scim.schema import ENTERPRISE_SCHEMA
from scim_server.sync import mapping

DOC = {
    "userName": "Bjensen@Example.com",
    "active": False,
    "name": {"givenName": "Barbara", "familyName": "Jensen"},
    "title": "Tour Guide",
    "emails": [{"value": "babs@example.org", "type": "home"}],
    "addresses": [
        {
            "type": "work",
            "formatted": "Building 4",
            "streetAddress": "100 Universal City Plaza",
            "locality": "Hollywood",
            "region": "CA",
            "postalCode": "91608",
            "country": "US",
        }
    ],
    "phoneNumbers": [
        {"value": "555-555-5555", "type": "work"},
        {"value": "555-555-4444", "type": "mobile"},
    ],
    ENTERPRISE_SCHEMA: {
        "employeeNumber": "701984",
        "organization": "Universal Studios",
        "department": "Tour Operations",
        "manager": {"value": "m-1"},
    },
    mapping.M365_SCHEMA: {"usageLocation": "us"},
}


def test_every_mapped_property() -> None:
    props = mapping.user_properties(DOC, default_usage_location="GB")
    assert props == {
        "userPrincipalName": "Bjensen@Example.com",
        "mailNickname": "Bjensen",
        "accountEnabled": False,
        "displayName": "Barbara Jensen",
        "givenName": "Barbara",
        "surname": "Jensen",
        "jobTitle": "Tour Guide",
        "department": "Tour Operations",
        "employeeId": "701984",
        "companyName": "Universal Studios",
        "officeLocation": "Building 4",
        "streetAddress": "100 Universal City Plaza",
        "city": "Hollywood",
        "state": "CA",
        "postalCode": "91608",
        "country": "US",
        "businessPhones": ["555-555-5555"],
        "mobilePhone": "555-555-4444",
        "usageLocation": "US",
    }
    assert mapping.manager_id(DOC) == "m-1"


def test_upn_from_the_primary_work_email_when_username_is_no_address() -> None:
    doc = {
        "userName": "bjensen",
        "emails": [
            {"value": "b@home.example", "type": "home"},
            {"value": "Barbara.J@Example.com", "type": "work", "primary": True},
        ],
    }
    assert mapping.upn(doc) == "Barbara.J@Example.com"
    assert mapping.domain_of(mapping.upn(doc)) == "example.com"
    assert mapping.upn({"userName": "bjensen"}) is None


def test_default_usage_location_and_display_name_fallbacks() -> None:
    props = mapping.user_properties({"userName": "x@example.com"}, "gb")
    assert props["usageLocation"] == "GB"
    assert props["displayName"] == "x@example.com"
    assert props["accountEnabled"] is True


def test_mail_nickname_folds_to_ascii_and_64_characters() -> None:
    assert mapping.mail_nickname("Zoë (admin)@example.com") == "Zoeadmin"
    assert len(mapping.mail_nickname("a" * 100 + "@example.com")) == 64
    assert mapping.group_mail_nickname("Sales: EMEA.", "0a1b-2c") == "SalesEMEA"
    assert mapping.group_mail_nickname("Ünïcödé only: ()", "0a1b-2c") == "Unicodeonly"
    assert mapping.group_mail_nickname("()", "0a1b-2c") == "group-0a1b2c"


def test_changes_sends_only_what_differs_and_the_upn_pair_together() -> None:
    last = mapping.user_properties(DOC, None)
    changed = dict(DOC, title="Chief")
    assert mapping.changes(last, mapping.user_properties(changed, None)) == {"jobTitle": "Chief"}
    moved = dict(DOC, userName="barbara@example.com")
    assert mapping.changes(last, mapping.user_properties(moved, None)) == {
        "userPrincipalName": "barbara@example.com",
        "mailNickname": "barbara",
    }
    assert mapping.changes(None, last) == last


def test_create_body_leaves_out_empty_properties_and_forces_a_password_change() -> None:
    body = mapping.create_body(mapping.user_properties({"userName": "x@example.com"}, None), "P@ss")
    assert "jobTitle" not in body and "businessPhones" not in body
    assert body["passwordProfile"] == {"password": "P@ss", "forceChangePasswordNextSignIn": True}
