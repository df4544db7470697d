"""The user portal: plain HTML pages where users sign in with the directory's password,
replace a temporary one, and set their first one from an activation link."""

from __future__ import annotations

from scim_server.portal.views import bp

__all__ = ["bp"]
