"""A Microsoft Graph and Entra identity emulator: a real HTTP(S) server on loopback that
behaves as Graph documents, errors and limits included. It is the project's test double for
Graph and the sandbox tenant a new user runs on a laptop.

Modules:
    tenant      the pure directory model and Entra's rules (users, groups, domains, delta)
    passwords   complexity rules and hashing
    odata       $filter, $select, $top and opaque page tokens
    errors      Graph and Entra error types, rendered in their services' bodies
    throttle    the token bucket for the identity write budget
    tokens      issued JWTs, the published RS256 signing keys, client-assertion checks
    identity    OpenID discovery, the signing keys and the token endpoint (client
                credentials, ROPC)
    graph_api   Graph v1.0 routes, the dispatcher, $batch
    control     injected faults and the request log (test-only endpoints)
    state       options and the running emulator's state
    store       the optional SQLite state file
    tls         a throwaway CA and server certificate
    app         the WSGI app and its fault/log middleware
    server      the threaded server and its start-up line
    command     the `scim-server graph-emulator` click command
"""
