"""The hand-written SQL layer (db.Tx, db.transaction) stores values as the ORM does."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy.dialects import sqlite

from scim_server.db import _sqlite_datetime


@pytest.mark.parametrize(
    "moment", [datetime(2024, 1, 2, 3, 4, 5), datetime(2024, 12, 31, 23, 59, 59, 999999)]
)
def test_sqlite_datetimes_are_stored_in_sqlalchemys_format(moment: datetime) -> None:
    # Rows written by hand and through the ORM must compare and sort alike as text.
    orm = sqlite.DATETIME().bind_processor(sqlite.dialect())
    assert orm is not None
    assert _sqlite_datetime(moment) == orm(moment)
