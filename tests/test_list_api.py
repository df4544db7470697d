"""Listing, filtering, sorting and paging (RFC 7644 §3.4.2, §3.4.3)."""

from __future__ import annotations

from typing import Any

from tests.conftest import ScimClient

SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


def _names(response) -> list[str]:  # type: ignore[no-untyped-def]
    return [r["userName"] for r in response.get_json()["Resources"]]


def test_filter_username_any_case(scim: ScimClient) -> None:
    scim.user("Alice@Example.com")
    scim.user("bob@example.com")
    response = scim.get('/Users?filter=USERNAME eq "alice@example.COM"')
    assert response.status_code == 200
    assert _names(response) == ["Alice@Example.com"]


def test_bad_filter_is_400_invalid_filter(scim: ScimClient) -> None:
    for bad in ["userName eq", 'userName zz "a"', 'nosuch eq "a"', '(userName eq "a"']:
        response = scim.get(f"/Users?filter={bad}")
        assert response.status_code == 400, bad
        assert response.get_json()["scimType"] == "invalidFilter", bad


def test_a_filter_over_the_length_limit_is_400_whatever_its_shape(scim: ScimClient) -> None:
    """`userName eq "…"` has a path of its own (no parsing): it keeps the parser's limit."""
    from scim_server.scim.filter_parser import MAX_FILTER_LENGTH

    def search(text: str) -> Any:
        # POST /.search: a filter this long does not fit in a URL (414).
        body = {"schemas": [SEARCH], "filter": text}
        return scim.post("/Users/.search", body)

    value = "a" * MAX_FILTER_LENGTH
    for text in (f'userName eq "{value}"', f'displayName eq "{value}"'):
        response = search(text)
        assert response.status_code == 400, text[:20]
        assert response.get_json()["scimType"] == "invalidFilter"
        assert str(MAX_FILTER_LENGTH) in response.get_json()["detail"]
    within = "a" * (MAX_FILTER_LENGTH - len('userName eq ""'))
    assert search(f'userName eq "{within}"').status_code == 200


def test_escaped_quotes_in_filter(scim: ScimClient) -> None:
    scim.user("q", displayName='say "hi"')
    response = scim.get('/Users?filter=displayName eq "say \\"hi\\""')
    assert _names(response) == ["q"]


def test_value_path_filter_same_value(scim: ScimClient) -> None:
    scim.user("work", emails=[{"value": "w@x.com", "type": "work", "primary": True}])
    scim.user(
        "mixed",
        emails=[
            {"value": "w2@x.com", "type": "work"},
            {"value": "h@x.com", "type": "home", "primary": True},
        ],
    )
    response = scim.get('/Users?filter=emails[type eq "work" and primary eq true]')
    assert _names(response) == ["work"]
    by_value = scim.get('/Users?filter=emails[type eq "work"].value eq "W2@x.com"')
    assert _names(by_value) == ["mixed"]


def test_sort_and_paging_are_stable(scim: ScimClient) -> None:
    for name in ["d", "b", "e", "a", "c"]:
        scim.user(name)
    asc = scim.get("/Users?sortBy=userName&sortOrder=ascending")
    assert _names(asc) == ["a", "b", "c", "d", "e"]
    desc = scim.get("/Users?sortBy=userName&sortOrder=descending")
    assert _names(desc) == ["e", "d", "c", "b", "a"]
    pages = [scim.get(f"/Users?startIndex={s}&count=2") for s in (1, 3, 5)]
    seen = [n for p in pages for n in _names(p)]
    assert sorted(seen) == ["a", "b", "c", "d", "e"]
    first = pages[0].get_json()
    assert first["totalResults"] == 5
    assert first["startIndex"] == 1
    assert first["itemsPerPage"] == 2


def test_count_zero_returns_the_total_and_no_resources(scim: ScimClient) -> None:
    scim.user("a")
    body = scim.get("/Users?count=0&startIndex=3").get_json()
    # RFC 7644 §3.4.2: Resources is REQUIRED when totalResults is non-zero.
    assert body == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 1,
        "startIndex": 3,
        "itemsPerPage": 0,
        "Resources": [],
    }
    searched = scim.post("/Users/.search", {"count": 0}).get_json()
    assert (searched["totalResults"], searched["itemsPerPage"], searched["Resources"]) == (1, 0, [])


def test_page_size_is_capped_at_the_advertised_maximum(scim: ScimClient) -> None:
    maximum = scim.get("/ServiceProviderConfig").get_json()["filter"]["maxResults"]
    response = scim.get(f"/Users?count={maximum + 50}")
    assert response.status_code == 200
    assert response.get_json()["itemsPerPage"] <= maximum


def test_bad_paging_values(scim: ScimClient) -> None:
    assert scim.get("/Users?count=abc").status_code == 400
    assert scim.get("/Users?sortOrder=sideways").status_code == 400
    body = scim.get("/Users?startIndex=-4").get_json()
    assert body["startIndex"] == 1


def test_search_per_type_and_at_root(scim: ScimClient) -> None:
    user = scim.user("alice")
    scim.group("Admins", members=[user["id"]])
    response = scim.post(
        "/Users/.search",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": 'userName sw "ali"',
            "attributes": ["userName"],
            "startIndex": 1,
            "count": 10,
        },
    )
    assert response.status_code == 200
    assert response.get_json()["Resources"] == [
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": user["id"],
            "userName": "alice",
        }
    ]
    root = scim.post(
        "/.search", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]}
    )
    kinds = sorted(r["meta"]["resourceType"] for r in root.get_json()["Resources"])
    assert kinds == ["Group", "User"]
    only_groups = scim.post("/.search", {"filter": 'displayName eq "admins"'})
    assert [r["displayName"] for r in only_groups.get_json()["Resources"]] == ["Admins"]


def test_groups_filter_members_and_excluded_members(scim: ScimClient) -> None:
    a = scim.user("a")
    group = scim.group("Team", members=[a["id"]])
    scim.group("Empty")
    response = scim.get(f'/Groups?filter=id eq "{group["id"]}" and members eq "{a["id"]}"')
    assert [g["displayName"] for g in response.get_json()["Resources"]] == ["Team"]
    listed = scim.get('/Groups?filter=displayName eq "team"&excludedAttributes=members').get_json()
    assert listed["totalResults"] == 1
    assert "members" not in listed["Resources"][0]


def test_filter_meta_last_modified(scim: ScimClient) -> None:
    scim.user("a")
    assert (
        scim.get('/Users?filter=meta.lastModified gt "2000-01-01T00:00:00Z"').get_json()[
            "totalResults"
        ]
        == 1
    )
    assert (
        scim.get('/Users?filter=meta.lastModified gt "2999-01-01T00:00:00Z"').get_json()[
            "totalResults"
        ]
        == 0
    )


def test_enterprise_filter_by_urn(scim: ScimClient) -> None:
    ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
    scim.user("a", **{ent: {"employeeNumber": "42"}})
    scim.user("b")
    response = scim.get(f'/Users?filter={ent}:employeeNumber eq "42"')
    assert _names(response) == ["a"]


def test_disabled_user_still_listed(scim: ScimClient) -> None:
    scim.user("off", active=False)
    assert _names(scim.get('/Users?filter=userName eq "off"')) == ["off"]
    assert _names(scim.get("/Users?filter=active eq false")) == ["off"]


def test_sort_puts_missing_values_last_ascending_first_descending(scim: ScimClient) -> None:
    scim.user("a", title="Zed")
    scim.user("b")
    scim.user("c", title="Ace")
    asc = scim.get("/Users?sortBy=title")
    assert _names(asc) == ["c", "a", "b"]
    desc = scim.get("/Users?sortBy=title&sortOrder=descending")
    assert _names(desc) == ["b", "a", "c"]


def test_total_results_on_a_partial_last_page(scim: ScimClient) -> None:
    for name in "abcde":
        scim.user(name)
    body = scim.get("/Users?startIndex=5&count=2").get_json()
    assert body["totalResults"] == 5
    assert body["itemsPerPage"] == 1
    beyond = scim.get("/Users?startIndex=9&count=2").get_json()
    assert beyond["totalResults"] == 5
    assert beyond["Resources"] == []


def test_search_request_with_malformed_attributes_is_400(scim: ScimClient) -> None:
    for body in ({"attributes": 1}, {"excludedAttributes": [1]}, {"count": "many"}):
        response = scim.post("/.search", body)
        assert response.status_code == 400, body
        assert response.get_json()["scimType"] == "invalidValue"


def test_user_name_lookup_pages_like_any_filter(scim: ScimClient) -> None:
    """`userName eq "…"` has its own lookup (directory._list_by_user_name); paging and
    totals follow the general rules."""
    scim.user("Carol@Example.com")
    found = scim.get('/Users?filter=userName eq "carol@example.com"').get_json()
    assert found["totalResults"] == 1
    assert [r["userName"] for r in found["Resources"]] == ["Carol@Example.com"]
    past = scim.get('/Users?filter=userName eq "carol@example.com"&startIndex=2').get_json()
    assert past["totalResults"] == 1
    assert past["Resources"] == []
    only_total = scim.get('/Users?filter=userName eq "carol@example.com"&count=0').get_json()
    assert only_total == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 1,
        "startIndex": 1,
        "itemsPerPage": 0,
        "Resources": [],
    }
    missing = scim.get('/Users?filter=userName eq "nobody"').get_json()
    assert missing["totalResults"] == 0
    assert missing["Resources"] == []


def test_user_name_lookup_renders_as_the_general_path(scim: ScimClient) -> None:
    """The same user through the hand-written lookups (GET by id, `userName eq`) and through
    the compiled filters renders the same document."""
    manager = scim.user("boss", displayName="The Boss")
    user = scim.user(
        "full",
        name={"givenName": "F", "familyName": "Ull"},
        active=False,
        emails=[
            {"value": "a@x.com", "type": "work", "primary": True},
            {"value": "b@x.com", "primary": False},
        ],
        addresses=[{"streetAddress": "1 Main St", "country": "NL", "type": "work"}],
        **{
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "department": "R&D",
                "manager": {"value": manager["id"]},
            }
        },
    )
    scim.group("Team", members=[user["id"]])
    by_id = scim.get(f"/Users/{user['id']}").get_json()
    by_name = scim.get('/Users?filter=userName eq "FULL"').get_json()["Resources"]
    general = scim.get(f'/Users?filter=id eq "{user["id"]}"').get_json()["Resources"]
    assert by_name == general == [by_id]
    assert by_id["active"] is False
    assert by_id["emails"][1]["primary"] is False
    assert by_id["groups"][0]["display"] == "Team"
    assert by_id["meta"]["created"] == user["meta"]["created"]
