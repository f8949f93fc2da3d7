#!/usr/bin/env bash
# Starts or stops a throwaway S3 server for the tests: SeaweedFS (`weed server -s3`, one
# process with its master, volume server, filer and S3 gateway) on free loopback ports,
# with its data in DIR. Requests are authenticated for real: one identity with random
# keys, from an -s3.config file. The bucket is created before start returns. install-
# tools.sh installs weed.
#
#   eval "$(scripts/s3.sh start DIR)"   # prints export lines: PROVISIONER_TEST_S3_*
#   scripts/s3.sh stop DIR
set -euo pipefail

cmd=${1:?usage: s3.sh start|stop DIR}
dir=${2:?usage: s3.sh start|stop DIR}
bucket=provisioner-test

weed_bin() {
  local gobin
  if command -v weed >/dev/null 2>&1; then command -v weed; return; fi
  gobin=$(go env GOBIN)
  [ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
  if [ -x "$gobin/weed" ]; then echo "$gobin/weed"; return; fi
  echo "s3.sh: no weed binary (SeaweedFS): run scripts/install-tools.sh" >&2
  return 1
}

# free_ports N prints N distinct loopback ports nothing listens on. Ports stay under
# 55536 because weed would derive gRPC ports at +10000 from any it is not given.
free_ports() {
  local n=$1 port picked=" "
  for _ in $(seq 1 500); do
    [ "$n" -gt 0 ] || return 0
    port=$((20000 + RANDOM % 30000))
    case "$picked" in *" $port "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      picked="$picked$port "
      echo "$port"
      n=$((n - 1))
    fi
  done
  echo "s3.sh: no free ports found" >&2
  return 1
}

random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

# s3_status prints the HTTP status of a SigV4-signed request to the bucket (000: no answer).
s3_status() {
  local method=$1
  curl -s -o /dev/null -w '%{http_code}' -X "$method" --max-time 5 \
    --aws-sigv4 "aws:amz:us-east-1:s3" --user "$access_key:$secret_key" \
    "http://127.0.0.1:$s3_port/$bucket" || true
}

stop() {
  local pid
  [ -f "$dir/weed.pid" ] || return 0
  pid=$(cat "$dir/weed.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  # weed keeps gRPC sockets in /tmp, named by port; it removes them unless killed.
  if [ -f "$dir/ports" ]; then
    local saved
    read -ra saved <"$dir/ports"
    for port in "${saved[@]}"; do
      rm -f "/tmp/seaweedfs-master-grpc-$port.sock" "/tmp/seaweedfs-volume-grpc-$port.sock" \
        "/tmp/seaweedfs-filer-grpc-$port.sock" "/tmp/seaweedfs-s3-grpc-$port.sock"
    done
  fi
  rm -f "$dir/weed.pid"
}

case "$cmd" in
start)
  weed=$(weed_bin)
  # A second start in the same directory would leave the first server running with no
  # pid file to stop it by.
  if [ -f "$dir/weed.pid" ] && kill -0 "$(cat "$dir/weed.pid")" 2>/dev/null; then
    echo "s3.sh: a server already runs from $dir (pid $(cat "$dir/weed.pid")): stop it first" >&2
    exit 1
  fi
  mkdir -p "$dir"
  access_key="test$(random_hex 8)"
  secret_key=$(random_hex 20)
  (
    umask 077
    cat >"$dir/s3.json" <<EOF
{"identities": [{"name": "provisioner-test",
  "credentials": [{"accessKey": "$access_key", "secretKey": "$secret_key"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
  )
  started=$(date +%s%N)
  # A port picked free can be taken before weed binds it: try again with new ones.
  for attempt in 1 2 3; do
    rm -rf "$dir/data" && mkdir -p "$dir/data"
    mapfile -t ports < <(free_ports 8)
    s3_port=${ports[6]}
    echo "${ports[*]}" >"$dir/ports"
    # Small volumes (64 MiB each, at most 64 of them: 4 GiB of data), no extra services
    # (no iceberg/lance catalogs, no telemetry) and a soft memory limit for Go's garbage
    # collector (after a 1 GiB upload weed holds 850 MB without it, 400 MB with it) keep
    # it light on a shared machine.
    GOMEMLIMIT=512MiB "$weed" server -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -master.port="${ports[0]}" -master.port.grpc="${ports[1]}" -master.telemetry=false \
      -master.volumeSizeLimitMB=64 -volume.max=64 \
      -volume.port="${ports[2]}" -volume.port.grpc="${ports[3]}" \
      -filer.port="${ports[4]}" -filer.port.grpc="${ports[5]}" -filer.localSocket="$dir/filer.sock" \
      -s3 -s3.port="$s3_port" -s3.port.grpc="${ports[7]}" -s3.localSocket="$dir/s3.sock" \
      -s3.config="$dir/s3.json" -s3.port.iceberg=0 -s3.port.lance=0 \
      </dev/null >"$dir/weed.log" 2>&1 &
    echo $! >"$dir/weed.pid"
    status=000
    for _ in $(seq 1 600); do
      kill -0 "$(cat "$dir/weed.pid")" 2>/dev/null || break
      status=$(s3_status PUT)
      # 409: created by an earlier try of this loop.
      [ "$status" = 200 ] || [ "$status" = 409 ] && break
      sleep 0.1
    done
    if [ "$status" = 200 ] || [ "$status" = 409 ]; then
      [ "$(s3_status HEAD)" = 200 ] && break
    fi
    stop
    if [ "$attempt" = 3 ]; then
      tail -n 40 "$dir/weed.log" >&2
      echo "s3.sh: SeaweedFS did not start (last answer: $status; log above, and in $dir/weed.log)" >&2
      exit 1
    fi
  done
  echo "s3.sh: SeaweedFS answers on 127.0.0.1:$s3_port after $((($(date +%s%N) - started) / 1000000)) ms" >&2
  cat <<EOF
export PROVISIONER_TEST_S3_ENDPOINT=http://127.0.0.1:$s3_port
export PROVISIONER_TEST_S3_BUCKET=$bucket
export PROVISIONER_TEST_S3_ACCESS_KEY_ID=$access_key
export PROVISIONER_TEST_S3_SECRET_ACCESS_KEY=$secret_key
export PROVISIONER_TEST_S3_REGION=us-east-1
EOF
  ;;
stop)
  stop
  rm -rf "$dir"
  ;;
*)
  echo "usage: s3.sh start|stop DIR" >&2
  exit 2
  ;;
esac
