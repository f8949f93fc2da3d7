#!/usr/bin/env bash
# Runs every test of the project on SQLite and on a throwaway PostgreSQL 15 (with a
# throwaway S3 server for the backups), then checks
# that no secret a test used ever reached a log. Usage: scripts/test.sh [go test flags]
#
# Needs Go, gcc (cgo for SQLite) and PostgreSQL 15's binaries (initdb, pg_ctl); installs
# the rest (scripts/install-tools.sh). Set PROVISIONER_TEST_POSTGRES_URL to use a server
# of your own instead of starting one.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-tools.sh

work=$(mktemp -d)
chmod 755 "$work" # the postgres user must reach its data dir inside
cleanup() {
  [ -d "$work/pg" ] && scripts/postgres.sh stop "$work/pg"
  [ -d "$work/s3" ] && scripts/s3.sh stop "$work/s3"
  [ -n "${stripe_mock_pid:-}" ] && kill "$stripe_mock_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${PROVISIONER_TEST_POSTGRES_URL:-}" ]; then
  PROVISIONER_TEST_POSTGRES_URL=$(scripts/postgres.sh start "$work/pg")
  export PROVISIONER_TEST_POSTGRES_URL
  echo "test.sh: a throwaway PostgreSQL started for the tests"
fi
export PROVISIONER_TEST_REQUIRE_POSTGRES=1

# A real S3 server (SeaweedFS) for objstore's and the backups' tests.
if [ -z "${PROVISIONER_TEST_S3_ENDPOINT:-}" ]; then
  eval "$(scripts/s3.sh start "$work/s3")"
  echo "test.sh: a throwaway S3 server (SeaweedFS) started for the tests"
fi
export PROVISIONER_TEST_REQUIRE_S3=1

# stripe-mock for billing's contract tests, on a free loopback port, when it is installed.
gobin=$(go env GOBIN)
[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
# The tests run our host scripts, which need the tools installed there (age).
export PATH="$gobin:$PATH"
if [ -z "${PROVISIONER_TEST_STRIPE_MOCK_URL:-}" ] && [ -x "$gobin/stripe-mock" ]; then
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 30000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
  done
  # It also serves HTTPS unless told where: a port of the system's choice, unused.
  "$gobin/stripe-mock" -http-addr "127.0.0.1:$port" -https-addr 127.0.0.1:0 >"$work/stripe-mock.log" 2>&1 &
  stripe_mock_pid=$!
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    cat "$work/stripe-mock.log" >&2
    echo "test.sh: stripe-mock did not start" >&2
    exit 1
  fi
  export PROVISIONER_TEST_STRIPE_MOCK_URL="http://127.0.0.1:$port"
  export PROVISIONER_TEST_REQUIRE_STRIPE_MOCK=1
  echo "test.sh: stripe-mock started for billing's contract tests"
fi
export PROVISIONER_TEST_LOG_DIR="$work/logs"
mkdir -p "$PROVISIONER_TEST_LOG_DIR"

echo "test.sh: docker-compose.yml"
compose=$(mktemp -d "$work/compose.XXXX")
cp docker-compose.yml Dockerfile "$compose/"
sed 's/^POSTGRES_PASSWORD=$/POSTGRES_PASSWORD=validate-only/' .env.example >"$compose/.env"
(cd "$compose" && docker-compose config -q)
(cd "$compose" && docker-compose --profile monitoring config -q) # Prometheus and Grafana too
# The file must refuse to start without a database password rather than run with none.
if (cd "$compose" && : >.env && env -u POSTGRES_PASSWORD docker-compose config -q) 2>/dev/null; then
  echo "docker-compose.yml accepts an empty POSTGRES_PASSWORD" >&2
  exit 1
fi

echo "test.sh: gofmt and go vet"
unformatted=$(gofmt -l cmd internal migrations scripts deploy)
if [ -n "$unformatted" ]; then
  echo "gofmt would change: $unformatted" >&2
  exit 1
fi
go vet ./...

echo "test.sh: go test -race ./..."
status=0
go test -race -count=1 -v "$@" ./... >"$work/test.log" 2>&1 || status=$?
# The full log is long; show the package results, every failure, and the store and API
# tests' results per database so both dialects are visible.
grep -E '^(ok|FAIL|---|panic:|\s+--- FAIL)|^\s+--- (PASS|SKIP): \S+/(sqlite|postgres) ' "$work/test.log" || true
if [ "$status" != 0 ]; then
  echo "test.sh: failures; the context of each:" >&2
  grep -B15 -A20 -E -- '--- FAIL' "$work/test.log" | head -400 >&2 || true
  grep -A40 'WARNING: DATA RACE' "$work/test.log" | head -200 >&2 || true
  exit "$status"
fi
for d in sqlite postgres; do
  echo "test.sh: $(grep -cE -- "--- PASS: \S+/$d " "$work/test.log") tests passed on $d, $(grep -cE -- "--- SKIP: \S+/$d " "$work/test.log") skipped"
done

grep -E -- '--- (PASS|SKIP): TestStripeContract/' "$work/test.log" | sed 's/^ */test.sh: Stripe contract: /' || true

echo "test.sh: secrets in logs"
secrets="$PROVISIONER_TEST_LOG_DIR/secrets.txt"
if [ ! -s "$secrets" ]; then
  echo "no test declared a secret: the leak check checked nothing" >&2
  exit 1
fi
logs=("$PROVISIONER_TEST_LOG_DIR"/logs-*.jsonl)
if grep -F -l -f "$secrets" "${logs[@]}"; then
  echo "test.sh: a secret used by the tests was logged (files above)" >&2
  exit 1
fi
echo "test.sh: $(sort -u "$secrets" | wc -l) secrets checked against $(cat "${logs[@]}" | wc -l) log lines: none leaked"
