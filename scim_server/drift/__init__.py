"""Drift: what changed in Microsoft 365 behind the directory's back, found with Graph's delta
queries, shown, and put right through the outbox.

    settings   M365_DRIFT, M365_DRIFT_INTERVAL_MINUTES, M365_DRIFT_READ_RATE (checked at start)
    state      the delta links, the round's lease, the counts (drift_state, drift_counts)
    directory  what the directory last sent and wants now, read on a Core Connection
    detect     pure comparison of a delta item with that: a list of Findings
    repair     one transaction per drifted object: the link, the counts, the outbox event;
               and what the sync worker does for the events that need more than a delivery
    rounds     a round: lease, delta reads (paced), detection, report or repair
    plan       the dry run of `scim-server m365 plan`

Nothing here needs a Flask application: each part takes the database engine (or a Core
Connection from `db.begin`), a Graph client and a clock.
"""
