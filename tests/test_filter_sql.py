"""SCIM filters and sortBy translated to SQL (scim_server.scim.filter_sql), run on a database.

SQLite in memory by default; PostgreSQL when SCIM_TEST_DATABASE_URL is set, e.g.
postgresql+psycopg://postgres@127.0.0.1:5432/scim_filter_test (created if missing).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from models import Base, Group, GroupMember, User, UserValue
from scim_server.errors import InvalidFilter, InvalidValue
from scim_server.scim.filter_parser import parse_filter
from scim_server.scim.filter_sql import sort_column, to_sql
from scim_server.scim.schema import GROUP_TYPE, USER_TYPE, ResourceType

ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ALL_USERS = {"u1", "u2", "u3", "u4"}
ALL_GROUPS = {"g1", "g2", "g3"}


def _postgres_engine(url: str) -> Engine:
    target = sa.make_url(url)
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            found = conn.scalar(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": target.database},
            )
            if not found:
                quoted = admin.dialect.identifier_preparer.quote(str(target.database))
                conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
    finally:
        admin.dispose()
    return sa.create_engine(target)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    url = os.environ.get("SCIM_TEST_DATABASE_URL")
    if url:
        eng = _postgres_engine(url)
        Base.metadata.drop_all(eng)
    else:
        # One shared connection, so every session sees the same in-memory database.
        eng = sa.create_engine("sqlite://", poolclass=StaticPool)
    Base.metadata.create_all(eng)
    with Session(eng) as session:
        session.add_all(_users() + _groups())
        session.flush()
        session.add_all(_values() + _members())
        session.commit()
    yield eng
    Base.metadata.drop_all(eng)
    eng.dispose()


def _user(id: str, user_name: str, **columns: Any) -> User:
    columns.setdefault("active", True)
    columns.setdefault("version", 1)
    return User(id=id, user_name=user_name, user_name_ci=user_name.lower(), **columns)


def _users() -> list[Any]:
    return [
        _user(
            "u1",
            "Alice",
            external_id="Ext-A",
            display_name="Alice Smith",
            name_given="Alice",
            name_family="Smith",
            title="Engineer",
            employee_number="1001",
            department="R&D",
            version=3,
            created=datetime(2020, 1, 1),
            last_modified=datetime(2021, 6, 1, 12),
        ),
        _user(
            "u2",
            "bob_99%",
            external_id="ext-b",
            name_given="Bob",
            active=False,
            manager_id="u1",
            created=datetime(2020, 2, 1),
            last_modified=datetime(2022, 1, 1),
        ),
        _user(
            "u3",
            "Carol",
            display_name='a "b"',
            title="engineer manager",
            employee_number="1003",
            version=2,
            created=datetime(2020, 3, 1),
            last_modified=datetime(2023, 3, 3, 3, 3, 3, 500000),
        ),
        _user(
            "u4",
            "DAVE",
            external_id="EXT-D",
            display_name="Dave",
            title="",
            created=datetime(2020, 4, 1),
            last_modified=datetime(2024, 1, 1),
        ),
    ]


def _value(user_id: str, attr: str, position: int, value: str | None, **columns: Any) -> UserValue:
    return UserValue(
        user_id=user_id,
        attr=attr,
        position=position,
        value=value,
        value_ci=value.lower() if value is not None else None,
        **columns,
    )


def _values() -> list[Any]:
    return [
        # u1: the primary email is the work one.
        _value("u1", "emails", 0, "alice@work.example", type="work", primary=True),
        _value("u1", "emails", 1, "alice@home.example", type="home", primary=False),
        # u2: a work email and a different, primary, home email.
        _value("u2", "emails", 0, "bob@work.example", type="work", primary=False),
        _value("u2", "emails", 1, "bob@home.example", type="home", primary=True),
        _value("u2", "addresses", 0, None, type="work", locality="Paris", country="FR"),
        _value("u3", "phoneNumbers", 0, "+1 555 0100", primary=False),
        _value("u4", "emails", 0, "Dave@Example.com", primary=False),
        _value("u4", "photos", 0, "https://x.example/Photo.JPG", type="photo", primary=False),
    ]


def _groups() -> list[Any]:
    def group(id: str, name: str, **columns: Any) -> Group:
        return Group(
            id=id,
            display_name=name,
            display_name_ci=name.lower(),
            version=1,
            created=datetime(2020, 1, 1),
            last_modified=datetime(2020, 1, 1),
            **columns,
        )

    return [group("g1", "Admins", external_id="GX1"), group("g2", "Sales"), group("g3", "Empty")]


def _members() -> list[Any]:
    return [
        GroupMember(group_id="g1", member_id="u1", member_type="User"),
        GroupMember(group_id="g1", member_id="u4", member_type="User"),
        GroupMember(group_id="g2", member_id="u4", member_type="User"),
        GroupMember(group_id="g2", member_id="g1", member_type="Group"),
    ]


def _model(rtype: ResourceType) -> type[User] | type[Group]:
    return User if rtype is USER_TYPE else Group


def _ids(engine: Engine, rtype: ResourceType, text: str) -> set[str]:
    model = _model(rtype)
    with Session(engine) as session:
        return set(session.scalars(sa.select(model.id).where(to_sql(parse_filter(text), rtype))))


USER_CASES = [
    # eq and case: userName is caseExact=false (RFC 7643 §4.1.1), through user_name_ci.
    ('userName eq "alice"', {"u1"}),
    ('USERNAME eq "ALICE"', {"u1"}),
    ('username Eq "Dave"', {"u4"}),
    (f'{CORE}:userName eq "dave"', {"u4"}),
    ('userName ne "alice"', {"u2", "u3", "u4"}),
    # LIKE wildcards in the value are literal characters.
    ('userName co "%"', {"u2"}),
    ('userName co "_"', {"u2"}),
    ('userName sw "A"', {"u1"}),
    ('userName ew "OL"', {"u3"}),
    ('userName co ""', ALL_USERS),
    ('userName gt "bob"', {"u2", "u3", "u4"}),
    ('userName ge "CAROL"', {"u3", "u4"}),
    ('userName lt "c"', {"u1", "u2"}),
    ('userName le "carol"', {"u1", "u2", "u3"}),
    # externalId is caseExact.
    ('externalId eq "Ext-A"', {"u1"}),
    ('externalId eq "ext-a"', set()),
    ('externalId co "xt"', {"u1", "u2"}),
    ('externalId co "XT"', {"u4"}),
    ('externalId sw "ext"', {"u2"}),
    ('externalId sw "EXT"', {"u4"}),
    ('externalId ew "-D"', {"u4"}),
    ('externalId ew "-d"', set()),
    ('externalId ew "much-longer-than-any-value"', set()),
    ('externalId gt "Z"', {"u2"}),
    # A resource without the attribute matches ne, and `not` is two-valued.
    ('externalId ne "Ext-A"', {"u2", "u3", "u4"}),
    ('not (externalId eq "Ext-A")', {"u2", "u3", "u4"}),
    ("externalId pr", {"u1", "u2", "u4"}),
    ("externalId eq null", {"u3"}),
    ("externalId ne null", {"u1", "u2", "u4"}),
    # pr means a non-empty value: u4's title is "".
    ("title pr", {"u1", "u3"}),
    ("not (title pr)", {"u2", "u4"}),
    ('title eq "engineer"', {"u1"}),
    ('title ne "engineer"', {"u2", "u3", "u4"}),
    ('not (title eq "engineer")', {"u2", "u3", "u4"}),
    ('title co "ENGINEER"', {"u1", "u3"}),
    ('title ew "Manager"', {"u3"}),
    # JSON escapes in the value.
    ('displayName eq "a \\"b\\""', {"u3"}),
    ('displayName co "\\""', {"u3"}),
    ('displayName eq "A \\"B\\""', {"u3"}),
    ('name.givenName eq "BOB"', {"u2"}),
    ('name.familyName sw "sm"', {"u1"}),
    ('name[givenName eq "alice"]', {"u1"}),
    ("name pr", {"u1", "u2"}),
    ("active eq true", {"u1", "u3", "u4"}),
    ("active eq false", {"u2"}),
    ("active ne true", {"u2"}),
    ("active pr", ALL_USERS),
    ('id eq "u2"', {"u2"}),
    ('id eq "U2"', set()),
    # Precedence: not over and over or (RFC 7644 §3.4.2.2).
    ('userName eq "alice" or userName eq "bob_99%" and active eq false', {"u1", "u2"}),
    ('(userName eq "alice" or userName eq "bob_99%") and active eq false', {"u2"}),
    ('not (userName eq "alice") and active eq true', {"u3", "u4"}),
    ('userName eq "carol" or not (title pr) and active eq true', {"u3", "u4"}),
    ('(userName eq "alice" or userName eq "carol") and not (title co "manager")', {"u1"}),
    # Multi-valued attributes: any value matches.
    ('emails eq "ALICE@work.example"', {"u1"}),
    ('emails.value eq "dave@example.com"', {"u4"}),
    ('emails.value co "@HOME"', {"u1", "u2"}),
    ('emails.type eq "WORK"', {"u1", "u2"}),
    ("emails pr", {"u1", "u2", "u4"}),
    ("not (emails pr)", {"u3"}),
    ("emails.type pr", {"u1", "u2"}),
    ("phoneNumbers pr", {"u3"}),
    ('phoneNumbers.value sw "+1"', {"u3"}),
    ("emails.value eq null", {"u3"}),
    # Inside brackets every condition holds on the same value.
    ('emails[type eq "work" and primary eq true]', {"u1"}),
    ('emails[type eq "home" and primary eq true]', {"u2"}),
    ('emails[type eq "work"].value eq "bob@work.example"', {"u2"}),
    ('emails[type eq "home"].value eq "alice@work.example"', set()),
    ('emails[not (type eq "work")]', {"u1", "u2", "u4"}),
    ('emails[type eq "work"] and emails[primary eq true]', {"u1", "u2"}),
    ('not (emails[type eq "work"])', {"u3", "u4"}),
    # ne: some value differs, or there is no value (among the bracket's selection).
    ('emails[type eq "work"].value ne "alice@work.example"', {"u2", "u3", "u4"}),
    ('emails.value ne "dave@example.com"', {"u1", "u2", "u3"}),
    ('addresses.locality eq "paris"', {"u2"}),
    ('addresses[type eq "work" and country eq "fr"]', {"u2"}),
    ("addresses pr", {"u2"}),
    # photos.value is caseExact.
    ('photos.value eq "https://x.example/Photo.JPG"', {"u4"}),
    ('photos.value eq "https://x.example/photo.jpg"', set()),
    ('photos.value co "Photo"', {"u4"}),
    ('photos.value co "photo"', set()),
    # The enterprise extension, by full URN, and manager meaning manager.value.
    (f'{ENT}:employeeNumber eq "1001"', {"u1"}),
    (f"{ENT.upper()}:EMPLOYEENUMBER pr", {"u1", "u3"}),
    (f'{ENT}:department eq "r&d"', {"u1"}),
    (f'{ENT}:manager.value eq "u1"', {"u2"}),
    (f'{ENT}:manager eq "u1"', {"u2"}),
    (f"{ENT}:manager pr", {"u2"}),
    (f'{ENT}:manager[value eq "u1"]', {"u2"}),
    (f'schemas eq "{ENT}"', {"u1", "u2", "u3"}),
    (f'schemas eq "{CORE}"', ALL_USERS),
    (f'schemas ne "{ENT}"', {"u4"}),
    # meta: dateTimes in RFC 3339 forms, compared in UTC.
    ('meta.lastModified gt "2022-01-01T00:00:00Z"', {"u3", "u4"}),
    ('meta.lastModified ge "2022-01-01T00:00:00Z"', {"u2", "u3", "u4"}),
    ('meta.lastModified gt "2022-01-01T01:00:00+02:00"', {"u2", "u3", "u4"}),
    ('meta.lastModified eq "2023-03-03T03:03:03.5Z"', {"u3"}),
    ('meta.lastModified lt "2021-06-01T12:00:00.000001Z"', {"u1"}),
    ('meta.lastModified le "2021-06-01T12:00:00z"', {"u1"}),
    ('meta.created le "2020-02-01T00:00:00"', {"u1", "u2"}),
    ('meta.created ne "2020-02-01T00:00:00Z"', {"u1", "u3", "u4"}),
    ('meta.resourceType eq "User"', ALL_USERS),
    ('meta.resourceType eq "Group"', set()),
    ('meta.version eq "W/\\"3\\""', {"u1"}),
    ('meta.version ne "W/\\"1\\""', {"u1", "u3"}),
    ('meta.version eq "3"', set()),
    # groups: memberships.
    ('groups eq "g1"', {"u1", "u4"}),
    ('groups.value eq "g2"', {"u4"}),
    ('groups.display eq "SALES"', {"u4"}),
    ('groups[display sw "adm"]', {"u1", "u4"}),
    ('groups[value eq "g1" and display eq "sales"]', set()),
    ('groups.type eq "direct"', {"u1", "u4"}),
    ("groups pr", {"u1", "u4"}),
    ('userName eq "x\' OR 1=1 --"', set()),
]


@pytest.mark.parametrize(("text", "expected"), USER_CASES, ids=[c[0] for c in USER_CASES])
def test_user_filter(engine: Engine, text: str, expected: set[str]) -> None:
    assert _ids(engine, USER_TYPE, text) == expected


GROUP_CASES = [
    ('displayName eq "admins"', {"g1"}),
    ('DISPLAYNAME sw "S"', {"g2"}),
    ('displayName co "A"', {"g1", "g2"}),
    # Entra asks `id eq "…" and members eq "…"` before adding a member.
    ('members eq "u4"', {"g1", "g2"}),
    ('id eq "g1" and members eq "u1"', {"g1"}),
    ('id eq "g2" and members eq "u1"', set()),
    ('members.value eq "g1"', {"g2"}),
    ('members[type eq "group"]', {"g2"}),
    ('members[type eq "User" and value eq "u1"]', {"g1"}),
    ("members pr", {"g1", "g2"}),
    ("not (members pr)", {"g3"}),
    ("externalId pr", {"g1"}),
    ('externalId ne "GX1"', {"g2", "g3"}),
    ('meta.resourceType eq "Group"', ALL_GROUPS),
    ('meta.lastModified lt "2020-01-02T00:00:00Z"', ALL_GROUPS),
]


@pytest.mark.parametrize(("text", "expected"), GROUP_CASES, ids=[c[0] for c in GROUP_CASES])
def test_group_filter(engine: Engine, text: str, expected: set[str]) -> None:
    assert _ids(engine, GROUP_TYPE, text) == expected


INVALID_USER = [
    ('foo eq "x"', "The attribute 'foo' is not filterable."),
    ('password eq "x"', "The attribute 'password' is not filterable."),
    ('meta.location eq "x"', "The attribute 'meta.location' is not filterable."),
    ('name.nope eq "x"', "The attribute 'name.nope' is not filterable."),
    (f'{ENT}:userName eq "x"', "is not filterable"),
    ("active gt true", "cannot be used with the boolean attribute 'active'"),
    ('active co "t"', "cannot be used with the boolean attribute 'active'"),
    ('active eq "true"', "compare it with true or false"),
    ('emails[primary eq "yes"]', "compare it with true or false"),
    ("userName eq 1", "compare it with a quoted string"),
    ("userName eq true", "compare it with a quoted string"),
    ("userName gt null", "cannot compare with null"),
    ('meta.lastModified gt "yesterday"', "needs a date and time"),
    ('meta.lastModified gt "2020-13-45T00:00:00Z"', "needs a date and time"),
    ('meta.lastModified gt "2020-01-01"', "needs a date and time"),
    ('meta.created co "2020"', "cannot be used with the dateTime attribute"),
    ('meta.version gt "W/\\"1\\""', "cannot be used with 'meta.version'"),
    ('x509Certificates.value gt "a"', "cannot be used with the binary attribute"),
    ('name eq "x"', "is complex"),
    ('addresses eq "x"', "is complex"),
    ('userName[value eq "x"]', "has no sub-attributes"),
    ('emails[emails.value eq "x"]', "name a sub-attribute of 'emails'"),
    ('emails[value eq "x"] and emails[nope eq "x"]', "'emails.nope' is not filterable"),
    ('schemas gt "x"', "'schemas' supports only"),
]


@pytest.mark.parametrize(("text", "message"), INVALID_USER, ids=[c[0] for c in INVALID_USER])
def test_invalid_user_filter(text: str, message: str) -> None:
    with pytest.raises(InvalidFilter) as caught:
        to_sql(parse_filter(text), USER_TYPE)
    assert message in caught.value.detail
    assert caught.value.scim_type == "invalidFilter"


@pytest.mark.parametrize(
    "text", ['userName eq "x"', 'members.display eq "x"', 'members.$ref eq "x"', "emails pr"]
)
def test_invalid_group_filter(text: str) -> None:
    with pytest.raises(InvalidFilter, match="not filterable"):
        to_sql(parse_filter(text), GROUP_TYPE)


def test_values_are_bound_parameters(engine: Engine) -> None:
    value = "x' OR '1'='1"
    tree = parse_filter(f'userName eq "{value}" or emails[type co "{value}"] or title sw "%"')
    sql = str(sa.select(User.id).where(to_sql(tree, USER_TYPE)).compile(engine))
    assert value.lower() not in sql.lower()
    assert "'1'" not in sql


def _compiled(engine: Engine, stmt: sa.Select[Any]) -> tuple[str, Any]:
    compiled = stmt.compile(engine)
    if compiled.positiontup is not None:  # SQLite: qmark
        return str(compiled), tuple(compiled.params[name] for name in compiled.positiontup)
    return str(compiled), compiled.params


def _user_name_eq(engine: Engine) -> tuple[str, Any]:
    stmt = sa.select(User.id).where(to_sql(parse_filter('userName eq "ALICE"'), USER_TYPE))
    return _compiled(engine, stmt)


def test_user_name_eq_uses_the_unique_index_on_sqlite(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's EXPLAIN QUERY PLAN")
    sql, params = _user_name_eq(engine)
    with engine.connect() as conn:
        # The index of the unique constraint on user_name_ci, whatever SQLite named it.
        index = conn.scalar(
            sa.text(
                "SELECT il.name FROM pragma_index_list('users') AS il WHERE "
                "(SELECT group_concat(ii.name) FROM pragma_index_info(il.name) AS ii) "
                "= 'user_name_ci'"
            )
        )
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)
        plan = " ".join(str(row[-1]) for row in rows)
    assert index is not None
    assert f"INDEX {index} (user_name_ci=?)" in plan, plan
    assert plan.startswith("SEARCH"), plan


def test_user_name_eq_uses_the_unique_index_on_postgresql(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's EXPLAIN")
    sql, params = _user_name_eq(engine)
    with engine.connect() as conn:
        index = conn.scalar(
            sa.text(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'users' "
                "AND indexdef LIKE '%(user_name_ci)'"
            )
        )
        # The table is tiny: forbid the sequential scan so the planner shows the index it can use.
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = " ".join(str(row[0]) for row in conn.exec_driver_sql("EXPLAIN " + sql, params))
        conn.rollback()
    assert index is not None
    assert f"Index Only Scan using {index}" in plan or f"Index Scan using {index}" in plan, plan


def _sorted(
    engine: Engine, rtype: ResourceType, sort_by: str, descending: bool = False
) -> list[str]:
    model = _model(rtype)
    column = sort_column(rtype, sort_by)
    # RFC 7644 §3.4.2.3: resources without a value come last ascending, first descending.
    order = column.desc().nulls_first() if descending else column.asc().nulls_last()
    with Session(engine) as session:
        return list(session.scalars(sa.select(model.id).order_by(order, model.id)))


@pytest.mark.parametrize(
    ("rtype", "sort_by", "descending", "expected"),
    [
        (USER_TYPE, "userName", False, ["u1", "u2", "u3", "u4"]),
        (USER_TYPE, "USERNAME", True, ["u4", "u3", "u2", "u1"]),
        (USER_TYPE, f"{CORE}:userName", False, ["u1", "u2", "u3", "u4"]),
        # Case-insensitive: 'a "b"' < 'Alice Smith' < 'Dave'; u2 has none.
        (USER_TYPE, "displayName", False, ["u3", "u1", "u4", "u2"]),
        # caseExact: upper case sorts before lower case.
        (USER_TYPE, "externalId", False, ["u4", "u1", "u2", "u3"]),
        (USER_TYPE, "name.givenName", False, ["u1", "u2", "u3", "u4"]),
        (USER_TYPE, "name.familyName", False, ["u1", "u2", "u3", "u4"]),
        (USER_TYPE, "title", True, ["u2", "u3", "u1", "u4"]),
        (USER_TYPE, "meta.created", True, ["u4", "u3", "u2", "u1"]),
        (USER_TYPE, "meta.lastModified", False, ["u1", "u2", "u3", "u4"]),
        # Multi-valued: the primary value, else the first one.
        (USER_TYPE, "emails.value", False, ["u1", "u2", "u4", "u3"]),
        (USER_TYPE, "emails", True, ["u3", "u4", "u2", "u1"]),
        (USER_TYPE, "emails.type", False, ["u2", "u1", "u3", "u4"]),
        (USER_TYPE, f"{ENT}:employeeNumber", False, ["u1", "u3", "u2", "u4"]),
        (USER_TYPE, "id", True, ["u4", "u3", "u2", "u1"]),
        (GROUP_TYPE, "displayName", False, ["g1", "g3", "g2"]),
        (GROUP_TYPE, "externalId", False, ["g1", "g2", "g3"]),
        (GROUP_TYPE, "meta.lastModified", False, ["g1", "g2", "g3"]),
        (GROUP_TYPE, "id", True, ["g3", "g2", "g1"]),
    ],
)
def test_sort_column(
    engine: Engine, rtype: ResourceType, sort_by: str, descending: bool, expected: list[str]
) -> None:
    assert _sorted(engine, rtype, sort_by, descending) == expected


@pytest.mark.parametrize(
    ("rtype", "sort_by"),
    [
        (USER_TYPE, "password"),
        (USER_TYPE, "foo"),
        (USER_TYPE, "name"),
        (USER_TYPE, "addresses"),
        (USER_TYPE, "groups.display"),
        (USER_TYPE, "meta.resourceType"),
        (USER_TYPE, "meta.location"),
        (GROUP_TYPE, "members"),
        (GROUP_TYPE, "userName"),
    ],
)
def test_sort_column_refuses(rtype: ResourceType, sort_by: str) -> None:
    with pytest.raises(InvalidValue, match="cannot be used to sort"):
        sort_column(rtype, sort_by)
