"""Request envelopes validated with marshmallow: PatchOp, SearchRequest and BulkRequest."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, pre_load, validate

from scim_server.errors import InvalidSyntax, InvalidValue


class _Message(Schema):
    """A message object whose member names are matched case-insensitively (RFC 7643 §2.1)."""

    class Meta:
        unknown = EXCLUDE

    @pre_load
    def _canonical_names(self, data: Any, **_: Any) -> Any:
        return _lower_keys_named(data, tuple(self.fields)) if isinstance(data, dict) else data


class _Envelope(_Message):
    schemas = fields.List(fields.String(), load_default=list)


class PatchOperation(_Message):
    op = fields.String(required=True)
    path = fields.String(load_default=None, allow_none=True)
    value = fields.Raw(load_default=None, allow_none=True)


class PatchRequest(_Envelope):
    # RFC 7644 §3.5.2: "Operations" is required and holds at least one operation.
    Operations = fields.List(
        fields.Nested(PatchOperation), required=True, validate=validate.Length(min=1)
    )


class SearchRequest(_Envelope):
    attributes = fields.Raw(load_default=None)
    excludedAttributes = fields.Raw(load_default=None)
    filter = fields.String(load_default=None, allow_none=True)
    sortBy = fields.String(load_default=None, allow_none=True)
    sortOrder = fields.String(load_default=None, allow_none=True)
    startIndex = fields.Integer(load_default=None, allow_none=True, strict=False)
    count = fields.Integer(load_default=None, allow_none=True, strict=False)


class BulkOperation(_Message):
    method = fields.String(required=True)
    bulkId = fields.String(load_default=None, allow_none=True)
    version = fields.String(load_default=None, allow_none=True)
    path = fields.String(required=True)
    data = fields.Raw(load_default=None, allow_none=True)


class BulkRequest(_Envelope):
    failOnErrors = fields.Integer(load_default=None, allow_none=True)
    Operations = fields.List(fields.Nested(BulkOperation), required=True)


def _lower_keys_named(body: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """RFC 7643 §2.1: attribute names are case-insensitive, message attributes included."""
    canonical = {n.lower(): n for n in names}
    return {canonical.get(k.lower(), k): v for k, v in body.items()}


def load(schema: Schema, body: Any, syntax_error: bool = True) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidSyntax("The request body must be a JSON object.")
    try:
        result: dict[str, Any] = schema.load(body)
    except ValidationError as exc:
        message = "; ".join(
            f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in _flatten(exc.messages).items()
        )
        if syntax_error:
            raise InvalidSyntax(f"Malformed request: {message}") from None
        raise InvalidValue(f"Invalid request: {message}") from None
    return result


def _flatten(messages: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(messages, dict):
        return {prefix or "body": messages}
    out: dict[str, Any] = {}
    for key, value in messages.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


# Built once: a marshmallow schema is reusable across requests and threads.
PATCH_REQUEST = PatchRequest()
SEARCH_REQUEST = SearchRequest()
BULK_REQUEST = BulkRequest()


_PATCH_OPERATION_KEYS = frozenset(PatchOperation().fields)


def _plain_patch_operations(body: Any) -> list[dict[str, Any]] | None:
    """The operations of a PatchOp in the shape every IdP sends (string `op`, `path` a string
    or absent, known keys only), as PATCH_REQUEST would load them; None for anything else,
    which goes through marshmallow and its error messages."""
    if not isinstance(body, dict):
        return None
    ops: Any = None
    for key, value in body.items():
        name = key.lower()
        if name == "operations":
            ops = value
        elif name != "schemas" or not (
            isinstance(value, list) and all(isinstance(s, str) for s in value)
        ):
            return None
    if not isinstance(ops, list) or not ops:
        return None
    out = []
    for op in ops:
        if not (
            isinstance(op, dict)
            and op.keys() <= _PATCH_OPERATION_KEYS
            and isinstance(op.get("op"), str)
            and isinstance(op.get("path", ""), str | None)
        ):
            return None
        out.append({"op": op["op"], "path": op.get("path"), "value": op.get("value")})
    return out


def patch_operations(body: Any) -> list[dict[str, Any]]:
    plain = _plain_patch_operations(body)
    if plain is not None:
        return plain
    data = load(PATCH_REQUEST, body)
    ops = data["Operations"]
    assert isinstance(ops, list)
    return ops


def search_request(body: Any) -> dict[str, Any]:
    return load(SEARCH_REQUEST, body, syntax_error=False)


def bulk_request(body: Any) -> dict[str, Any]:
    return load(BULK_REQUEST, body)
