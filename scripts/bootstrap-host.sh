#!/usr/bin/env bash
# bootstrap-host.sh: turn a fresh Ubuntu 22.04/24.04 or Debian 12 VM into an
# n8n host for n8n-provisioner. Run it as root on the VM; run it again at any
# time: it only changes what differs from what it would set up, and says so.
#
#   bootstrap-host.sh --base-domain n8n.example.com --acme-email ops@example.com \
#       --cloudflare-token-file /root/cf-token [--n8nctl PATH|https://URL]
#
# What it sets up:
#   - packages from the distribution: docker.io (kept as is when Docker's own
#     docker-ce is installed), Compose v2 where the release has it, jq, curl,
#     age (n8nctl encrypts backups with it, and curl moves them through
#     presigned URLs), ca-certificates, qemu-guest-agent (started: the
#     provisioner runs n8nctl through it);
#   - /etc/docker/daemon.json: json-file logs with rotation, live-restore
#     (merged into an existing file, whose other settings stay);
#   - the Docker network "proxy", with inter-container traffic off: n8n
#     instances of different customers must not reach each other directly
#     (that would bypass Traefik and its owner-setup guard);
#   - Traefik (pinned image) in the host's network namespace on ports 80 and
#     443, so it reaches the instances on "proxy" as the host does; a Docker
#     provider that only routes containers labelled traefik.enable=true;
#     entry points web (redirects to websecure) and websecure; an ACME
#     resolver that gets ONE wildcard certificate for *.<base-domain> through
#     Cloudflare's DNS-01 challenge and makes it the default certificate, so
#     that routers with tls=true (n8nctl's) use it and no instance's name ever
#     reaches certificate-transparency logs;
#   - n8nctl at /opt/n8n-provisioner/bin/n8nctl (a wrapper that reads
#     /etc/n8n-provisioner/n8nctl.env, then runs the agent installed in
#     /opt/n8n-provisioner/libexec), the data root (/data/n8n) and the backup
#     dir (/var/backups/n8n), both root-only.
#
# Secrets: the Cloudflare token is copied into a root-only file (0600, in a
# 0700 directory) that Traefik reads; it never appears in argv, logs or the
# container's environment.
#
# Testing without root or network: every file is written under $BOOTSTRAP_ROOT
# (default /), and every host command (apt-get, apt-cache, dpkg-query,
# systemctl, docker, chown, stat, id, curl) is looked up on $PATH, so a test
# puts fakes first. Templates come from $BOOTSTRAP_TEMPLATES (default: host/
# beside this script).
#
# Exit status: 0 done (or nothing to do), 2 bad flags or settings (nothing
# changed), 1 anything else.
set -Eeuo pipefail
shopt -s inherit_errexit
umask 022

readonly PROG=bootstrap-host
readonly DEFAULT_TRAEFIK_IMAGE=traefik:v3.7.13
readonly NETWORK=proxy
readonly RESOLVER=cloudflare
readonly TRAEFIK=traefik
readonly CONFIG_LABEL=n8n-provisioner.config
readonly OWNER=0:0
readonly ACME_PRODUCTION=https://acme-v02.api.letsencrypt.org/directory
readonly ACME_STAGING_CA=https://acme-staging-v02.api.letsencrypt.org/directory

# Where things live on the host. $ROOT (from $BOOTSTRAP_ROOT) goes in front of
# every path the script touches, and of the host paths it writes into files
# and docker flags: it is empty on a real host.
readonly CONF_DIR=/etc/n8n-provisioner
readonly SECRETS_DIR=$CONF_DIR/secrets
readonly TOKEN_NAME=cloudflare-dns-token
readonly TOKEN_FILE=$SECRETS_DIR/$TOKEN_NAME
readonly TRAEFIK_DIR=$CONF_DIR/traefik
readonly TRAEFIK_STATE=/var/lib/n8n-provisioner/traefik
readonly AGENT_HOME=/opt/n8n-provisioner
readonly AGENT_BIN=$AGENT_HOME/bin/n8nctl
readonly AGENT_REAL=$AGENT_HOME/libexec/n8nctl
readonly AGENT_ENV=$CONF_DIR/n8nctl.env
readonly EGRESS_BIN=$AGENT_HOME/libexec/n8n-egress
readonly EGRESS_CONF=$CONF_DIR/egress.conf
readonly EGRESS_UNIT=/etc/systemd/system/n8n-egress.service
readonly BRIDGE_NAME=n8n-proxy
readonly DAEMON_JSON=/etc/docker/daemon.json
readonly DOCKER_SOCK=/var/run/docker.sock
readonly AGENT_DEVICE=/dev/virtio-ports/org.qemu.guest_agent.0

readonly DOMAIN_RE='^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$'
readonly EMAIL_RE='^[A-Za-z0-9._%+-]+@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$'

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
ROOT=${BOOTSTRAP_ROOT:-/}
ROOT=${ROOT%/}
TEMPLATES=${BOOTSTRAP_TEMPLATES:-$SCRIPT_DIR/host}

BASE_DOMAIN=${BASE_DOMAIN:-}
ACME_EMAIL=${ACME_EMAIL:-}
TOKEN_SRC=${CLOUDFLARE_TOKEN_FILE:-}
N8NCTL_SRC=${N8NCTL_SOURCE:-$SCRIPT_DIR/n8nctl}
N8NCTL_SHA256=${N8NCTL_SHA256:-}
DATA_ROOT=${N8N_DATA_ROOT:-/data/n8n}
BACKUP_DIR=${N8N_BACKUP_DIR:-/var/backups/n8n}
TRAEFIK_IMAGE=${TRAEFIK_IMAGE:-$DEFAULT_TRAEFIK_IMAGE}
ACME_STAGING=${ACME_STAGING:-0}
ALLOW_EGRESS=()
RESOLVERS=()
DRY_RUN=0

CHANGES=0
WARNINGS=()
WORK=""
TMP_FILES=()
AGENT_READY=false
DAEMON_JSON_CHANGED=0
declare -A INSTALLED=()

# ---------------------------------------------------------------- output

log() { printf '%s: %s\n' "$PROG" "$*"; }

warn() {
	printf '%s: warning: %s\n' "$PROG" "$*" >&2
	WARNINGS+=("$*")
}

die() {
	local code=$1
	shift
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit "$code"
}

on_err() {
	local rc=$? line=$1 cmd=$2
	trap - ERR
	die 1 "unexpected failure (exit $rc) at line $line: $cmd"
}
trap 'on_err "$LINENO" "$BASH_COMMAND"' ERR

cleanup() {
	if ((${#TMP_FILES[@]})); then rm -f -- "${TMP_FILES[@]}"; fi
	[[ -z $WORK ]] || rm -rf -- "$WORK"
}
trap cleanup EXIT

# act DESCRIPTION COMMAND...: one change to the host. A dry run only says it.
act() {
	local what=$1
	shift
	CHANGES=$((CHANGES + 1))
	if ((DRY_RUN)); then
		log "would $what"
		return 0
	fi
	log "$what"
	"$@"
}

# quiet COMMAND...: COMMAND without its stdout (docker prints ids).
quiet() { "$@" >/dev/null; }

usage() {
	cat <<EOF
usage: $PROG --base-domain DOMAIN --acme-email EMAIL --cloudflare-token-file FILE [options]

Turns this Ubuntu 22.04/24.04 or Debian 12 VM into an n8n host: Docker, Traefik
with a wildcard certificate for *.DOMAIN (Cloudflare DNS-01), qemu-guest-agent,
and n8nctl at $AGENT_BIN. Idempotent: run it again to check or repair.

  --base-domain DOMAIN          instances live at <slug>.DOMAIN            (env BASE_DOMAIN)
  --acme-email EMAIL            Let's Encrypt account email                 (env ACME_EMAIL)
  --cloudflare-token-file FILE  Cloudflare API token (Zone.DNS:Edit on the zone), one line;
                                copied root-only; optional once installed  (env CLOUDFLARE_TOKEN_FILE)
  --n8nctl PATH|https://URL     the host agent to install; default: n8nctl beside this script
                                                                            (env N8NCTL_SOURCE)
  --n8nctl-sha256 HEX           refuse an n8nctl whose SHA-256 differs      (env N8NCTL_SHA256)
  --data-root DIR               instances' data, default /data/n8n          (env N8N_DATA_ROOT)
  --backup-dir DIR              backups, default /var/backups/n8n           (env N8N_BACKUP_DIR)
  --traefik-image IMAGE         default $DEFAULT_TRAEFIK_IMAGE            (env TRAEFIK_IMAGE)
  --acme-staging                use Let's Encrypt's staging CA (for trials) (env ACME_STAGING=1)
  --allow-egress CIDR[:PORT]    let the instances reach this private network (or one port of
                                it; IPv6: [CIDR]:PORT); repeat for more. Everything private is
                                closed to them otherwise: the LAN, the host, 169.254.169.254
  --resolver IP                 a DNS server the instances may query directly; repeat for more
                                (default: the nameservers of /etc/resolv.conf)
  --dry-run                     print what would change, change nothing
  -h, --help                    this help

Exit status: 0 done, 2 bad flags or settings (nothing changed), 1 a failure.
EOF
}

# ---------------------------------------------------------------- settings

parse_args() {
	local flag val
	while (($#)); do
		flag=$1 val=""
		if [[ $flag == --*=* ]]; then
			val=${flag#*=}
			flag=${flag%%=*}
			set -- "$flag" "$val" "${@:2}"
		fi
		case $flag in
		-h | --help)
			usage
			exit 0
			;;
		--dry-run) DRY_RUN=1 && shift && continue ;;
		--acme-staging) ACME_STAGING=1 && shift && continue ;;
		--base-domain | --acme-email | --cloudflare-token-file | --n8nctl | --n8nctl-sha256 | \
			--data-root | --backup-dir | --traefik-image | --allow-egress | --resolver)
			(($# >= 2)) || die 2 "$flag needs a value (see --help)"
			val=$2
			shift 2
			;;
		*) die 2 "unknown argument: $flag (see --help)" ;;
		esac
		case $flag in
		--base-domain) BASE_DOMAIN=$val ;;
		--acme-email) ACME_EMAIL=$val ;;
		--cloudflare-token-file) TOKEN_SRC=$val ;;
		--n8nctl) N8NCTL_SRC=$val ;;
		--n8nctl-sha256) N8NCTL_SHA256=$val ;;
		--data-root) DATA_ROOT=$val ;;
		--backup-dir) BACKUP_DIR=$val ;;
		--traefik-image) TRAEFIK_IMAGE=$val ;;
		--allow-egress) ALLOW_EGRESS+=("$val") ;;
		--resolver) RESOLVERS+=("$val") ;;
		esac
	done
}

# check_settings: everything that can be wrong with the flags, before anything
# is touched.
check_settings() {
	BASE_DOMAIN=${BASE_DOMAIN,,}
	BASE_DOMAIN=${BASE_DOMAIN%.}
	[[ -n $BASE_DOMAIN ]] || die 2 "--base-domain is required: instances live at https://<slug>.<base-domain>"
	if ((${#BASE_DOMAIN} > 240)) || [[ ! $BASE_DOMAIN =~ $DOMAIN_RE ]]; then
		die 2 "--base-domain must be a DNS name like n8n.example.com, not \"$BASE_DOMAIN\""
	fi
	[[ -n $ACME_EMAIL ]] || die 2 "--acme-email is required: Let's Encrypt writes there about expiring certificates"
	[[ $ACME_EMAIL =~ $EMAIL_RE ]] || die 2 "--acme-email must be an email address, not \"$ACME_EMAIL\""
	[[ $ACME_STAGING == 0 || $ACME_STAGING == 1 ]] || die 2 "ACME_STAGING must be 0 or 1"
	local d
	for d in "$DATA_ROOT" "$BACKUP_DIR"; do
		[[ $d =~ ^(/[A-Za-z0-9._-]+)+$ && $d != */. && $d != */.. && $d != */../* ]] ||
			die 2 "data root and backup dir must be absolute paths of plain names, not \"$d\""
	done
	[[ $TRAEFIK_IMAGE =~ ^[A-Za-z0-9][A-Za-z0-9._/-]*(:[A-Za-z0-9._-]+)?(@sha256:[a-f0-9]{64})?$ ]] ||
		die 2 "--traefik-image is not an image reference: \"$TRAEFIK_IMAGE\""
	[[ $TRAEFIK_IMAGE == *:* || $TRAEFIK_IMAGE == *@* ]] ||
		die 2 "--traefik-image must be pinned (name:tag or name@sha256:...), not \"$TRAEFIK_IMAGE\""
	[[ -z $N8NCTL_SHA256 || $N8NCTL_SHA256 =~ ^[a-f0-9]{64}$ ]] ||
		die 2 "--n8nctl-sha256 must be 64 lowercase hex digits"
	if [[ $N8NCTL_SRC == *://* ]]; then
		[[ $N8NCTL_SRC == https://* ]] || die 2 "--n8nctl URL must be https://, not \"$N8NCTL_SRC\""
	else
		[[ -f $N8NCTL_SRC ]] || die 2 "--n8nctl: no such file: $N8NCTL_SRC"
	fi
	[[ -d $TEMPLATES ]] || die 2 "templates not found in $TEMPLATES: copy host/ beside this script"
	local entry cidr port
	for entry in "${ALLOW_EGRESS[@]}"; do
		cidr=$entry port=""
		if [[ $entry =~ ^\[(.+)\]:([0-9]+)$ || $entry =~ ^([0-9./]+):([0-9]+)$ ]]; then
			cidr=${BASH_REMATCH[1]} port=${BASH_REMATCH[2]}
		fi
		if ! [[ $cidr =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}(/([0-9]|[12][0-9]|3[0-2]))?$ || ($cidr == *:* && $cidr =~ ^[0-9A-Fa-f:]+(/[0-9]{1,3})?$) ]] ||
			{ [[ -n $port ]] && ! ((port >= 1 && port <= 65535)); }; then
			die 2 "--allow-egress must be CIDR[:PORT] (IPv6: [CIDR]:PORT), e.g. 10.0.0.5/32:5432, not \"$entry\""
		fi
	done
	for entry in "${RESOLVERS[@]}"; do
		[[ $entry =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ || ($entry == *:* && $entry =~ ^[0-9A-Fa-f:]+$) ]] ||
			die 2 "--resolver must be an IP address, not \"$entry\""
	done
}

# check_token: the token file must hold one line of printable characters. It
# may be left out once a token is installed; the installed one is kept.
check_token() {
	if [[ -z $TOKEN_SRC ]]; then
		[[ -f $ROOT$TOKEN_FILE ]] ||
			die 2 "--cloudflare-token-file is required on the first run (a Cloudflare API token with Zone.DNS:Edit on the zone of $BASE_DOMAIN)"
		TOKEN_SRC=$ROOT$TOKEN_FILE
		return 0
	fi
	[[ -f $TOKEN_SRC && -r $TOKEN_SRC ]] || die 2 "--cloudflare-token-file: cannot read $TOKEN_SRC"
	local token lines
	token=$(<"$TOKEN_SRC")
	lines=$(wc -l <"$TOKEN_SRC")
	# $(<) dropped the trailing newline; lego drops it too.
	if ((lines > 1)) || [[ ! $token =~ ^[[:graph:]]{20,}$ ]]; then
		die 2 "--cloudflare-token-file must hold the token alone on one line"
	fi
	local mode
	mode=$(stat -c '%a' -- "$TOKEN_SRC")
	if [[ ${mode: -2} != 00 ]]; then
		warn "$TOKEN_SRC is readable by other users (mode $mode): its copy is root-only; delete or chmod 600 the original"
	fi
}

# check_data_root: refuse to point n8nctl at a new data root while the old one
# holds instances: they would vanish from n8nctl's view (moving them is a
# job for backup and restore, not for this script).
check_data_root() {
	local env_file=$ROOT$AGENT_ENV old entry
	[[ -f $env_file ]] || return 0
	old=$(sed -n 's/^N8N_DATA_ROOT=//p' "$env_file" | tail -n 1)
	[[ -n $old && $old != "$ROOT$DATA_ROOT" && -d $old ]] || return 0
	for entry in "$old"/*; do
		[[ -e $entry ]] || continue
		die 2 "instances live in the current data root ${old#"$ROOT"}: move them with backup and restore before changing --data-root"
	done
}

check_os() {
	local release=$ROOT/etc/os-release id="" version=""
	[[ -f $release ]] || die 2 "cannot tell the distribution: $release is missing"
	id=$(sed -n 's/^ID=//p' "$release" | tr -d '"')
	version=$(sed -n 's/^VERSION_ID=//p' "$release" | tr -d '"')
	case $id:$version in
	ubuntu:22.04 | ubuntu:24.04 | debian:12) log "distribution: $id $version" ;;
	ubuntu:* | debian:*) warn "$id $version is not a tested release (Ubuntu 22.04/24.04, Debian 12): going on" ;;
	*) die 2 "unsupported distribution \"$id $version\": this script needs Ubuntu 22.04/24.04 or Debian 12" ;;
	esac
}

# ---------------------------------------------------------------- files

# fix_meta PATH MODE OWNER: give an existing PATH its mode and owner.
fix_meta() {
	local dst=$1 mode=$2 owner=$3 path meta
	path=$ROOT$dst
	[[ -e $path ]] || return 0 # a dry run did not create it
	meta=$(stat -c '%a %u:%g' -- "$path")
	[[ ${meta%% *} == "$mode" ]] || act "chmod $mode $dst (was ${meta%% *})" chmod "$mode" -- "$path"
	[[ ${meta#* } == "$owner" ]] || act "chown $owner $dst (was ${meta#* })" chown "$owner" -- "$path"
}

make_dir() { mkdir -p -- "$1" && chmod "$2" -- "$1"; }

# ensure_dir PATH MODE OWNER
ensure_dir() {
	local dst=$1 mode=$2 owner=$3
	[[ -d $ROOT$dst ]] || act "create $dst/ (mode $mode)" make_dir "$ROOT$dst" "$mode"
	fix_meta "$dst" "$mode" "$owner"
}

# put_file PATH MODE OWNER SOURCE: make PATH hold SOURCE's bytes. The new
# content goes to a 0600 temporary file beside PATH and is renamed over it, so
# a reader never sees half a file and a secret is never readable by others.
put_file() {
	local dst=$1 mode=$2 owner=$3 src=$4 path tmp
	path=$ROOT$dst
	if [[ -f $path ]] && cmp -s -- "$src" "$path"; then
		fix_meta "$dst" "$mode" "$owner"
		return 0
	fi
	if ((DRY_RUN)); then
		act "write $dst (mode $mode)"
		return 0
	fi
	tmp=$(umask 077 && mktemp -- "${path%/*}/.${path##*/}.XXXXXX")
	TMP_FILES+=("$tmp")
	cat -- "$src" >"$tmp"
	chmod "$mode" -- "$tmp"
	act "write $dst (mode $mode)" mv -f -- "$tmp" "$path"
	fix_meta "$dst" "$mode" "$owner"
}

# render TEMPLATE KEY=VALUE...: the template with each @KEY@ replaced.
render() {
	local name=$1 tpl=$TEMPLATES/$1 out kv
	shift
	[[ -f $tpl ]] || die 2 "template missing: $tpl"
	out=$(<"$tpl")
	for kv in "$@"; do
		out=${out//"@${kv%%=*}@"/"${kv#*=}"}
	done
	if [[ $out =~ @[A-Z_]+@ ]]; then
		die 1 "template $name: ${BASH_REMATCH[0]} has no value"
	fi
	printf '%s\n' "$out"
}

# ---------------------------------------------------------------- packages

# query_packages PKG...: note in INSTALLED which of PKG are installed, with
# one dpkg-query for all (it exits 1 when any is unknown: that is an answer).
query_packages() {
	local out pkg status
	# shellcheck disable=SC2016 # ${Package} and ${Status} are dpkg-query's fields
	out=$(dpkg-query -W -f='${Package} ${Status}\n' "$@" 2>/dev/null) || true
	while read -r pkg status; do
		[[ $status != "install ok installed" ]] || INSTALLED[$pkg]=1
	done <<<"$out"
}

installed() { [[ -v INSTALLED[$1] ]]; }

available() { apt-cache show --no-all-versions "$1" >/dev/null 2>&1; }

ensure_packages() {
	local want=(ca-certificates curl jq age qemu-guest-agent) missing=() p compose="" docker_pkg=docker.io
	query_packages "${want[@]}" docker.io docker-ce docker-compose-v2 docker-compose-plugin
	if installed docker-ce; then
		docker_pkg=docker-ce
		log "Docker Engine comes from Docker's docker-ce package: keeping it instead of docker.io"
	else
		want+=(docker.io)
	fi
	for p in "${want[@]}"; do
		installed "$p" || missing+=("$p")
	done
	# Compose v2 is for the operator, not for n8n: install it where the
	# release packages it, skip it quietly where not (Debian 12).
	if ! installed docker-compose-v2 && ! installed docker-compose-plugin; then
		compose=docker-compose-v2
		[[ $docker_pkg != docker-ce ]] || compose=docker-compose-plugin
	fi
	if ((${#missing[@]})); then
		act "refresh the package lists (apt-get update)" apt_get update
	fi
	if [[ -n $compose ]]; then
		if available "$compose"; then
			missing+=("$compose")
		else
			log "no $compose package in this release's repositories: skipping Compose (n8n hosts do not need it)"
		fi
	fi
	if ((${#missing[@]})); then
		act "install ${missing[*]}" apt_get install -y "${missing[@]}" ||
			die 1 "apt-get could not install ${missing[*]}: see its messages above"
		((DRY_RUN)) || for p in "${missing[@]}"; do INSTALLED[$p]=1; done
	else
		log "packages: all installed"
	fi
}

apt_get() {
	DEBIAN_FRONTEND=noninteractive apt-get -q -o Dpkg::Options::=--force-confold "$@"
}

# ---------------------------------------------------------------- services

unit_enabled() {
	local state
	state=$(systemctl is-enabled "$1" 2>/dev/null) || true
	# A static unit (qemu-guest-agent: udev starts it when the VM has the
	# channel) cannot be enabled and need not be.
	[[ $state == enabled || $state == static || $state == indirect || $state == alias ]]
}

unit_active() { systemctl is-active --quiet "$1"; }

ensure_guest_agent() {
	local unit=qemu-guest-agent.service
	if [[ ! -e $ROOT$AGENT_DEVICE ]]; then
		warn "this VM has no QEMU guest agent channel ($AGENT_DEVICE): in Proxmox, VM > Options > QEMU Guest Agent > Enabled, then shut the VM down and start it again (a reboot from inside is not enough); the provisioner cannot run n8nctl here until then"
		return 0
	fi
	if ((DRY_RUN)) && ! installed qemu-guest-agent; then
		act "start $unit"
		AGENT_READY=true
		return 0
	fi
	unit_enabled "$unit" || act "enable $unit" systemctl enable "$unit"
	unit_active "$unit" || act "start $unit" systemctl start "$unit" ||
		die 1 "$unit does not start: see journalctl -u $unit"
	AGENT_READY=true
	log "guest agent: $unit is running"
}

# ensure_docker_daemon JSON_CHANGED: Docker running with daemon.json in force.
ensure_docker_daemon() {
	local changed=$1 unit=docker.service
	if ((DRY_RUN)) && ! installed docker.io && ! installed docker-ce; then
		act "start $unit"
		return 0
	fi
	unit_enabled "$unit" || act "enable $unit" systemctl enable "$unit"
	if ! unit_active "$unit"; then
		act "start $unit" systemctl start "$unit" || die 1 "$unit does not start: see journalctl -u $unit"
	elif ((changed)); then
		# Log options apply to containers created from now on; with
		# live-restore already on, running containers survive the restart.
		act "restart $unit for the new daemon.json" systemctl restart "$unit"
	fi
	if ((!DRY_RUN)) && ! docker info --format '{{.ServerVersion}}' >/dev/null; then
		die 1 "the Docker daemon does not answer (docker info failed): see journalctl -u docker"
	fi
}

# ensure_daemon_json: our keys merged over whatever the file already has.
# Sets DAEMON_JSON_CHANGED when the file changed (or would).
ensure_daemon_json() {
	local path ours=$TEMPLATES/daemon.json merged=$WORK/daemon.json
	path=$ROOT$DAEMON_JSON
	DAEMON_JSON_CHANGED=0
	if [[ -f $path ]]; then
		if ! command -v jq >/dev/null; then
			# Only a dry run on a host without jq gets here: the real run
			# installed it.
			act "merge log rotation and live-restore into $DAEMON_JSON"
			DAEMON_JSON_CHANGED=1
			return 0
		fi
		jq -e 'type == "object"' "$path" >/dev/null 2>&1 ||
			die 1 "$DAEMON_JSON is not a JSON object: fix or remove it, then run again"
		jq -s '.[0] * .[1]' "$path" "$ours" >"$merged"
		if [[ $(jq -S . "$path") == "$(jq -S . "$merged")" ]]; then
			log "docker: $DAEMON_JSON already has log rotation and live-restore"
			fix_meta "$DAEMON_JSON" 644 "$OWNER"
			return 0
		fi
	else
		cp -- "$ours" "$merged"
	fi
	ensure_dir /etc/docker 755 "$OWNER"
	put_file "$DAEMON_JSON" 644 "$OWNER" "$merged"
	DAEMON_JSON_CHANGED=1
}

# ---------------------------------------------------------------- docker

docker_ready() {
	command -v docker >/dev/null && docker info --format '{{.ServerVersion}}' >/dev/null 2>&1
}

ensure_network() {
	local icc
	if ! icc=$(docker network inspect --format '{{index .Options "com.docker.network.bridge.enable_icc"}}' "$NETWORK" 2>/dev/null); then
		act "create the Docker network $NETWORK (no traffic between its containers)" \
			quiet docker network create --driver bridge -o com.docker.network.bridge.enable_icc=false \
			-o com.docker.network.bridge.name=$BRIDGE_NAME "$NETWORK"
		return 0
	fi
	if [[ $icc != false ]]; then
		warn "the Docker network $NETWORK lets its containers talk to each other: one customer's n8n can reach another's port 5678 directly, past Traefik and the owner-setup guard. Recreate it with -o com.docker.network.bridge.enable_icc=false (all containers detached first)"
	else
		log "network: $NETWORK exists, inter-container traffic off"
	fi
}

# egress_conf: the egress policy's settings (n8n-egress reads them).
egress_conf() {
	local resolvers=("${RESOLVERS[@]}") ns
	if ((${#resolvers[@]} == 0)) && [[ -r $ROOT/etc/resolv.conf ]]; then
		# systemd-resolved's stub (127.0.0.53) is the host's own: not a tenant's.
		while read -r _ ns _; do
			[[ -n $ns && $ns != 127.* && $ns != ::1 ]] && resolvers+=("$ns")
		done < <(grep -E '^nameserver[[:space:]]' "$ROOT/etc/resolv.conf" || true)
	fi
	printf '%s\n' "# The tenants' egress policy, read by $EGRESS_BIN. Written by" \
		"# bootstrap-host.sh (n8n-provisioner): rerun it with --allow-egress and" \
		"# --resolver to change these." \
		"NETWORK=$NETWORK" "RESOLVERS=\"${resolvers[*]}\"" "ALLOW=\"${ALLOW_EGRESS[*]}\"" 'HOST_PORTS="80 443"'
}

# ensure_egress: install the egress policy's script, settings and unit, and
# (re)apply the policy when any of them changed or the installed rules are not
# the policy (someone flushed or edited them).
ensure_egress() {
	local before=$CHANGES unit=n8n-egress.service drift
	ensure_dir /etc/systemd/system 755 "$OWNER"
	put_file "$EGRESS_BIN" 755 "$OWNER" "$TEMPLATES/n8n-egress"
	put_file "$EGRESS_CONF" 644 "$OWNER" "$WORK/egress.conf"
	put_file "$EGRESS_UNIT" 644 "$OWNER" "$WORK/n8n-egress.service"
	((DRY_RUN)) && return 0
	if ((CHANGES > before)); then
		act "reload systemd for $unit" systemctl daemon-reload
	fi
	unit_enabled "$unit" || act "enable $unit" systemctl enable "$unit"
	if ((CHANGES > before)); then
		act "apply the egress policy" systemctl restart "$unit" || die 1 "$unit failed: see journalctl -u $unit"
	elif ! drift=$(N8N_EGRESS_CONF=$ROOT$EGRESS_CONF "$ROOT$EGRESS_BIN" check 2>&1); then
		act "apply the egress policy again (${drift//$'\n'/; })" systemctl restart "$unit" ||
			die 1 "$unit failed: see journalctl -u $unit"
	else
		log "egress: the tenants' policy is in place"
	fi
}

# traefik_args: the `docker run` arguments of the Traefik container (without
# the image), one per line.
traefik_args() {
	printf '%s\n' \
		--name "$TRAEFIK" \
		--restart unless-stopped \
		--network host \
		--read-only --tmpfs /tmp \
		--cap-drop ALL --cap-add NET_BIND_SERVICE \
		--security-opt no-new-privileges:true \
		-e "CLOUDFLARE_DNS_API_TOKEN_FILE=/run/secrets/$TOKEN_NAME" \
		-v "$ROOT$TRAEFIK_DIR:/etc/traefik:ro" \
		-v "$ROOT$SECRETS_DIR:/run/secrets:ro" \
		-v "$ROOT$TRAEFIK_STATE:/var/lib/traefik" \
		-v "$ROOT$DOCKER_SOCK:/var/run/docker.sock:ro"
}

# ensure_traefik HASH: a running Traefik container whose label says it was
# created from configuration HASH. Anything Traefik reads at start (image,
# flags, static and dynamic configuration, token) is in HASH: a change
# recreates the container, no change leaves it alone.
ensure_traefik() {
	local hash=$1 line label state args=()
	mapfile -t args < <(traefik_args)
	args+=(-l "$CONFIG_LABEL=$hash" "$TRAEFIK_IMAGE")
	line=$(docker ps -a --filter "name=^/?$TRAEFIK\$" --format "{{.Label \"$CONFIG_LABEL\"}} {{.State}}")
	label=${line%% *} state=${line##* }
	if [[ -z $line ]]; then
		act "pull $TRAEFIK_IMAGE" quiet docker pull "$TRAEFIK_IMAGE"
		act "create the $TRAEFIK container ($TRAEFIK_IMAGE)" quiet docker run -d "${args[@]}" ||
			die 1 "docker run of $TRAEFIK failed: see its message above"
	elif [[ $label != "$hash" ]]; then
		act "pull $TRAEFIK_IMAGE" quiet docker pull "$TRAEFIK_IMAGE"
		act "remove the $TRAEFIK container: its configuration changed" quiet docker rm -f "$TRAEFIK"
		act "create the $TRAEFIK container ($TRAEFIK_IMAGE)" quiet docker run -d "${args[@]}" ||
			die 1 "docker run of $TRAEFIK failed: see its message above"
	elif [[ $state != running ]]; then
		act "start the $TRAEFIK container (it was $state)" quiet docker start "$TRAEFIK"
	else
		log "traefik: running, configuration unchanged"
	fi
}

# ---------------------------------------------------------------- n8nctl

# fetch_n8nctl DEST: the agent's source into DEST, checked.
fetch_n8nctl() {
	local dest=$1 sum
	if [[ $N8NCTL_SRC == https://* ]]; then
		log "downloading n8nctl from $N8NCTL_SRC"
		curl -fsSL --proto '=https' --tlsv1.2 --retry 3 -o "$dest" -- "$N8NCTL_SRC" ||
			die 1 "could not download n8nctl from $N8NCTL_SRC"
		[[ -n $N8NCTL_SHA256 ]] || warn "n8nctl came from a URL without --n8nctl-sha256: only TLS vouches for it"
	else
		cp -- "$N8NCTL_SRC" "$dest"
	fi
	sum=$(sha256sum <"$dest")
	sum=${sum%% *}
	if [[ -n $N8NCTL_SHA256 && $sum != "$N8NCTL_SHA256" ]]; then
		die 1 "n8nctl's SHA-256 is $sum, not the expected $N8NCTL_SHA256: not installing it"
	fi
	if [[ $(head -c 2 "$dest") != '#!' ]] || ! bash -n "$dest" 2>/dev/null; then
		die 1 "$N8NCTL_SRC is not a bash script (a download error page?): not installing it"
	fi
	log "n8nctl: sha256 $sum"
}

# ---------------------------------------------------------------- main

summary() {
	local acme=production ips agent="NOT READY: see the warning below"
	((ACME_STAGING)) && acme="STAGING (browsers will not trust it)"
	if $AGENT_READY; then
		agent=running
		((!DRY_RUN)) || agent="running once this runs for real"
	fi
	ips=$(hostname -I 2>/dev/null || true)
	cat <<EOF

$PROG: summary
  Traefik      $TRAEFIK_IMAGE on :80 (redirect) and :443, Docker network "$NETWORK"
  egress       instances reach the internet and DNS only; allowed besides: ${ALLOW_EGRESS[*]:-nothing private}
  certificate  *.$BASE_DOMAIN from Let's Encrypt $acme, Cloudflare DNS-01, resolver "$RESOLVER"
  host agent   $AGENT_BIN (settings in $AGENT_ENV)
  data         $DATA_ROOT, backups in $BACKUP_DIR
  guest agent  $agent
  addresses    ${ips:-unknown}

Next steps (docs/hosts.md has the details):
  1. Wait for the wildcard certificate (a minute or two), then check it:
       docker logs $TRAEFIK 2>&1 | grep -i -e acme -e error
       openssl s_client -connect 127.0.0.1:443 -servername probe.$BASE_DOMAIN </dev/null 2>/dev/null | openssl x509 -noout -subject -issuer
     The subject must be CN=*.$BASE_DOMAIN; "TRAEFIK DEFAULT CERT" means not yet (or a token problem).
  2. On Proxmox, give the provisioner's API token exactly this on /vms/<vmid> of this VM:
       PVE 9: pveum role add N8nProvisioner --privs "VM.Audit VM.GuestAgent.Audit VM.GuestAgent.Unrestricted"
       PVE 8: pveum role add N8nProvisioner --privs "VM.Audit VM.Monitor"
       pveum acl modify /vms/<vmid> --roles N8nProvisioner --users n8n-provisioner@pve
       pveum acl modify /vms/<vmid> --roles N8nProvisioner --tokens 'n8n-provisioner@pve!provisioner'
     (guest-agent exec is VM.GuestAgent.Unrestricted on PVE 9, VM.Monitor on PVE 8: root in this VM).
  3. Register the host with the provisioner: POST /v1/hosts with the admin API key:
       curl -sS -H "Authorization: Bearer \$ADMIN_KEY" -H 'Content-Type: application/json' \\
         -d '{"name":"$(hostname -s 2>/dev/null || echo host1)","node":"<proxmox node>","vmid":<vmid>,"public_ip":"<public IPv4>","ingress_url":"https://<address the provisioner reaches>","max_instances":20}' \\
         https://<provisioner>/v1/hosts
     public_ip is what the instances' DNS records point at; ingress_url must be https:// on
     port 443 of this VM as the provisioner reaches it (the certificate is checked against
     the instance's name, not this address).
EOF
	if ((${#WARNINGS[@]})); then
		printf '\nWarnings:\n'
		printf '  - %s\n' "${WARNINGS[@]}"
	fi
}

main() {
	parse_args "$@"
	check_settings
	[[ $(id -u) == 0 ]] || die 1 "must run as root (sudo $0 ...)"
	check_os
	check_data_root
	check_token
	WORK=$(mktemp -d)
	((DRY_RUN)) && log "dry run: nothing will be changed"

	local acme_ca=$ACME_PRODUCTION acme_storage=/var/lib/traefik/acme.json
	if ((ACME_STAGING)); then
		acme_ca=$ACME_STAGING_CA acme_storage=/var/lib/traefik/acme-staging.json
	fi
	render traefik.yml "NETWORK=$NETWORK" "RESOLVER=$RESOLVER" "ACME_EMAIL=$ACME_EMAIL" \
		"ACME_CA_SERVER=$acme_ca" "ACME_STORAGE=$acme_storage" >"$WORK/traefik.yml"
	render tls.yml "RESOLVER=$RESOLVER" "BASE_DOMAIN=$BASE_DOMAIN" >"$WORK/tls.yml"
	render n8nctl-wrapper "AGENT_ENV=$ROOT$AGENT_ENV" "AGENT_REAL=$ROOT$AGENT_REAL" >"$WORK/wrapper"
	render n8nctl.env "AGENT_BIN=$AGENT_BIN" "DATA_ROOT=$ROOT$DATA_ROOT" \
		"BACKUP_DIR=$ROOT$BACKUP_DIR" "NETWORK=$NETWORK" "EGRESS_BIN=$ROOT$EGRESS_BIN" >"$WORK/n8nctl.env"
	render n8n-egress.service "EGRESS_BIN=$EGRESS_BIN" >"$WORK/n8n-egress.service"
	egress_conf >"$WORK/egress.conf"
	fetch_n8nctl "$WORK/n8nctl"

	ensure_packages
	ensure_guest_agent
	ensure_daemon_json
	ensure_docker_daemon "$DAEMON_JSON_CHANGED"

	ensure_dir "$CONF_DIR" 755 "$OWNER"
	ensure_dir "$SECRETS_DIR" 700 "$OWNER"
	put_file "$TOKEN_FILE" 600 "$OWNER" "$TOKEN_SRC"
	ensure_dir "$TRAEFIK_DIR" 755 "$OWNER"
	ensure_dir "$TRAEFIK_DIR/dynamic" 755 "$OWNER"
	put_file "$TRAEFIK_DIR/traefik.yml" 644 "$OWNER" "$WORK/traefik.yml"
	put_file "$TRAEFIK_DIR/dynamic/tls.yml" 644 "$OWNER" "$WORK/tls.yml"
	# Traefik refuses an acme.json that others can read; it fills it itself.
	ensure_dir "$TRAEFIK_STATE" 700 "$OWNER"
	local acme=$TRAEFIK_STATE/${acme_storage##*/}
	[[ -f $ROOT$acme ]] || act "create $acme (mode 600)" install -m 600 /dev/null "$ROOT$acme"
	fix_meta "$acme" 600 "$OWNER"

	ensure_dir "$AGENT_HOME/libexec" 755 "$OWNER"
	ensure_dir "$AGENT_HOME/bin" 755 "$OWNER"
	put_file "$AGENT_REAL" 755 "$OWNER" "$WORK/n8nctl"
	put_file "$AGENT_ENV" 644 "$OWNER" "$WORK/n8nctl.env"
	put_file "$AGENT_BIN" 755 "$OWNER" "$WORK/wrapper"
	ensure_dir "$DATA_ROOT" 700 "$OWNER"
	ensure_dir "$BACKUP_DIR" 700 "$OWNER"

	if docker_ready; then
		ensure_network
		local hash
		hash=$({
			printf '%s\n' "$TRAEFIK_IMAGE"
			traefik_args
			cat -- "$WORK/traefik.yml" "$WORK/tls.yml" "$TOKEN_SRC"
		} | sha256sum)
		ensure_traefik "sha256:${hash%% *}"
		ensure_egress
	elif ((DRY_RUN)); then
		act "create the Docker network $NETWORK (no traffic between its containers)"
		act "create the $TRAEFIK container ($TRAEFIK_IMAGE)"
	else
		die 1 "docker is not usable after installing it"
	fi

	summary
	if ((DRY_RUN)); then
		log "dry run: $CHANGES change(s) would be made"
	elif ((CHANGES)); then
		log "done: $CHANGES change(s) made"
	else
		log "nothing to change: this host is already bootstrapped as asked"
	fi
}

main "$@"
