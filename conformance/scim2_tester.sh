#!/usr/bin/env bash
# Runs scim2-tester (through scim2-cli) against a fresh `scim-server serve` on SQLite and
# fails on any check that is not SUCCESS. By default the server runs as `make run` starts it:
# the sync worker on, delivering to the sandbox tenant; `--no-sync` runs it without.
# Usage: bash conformance/scim2_tester.sh [PORT] [--no-sync]
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${1:-18080}"
MODE="${2:-}"
case "$MODE" in
  "" | --no-sync) ;;
  *) echo "usage: $0 [PORT] [--no-sync]" >&2; exit 2 ;;
esac
TOOLS=.venv-conformance
if [ ! -x "$TOOLS/bin/scim2" ]; then
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install --quiet --upgrade pip
  "$TOOLS/bin/pip" install --quiet scim2-cli scim2-tester
fi
WORK=$(mktemp -d)
export DATABASE_URL="sqlite:///$WORK/conformance.sqlite3"
.venv/bin/scim-server db upgrade >/dev/null
TOKEN=$(.venv/bin/scim-server token create scim2-tester 2>/dev/null | tail -n 1)
# The sandbox tenant's state lives beside the SQLite file, in $WORK.
.venv/bin/scim-server serve --host 127.0.0.1 --port "$PORT" ${MODE:---sandbox} >"$WORK/server.log" 2>&1 &
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
echo "scim2-tester (serve ${MODE:-with the sync worker}): $passed passed, $failed failed"
if [ "$passed" -eq 0 ] || [ "$failed" -ne 0 ]; then
  echo "--- server log (tail) ---"; tail -n 50 "$WORK/server.log"
  exit 1
fi
