#!/usr/bin/env bash
# Runs scim2-tester (through scim2-cli) against a fresh `scim-server serve` on SQLite and
# fails on any check that is not SUCCESS. Usage: bash conformance/scim2_tester.sh [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${1:-18080}"
TOOLS=.venv-conformance
if [ ! -x "$TOOLS/bin/scim2" ]; then
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install --quiet --upgrade pip
  "$TOOLS/bin/pip" install --quiet scim2-cli scim2-tester
fi
WORK=$(mktemp -d)
export DATABASE_URL="sqlite:///$WORK/conformance.sqlite3"
TOKEN=$(.venv/bin/scim-server token create scim2-tester 2>/dev/null | tail -n 1)
# --no-sync: scim2-tester compares whole extension objects, read-only sync state included.
.venv/bin/scim-server serve --host 127.0.0.1 --port "$PORT" --no-sync >"$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do
  curl -fsS -o /dev/null -H "Authorization: Bearer $TOKEN" \
    "http://127.0.0.1:$PORT/scim/v2/ServiceProviderConfig" && break
  sleep 0.2
done
OUT="$WORK/scim2-tester.txt"
SCIM_CLI_HEADERS="Authorization: Bearer $TOKEN" \
  "$TOOLS/bin/scim2" --url "http://127.0.0.1:$PORT/scim/v2" test >"$OUT" 2>&1 || true
cat "$OUT"
passed=$(grep -c '^SUCCESS ' "$OUT" || true)
failed=$(grep -cE '^[A-Z_]+ ' "$OUT" | awk -v p="$passed" '{print $1 - p}')
echo "scim2-tester: $passed passed, $failed failed"
if [ "$passed" -eq 0 ] || [ "$failed" -ne 0 ]; then
  echo "--- server log (tail) ---"; tail -n 50 "$WORK/server.log"
  exit 1
fi
