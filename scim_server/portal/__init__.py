"""The user portal: plain HTML pages where users sign in with the directory's password,
replace a temporary one, and set their first one from an activation link."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("portal", __name__, template_folder="templates", url_prefix="/portal")

from scim_server.portal import views  # noqa: E402,F401  (registers the routes)
