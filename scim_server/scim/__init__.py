"""Pure SCIM logic: schemas, filters, PATCH and attribute projection. No database, no Flask."""
