#!/usr/bin/env bash
# Installs what the test suite needs beyond Go, gcc and PostgreSQL's binaries: shellcheck,
# jq (n8nctl uses it on the hosts too) and docker-compose (to validate docker-compose.yml;
# no Docker engine is needed for that) from Debian's packages, and stripe-mock, age and
# SeaweedFS (an S3 server) with Go.
# Idempotent; as root it installs, otherwise it says what is missing.
set -euo pipefail

# stripe-mock, Stripe's own mock of its API (answers from Stripe's fixtures and validates
# every request against Stripe's OpenAPI spec), for billing's contract tests. v0.180.0
# serves API version 2023-10-16, the one stripe-go v76 pins. When the Go module proxy is
# unreachable it is not installed, and only the tests that need it are skipped.
stripe_mock_version=v0.180.0
gobin=$(go env GOBIN)
[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
if ! go version -m "$gobin/stripe-mock" 2>/dev/null | grep -qE "^\s+mod\s+github.com/stripe/stripe-mock\s+$stripe_mock_version\s"; then
  echo "install-tools: installing stripe-mock $stripe_mock_version" >&2
  go install "github.com/stripe/stripe-mock@$stripe_mock_version" ||
    echo "install-tools: stripe-mock could not be installed; billing's stripe-mock contract tests will be skipped" >&2
fi

# age encrypts backups before they leave a host (hosts get it from apt, bootstrap-host.sh);
# the tests run the real n8nctl, so they need the same binary. The module is BSD-licensed.
age_version=v1.2.1
if ! go version -m "$gobin/age" 2>/dev/null | grep -qE "^\s+mod\s+filippo.io/age\s+$age_version\s"; then
  echo "install-tools: installing age $age_version" >&2
  go install "filippo.io/age/cmd/...@$age_version"
fi

# SeaweedFS (Apache-2.0), a real S3 server with real SigV4 authentication, for objstore's
# tests and the backup end-to-end tests (scripts/s3.sh starts it). CI must run those, so
# failing to install it is fatal. Its module has replace directives, which `go install
# module@version` refuses, so weed is built inside the downloaded module, with the version
# stamped into it for `go version -m` to tell which one is installed. It is a big build:
# about 10 minutes on 2 cores the first time.
seaweedfs_version=v0.0.0-20261109003541-7506e5f91cd6
seaweedfs_stamp="github.com/seaweedfs/seaweedfs/weed/util/version.COMMIT=$seaweedfs_version"
if ! go version -m "$gobin/weed" 2>/dev/null | grep -qF "$seaweedfs_stamp"; then
  echo "install-tools: building SeaweedFS weed $seaweedfs_version (several minutes)" >&2
  # Outside our module, so that the download touches neither go.mod nor go.sum.
  src=$(cd / && go mod download -json "github.com/seaweedfs/seaweedfs@$seaweedfs_version" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$gobin"
  if [ -z "$src" ] || ! (cd "$src/weed" && go build -ldflags "-s -w -X $seaweedfs_stamp" -o "$gobin/weed.tmp" .); then
    rm -f "$gobin/weed.tmp"
    echo "install-tools: SeaweedFS $seaweedfs_version could not be built; the S3 tests (objstore, backups) cannot run" >&2
    exit 1
  fi
  mv "$gobin/weed.tmp" "$gobin/weed"
fi

missing=()
for tool in shellcheck jq docker-compose; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install-tools: installing ${missing[*]}" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "install-tools: missing ${missing[*]}: install them (apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi
