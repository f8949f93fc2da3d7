#!/usr/bin/env bash
# Installs what the test suite needs beyond Go, gcc and PostgreSQL's binaries: shellcheck
# and jq from Debian's packages (n8nctl uses jq on the hosts too). Idempotent; as root it
# installs, otherwise it says what is missing.
set -euo pipefail

missing=()
for tool in shellcheck jq; do
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
