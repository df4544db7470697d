"""The portal's routes: thin, each one form in and one page out."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from scim_server import activation, passwords, throttle
from scim_server.errors import InvalidValue
from scim_server.portal import accounts

log = logging.getLogger("scim_server.portal")

# Here, beside its routes, so that the package imports its views and not the other way round.
bp = Blueprint("portal", __name__, template_folder="templates", url_prefix="/portal")

POLICY = (
    f"A password has {passwords.MIN_LENGTH} to {passwords.MAX_LENGTH} characters and mixes "
    "three of: lower-case letters, upper-case letters, digits and symbols."
)

PASSWORD_STATES = {
    None: "not known yet",
    "pending": "being set to your directory password",
    "synced": "your directory password",
    "temporary": "a temporary password: Microsoft 365 asks for a new one at sign-in",
    "unknown": "not yet your directory password: it is set when you sign in here",
    "none": "not set: the directory has no password for you yet",
    "federated": "not managed here: your domain is federated, so your organisation's "
    "identity provider holds the password",
    "error": "could not be set (see the sync error)",
    "drifted": "changed in Microsoft 365: signing in here sets your directory password again",
}

SYNC_STATES = {
    None: "not provisioned yet",
    "pending": "being provisioned",
    "creating": "being provisioned",
    "synced": "bound and managed by the directory",
    "out_of_scope": "none: your user name is not in a domain the directory provisions",
    "conflict": "an account with your user name already exists and is not bound",
    "error": "in error (see the sync error)",
    "unbound": "released: the directory no longer manages it",
}


@bp.after_request
def _headers(response: Response) -> Response:
    # Pages with passwords and links: never cached, framed or sent on as a Referer.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return response


def _page(template: str, code: int = 200, **context: object) -> Response:
    response = Response(render_template(template, policy=POLICY, **context), status=code)
    response.content_type = "text/html; charset=utf-8"
    return response


def _message(heading: str, text: str, code: int, **context: object) -> Response:
    return _page("portal/message.html", code, heading=heading, text=text, **context)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    return _message(exc.name, exc.description or exc.name, exc.code or 500, error=True)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    rid = g.get("request_id", "-")
    log.exception("portal: unhandled error, request_id=%s", rid)
    text = f"Something went wrong on our side. Request id: {rid}."
    return _message("Error", text, 500, error=True)


@bp.get("/")
def index() -> BaseResponse:
    return redirect(url_for("portal.login"))


@bp.get("/login")
def login_form() -> Response:
    return _page("portal/login.html")


@bp.post("/login")
def login() -> Response:
    user_name = request.form.get("username", "")
    outcome = accounts.sign_in(user_name, request.form.get("password", ""), _address())
    if isinstance(outcome, accounts.MustChange):
        return _page("portal/change.html", username=outcome.user_name)
    return _answer(outcome, "Signed in", user_name)


@bp.get("/password")
def password_form() -> Response:
    return _page("portal/change.html")


@bp.post("/password")
def password() -> Response:
    form = request.form
    user_name = form.get("username", "")
    try:
        outcome = accounts.change_password(
            user_name,
            form.get("current", ""),
            form.get("password", ""),
            form.get("confirm", ""),
            _address(),
        )
    except InvalidValue as exc:
        return _page("portal/change.html", 400, username=user_name, error=exc.detail)
    if isinstance(outcome, accounts.MustChange):  # unreachable: a change sets a new one
        return _page("portal/change.html", username=outcome.user_name)
    return _answer(outcome, "Password changed", user_name)


@bp.get("/activate/<token>")
def activate_form(token: str) -> Response:
    try:
        user_name = activation.holder(token)
    except activation.LinkInvalid as exc:
        return _message("Link not valid", str(exc), 410, error=True)
    return _page("portal/activate.html", username=user_name)


@bp.post("/activate/<token>")
def activate(token: str) -> Response:
    try:
        user_name = activation.holder(token)
        activation.redeem(token, request.form.get("password", ""), request.form.get("confirm", ""))
    except activation.LinkInvalid as exc:
        return _message("Link not valid", str(exc), 410, error=True)
    except InvalidValue as exc:
        return _page("portal/activate.html", 400, username=user_name, error=exc.detail)
    text = f"The password of {user_name} is set. Microsoft 365 takes it within a few moments."
    return _message("Account activated", text, 200, again=True)


def _answer(outcome: accounts.Outcome, heading: str, user_name: str) -> Response:
    if isinstance(outcome, accounts.SignedIn):
        return _status_page(outcome.status, heading)
    if isinstance(outcome, accounts.Locked):
        minutes = max(1, -(-outcome.retry_after // 60))
        response = _page(
            "portal/login.html",
            429,
            username=user_name,
            error=f"Too many failed sign-ins. Try again in {minutes} minute(s).",
        )
        response.headers["Retry-After"] = str(outcome.retry_after)
        return response
    if isinstance(outcome, accounts.Disabled):
        return _message("Account disabled", "This account is disabled.", 403, error=True)
    assert isinstance(outcome, accounts.Refused)
    response = _page(
        "portal/login.html", 401, username=user_name, error="Wrong user name or password."
    )
    if outcome.retry_after:
        response.headers["Retry-After"] = str(outcome.retry_after)
    return response


def _status_page(status: accounts.Status, heading: str) -> Response:
    binding = SYNC_STATES.get(status.sync_state, status.sync_state or "")
    if status.object_id and status.sync_state == "synced":
        binding = f"{binding} (object {status.object_id})"
    described = PASSWORD_STATES.get(status.password_state, status.password_state or "")
    if status.password_state in ("synced", "temporary") and status.password_synced_at:
        described += f", set {status.password_synced_at:%Y-%m-%d %H:%M} UTC"
    if status.check_queued:
        described += "; a check that Microsoft 365 still has it is under way"
    return _page(
        "portal/status.html", heading=heading, status=status, binding=binding, password=described
    )


def _address() -> str:
    return throttle.client_address()
