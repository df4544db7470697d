"""Conformance tools: scim2-tester (scim2_tester.sh) and the client replays (replay.py)."""
