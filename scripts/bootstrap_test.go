// This file tests scripts/bootstrap-host.sh end to end: the real script runs
// as a process against a temporary BOOTSTRAP_ROOT, with fake host commands
// (bootstrapFakeCommands) first on PATH. The fakes keep the host's state in
// files (installed packages, systemd units, file owners, Docker networks and
// containers), so a second run sees what the first one did, and they log
// every call, so a test can say which commands a run issued.

package scripts_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"gopkg.in/yaml.v3"
)

// bootstrapFakeCommands stands in for the host commands bootstrap-host.sh
// runs; it is installed once per command name and acts on ${0##*/}.
//
// Covers, with the real tools' output shapes and exit codes:
//
//	id -u                         $FAKE_UID (default 0)
//	dpkg-query -W -f=FMT PKG...   "PKG install ok installed" per installed PKG;
//	                              exit 1 if any is not (FMT must be the script's)
//	apt-cache show [..] PKG       exit 100 for a package not in $FAKE_APT_AVAILABLE
//	apt-get [-q -y -o X] update|install PKG...
//	                              refuses to run without DEBIAN_FRONTEND=noninteractive
//	                              (a real one could stop at a prompt) and to install
//	                              before an update (a fresh VM's lists are empty);
//	                              installing is all or nothing, like apt. docker.io and
//	                              docker-ce enable and start docker.service and create
//	                              the socket; qemu-guest-agent is a static unit, active
//	                              only when the VM has the guest agent channel.
//	systemctl is-enabled|is-active [--quiet]|enable|start|restart|stop UNIT, daemon-reload
//	                              starting qemu-guest-agent without the channel fails;
//	                              starting n8n-egress.service runs its ExecStart (the
//	                              installed n8n-egress, against the fake iptables)
//	iptables|ip6tables [-w] -S|-N|-A|-I|-C CHAIN [RULE], iptables-restore|ip6tables-restore
//	                              [-w] --noflush: the filter table kept as one file per
//	                              chain; -S prints the rules as they were given
//	chown UID:GID PATH            records the owner (the test may not be root)
//	stat -c '%a %u:%g' -- PATH    the real mode, the recorded owner; other forms run stat
//	curl ... -o DEST URL          copies $FAKE_CURL_SRC; FAKE_CURL_FAIL=1 is a 404
//	docker info|ps -a --filter name=RE --format F|pull|run -d|rm -f|start|stop
//	       network inspect --format F|network create
//	                              only while docker.service is active; --format takes
//	                              only the templates the script uses; run knows the
//	                              flags the script uses and fails on others (exit 125),
//	                              and, stricter than docker, on a missing bind source
//	                              (docker would silently create an empty directory).
const bootstrapFakeCommands = `#!/usr/bin/env bash
set -euo pipefail
: "${FAKE_STATE:?FAKE_STATE must be set}"
S=$FAKE_STATE
me=${0##*/}
{
	printf '%q' "$me"
	for a in "$@"; do printf ' %q' "$a"; done
	printf '\n'
} >>"$S/calls.log"

unit_file() { if [[ $1 == *.* ]]; then echo "$S/units/$1"; else echo "$S/units/$1.service"; fi; }
unit_set() { printf '%s %s\n' "$2" "$3" >"$(unit_file "$1")"; }
available() { [[ " ${FAKE_APT_AVAILABLE:-ca-certificates curl jq age qemu-guest-agent docker.io docker-compose-v2} " == *" $1 "* ]]; }
agent_channel() { [[ -e ${FAKE_ROOT:-/}/dev/virtio-ports/org.qemu.guest_agent.0 ]]; }

fake_apt_get() {
	[[ ${DEBIAN_FRONTEND:-} == noninteractive ]] || {
		echo "fake apt-get: DEBIAN_FRONTEND=noninteractive is not set: a real apt-get may stop at a prompt" >&2
		exit 1
	}
	local sub="" pkgs=() p
	while (($#)); do
		case $1 in
		-o) shift 2 ;;
		-*) shift ;;
		*) if [[ -z $sub ]]; then sub=$1; else pkgs+=("$1"); fi; shift ;;
		esac
	done
	case $sub in
	update) touch "$S/apt-updated" ;;
	install)
		for p in "${pkgs[@]}"; do
			if [[ ! -f $S/apt-updated ]] || ! available "$p"; then
				printf 'E: Unable to locate package %s\n' "$p" >&2
				exit 100
			fi
		done
		for p in "${pkgs[@]}"; do
			touch "$S/dpkg/$p"
			case $p in
			docker.io | docker-ce)
				unit_set docker enabled active
				mkdir -p "${FAKE_ROOT:-/}/var/run"
				touch "${FAKE_ROOT:-/}/var/run/docker.sock"
				;;
			qemu-guest-agent)
				if agent_channel; then unit_set qemu-guest-agent static active; else unit_set qemu-guest-agent static inactive; fi
				;;
			esac
		done
		;;
	*) echo "fake apt-get: unsupported: $sub" >&2; exit 100 ;;
	esac
}

fake_systemctl() {
	local verb=$1 quiet=0 unit f en act
	shift
	[[ ${1:-} == --quiet || ${1:-} == --now ]] && { [[ $1 == --quiet ]] && quiet=1; shift; }
	if [[ $verb == daemon-reload ]]; then # unit files written to /etc/systemd/system become known
		for f in "${FAKE_ROOT:-/}"/etc/systemd/system/*.service; do
			[[ -f $f && ! -f $S/units/${f##*/} ]] && unit_set "${f##*/}" disabled inactive
		done
		return 0
	fi
	unit=$1
	f=$(unit_file "$unit")
	[[ $unit == *.* ]] || unit=$unit.service
	en=missing act=inactive
	[[ -f $f ]] && read -r en act <"$f"
	case $verb in
	is-enabled)
		[[ $en != missing ]] || { echo "Failed to get unit file state for $unit: No such file or directory" >&2; exit 1; }
		echo "$en"
		[[ $en == enabled || $en == static ]] ;;
	is-active)
		((quiet)) || echo "$act"
		[[ $act == active ]] || exit 3 ;;
	enable)
		[[ $en != missing ]] || { echo "Failed to enable unit: Unit file $unit does not exist." >&2; exit 1; }
		[[ $en != static ]] || echo "The unit files have no installation config (WantedBy=, RequiredBy=, ...)." >&2
		[[ $en == static ]] || en=enabled
		unit_set "$unit" "$en" "$act" ;;
	start | restart)
		[[ $en != missing ]] || { echo "Failed to $verb $unit: Unit $unit not found." >&2; exit 5; }
		if [[ $unit == qemu-guest-agent.service ]] && ! agent_channel; then
			echo "A dependency job for $unit failed. See 'journalctl -xe' for details." >&2
			exit 1
		fi
		if [[ $unit == n8n-egress.service ]]; then
			N8N_EGRESS_CONF=$FAKE_ROOT/etc/n8n-provisioner/egress.conf "$FAKE_ROOT/opt/n8n-provisioner/libexec/n8n-egress" apply >/dev/null ||
				{ echo "Job for $unit failed because the control process exited with error code." >&2; exit 1; }
		fi
		unit_set "$unit" "$en" active ;;
	stop) unit_set "$unit" "$en" inactive ;;
	*) echo "fake systemctl: unsupported: $verb" >&2; exit 1 ;;
	esac
}

fake_stat() {
	if (($# == 4)) && [[ $1 == -c && $2 == '%a %u:%g' && $3 == -- ]]; then
		local real owner="" o p
		real=$("$FAKE_REAL_STAT" -c '%a %u:%g' -- "$4")
		if [[ -f $S/owners ]]; then
			while IFS=$'\t' read -r o p; do [[ $p != "$4" ]] || owner=$o; done <"$S/owners"
		fi
		echo "${real%% *} ${owner:-${real#* }}"
		return
	fi
	exec "$FAKE_REAL_STAT" "$@"
}

fake_chown() {
	[[ ${2:-} == -- ]] && set -- "$1" "${@:3}"
	[[ $1 =~ ^[0-9]+:[0-9]+$ ]] || { echo "fake chown: want UID:GID, got $1" >&2; exit 1; }
	[[ -e $2 ]] || { echo "chown: cannot access '$2': No such file or directory" >&2; exit 1; }
	printf '%s\t%s\n' "$1" "$2" >>"$S/owners"
}

fake_curl() {
	local dest="" url=""
	while (($#)); do
		case $1 in
		-o) dest=$2; shift 2 ;;
		--proto | --retry) shift 2 ;;
		--) url=$2; shift 2 ;;
		-*) shift ;;
		*) url=$1; shift ;;
		esac
	done
	# The script passes --proto =https: anything else would be refused.
	[[ $url == https://* ]] || { echo "curl: (1) Protocol \"${url%%:*}\" disabled" >&2; exit 1; }
	[[ ${FAKE_CURL_FAIL:-} != 1 ]] || { echo "curl: (22) The requested URL returned error: 404" >&2; exit 22; }
	cp "$FAKE_CURL_SRC" "$dest"
}

D=$S/docker
docker_id() { printf '%s' "$1$RANDOM" | sha256sum | cut -c1-64; }

docker_run() {
	local name="" restart=no args=("$@") labels=() image a v
	while (($#)); do
		a=$1
		case $a in
		-d | --detach | --read-only) shift; continue ;;
		-*) ;;
		*) break ;;
		esac
		(($# >= 2)) || { printf 'flag needs an argument: %s\n' "$a" >&2; exit 125; }
		v=$2
		shift 2
		case $a in
		--name) name=$v ;;
		--restart) restart=$v ;;
		--network | --tmpfs | --cap-drop | --cap-add | --security-opt | -e | --env) ;;
		-l | --label) labels+=("$v") ;;
		-v | --volume)
			[[ $v =~ ^(/[^:]*):(/[^:]*)(:(ro|rw))?$ ]] || { printf 'invalid argument "%s" for "-v, --volume" flag\n' "$v" >&2; exit 125; }
			[[ -e ${BASH_REMATCH[1]} ]] || { printf 'fake docker: bind source %s does not exist (docker would create an empty directory there)\n' "${BASH_REMATCH[1]}" >&2; exit 125; }
			;;
		*) printf "unknown flag: %s\nSee 'docker run --help'.\n" "$a" >&2; exit 125 ;;
		esac
	done
	(($#)) || { echo '"docker run" requires at least 1 argument.' >&2; exit 125; }
	image=$1
	[[ $restart =~ ^(no|always|unless-stopped|on-failure(:[0-9]+)?)$ ]] || { echo "docker: invalid restart policy format: $restart" >&2; exit 125; }
	[[ -n $name ]] || name=fake_$RANDOM
	mkdir "$D/containers/$name" 2>/dev/null || {
		printf 'docker: Error response from daemon: Conflict. The container name "/%s" is already in use.\n' "$name" >&2
		exit 125
	}
	printf '%s\n' "${args[@]}" >"$D/containers/$name/args"
	printf '%s\n' "${labels[@]}" >"$D/containers/$name/labels"
	echo "$image" >"$D/containers/$name/image"
	echo running >"$D/containers/$name/state"
	docker_id "$name"
	echo
}

fake_docker() {
	local en act
	en=missing act=inactive
	[[ -f $S/units/docker.service ]] && read -r en act <"$S/units/docker.service"
	[[ $act == active ]] || {
		echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2
		exit 1
	}
	local sub=$1
	shift
	case $sub in
	info)
		[[ $* == "--format {{.ServerVersion}}" ]] || { echo "fake docker info: unsupported $*" >&2; exit 125; }
		echo 28.2.2 ;;
	network)
		case ${1:-} in
		inspect)
			[[ $2 == --format ]] || { echo "fake docker network inspect: unsupported $*" >&2; exit 125; }
			[[ -f $D/networks/$4 ]] || { echo "Error response from daemon: network $4 not found" >&2; exit 1; }
			if [[ $3 =~ ^\{\{index\ \.Options\ \"([a-z._]+)\"\}\}$ ]]; then
				sed -n "s/^${BASH_REMATCH[1]}=//p" "$D/networks/$4"
			elif [[ $3 == '{{.Id}}' ]]; then
				printf '%s' "$4" | sha256sum | cut -c1-64
			else
				echo "fake docker network inspect: unsupported $*" >&2; exit 125
			fi ;;
		create)
			shift
			local opts=() name=""
			while (($#)); do
				case $1 in
				--driver | -d) shift 2 ;;
				-o | --opt) opts+=("$2"); shift 2 ;;
				-*) echo "unknown flag: $1" >&2; exit 125 ;;
				*) name=$1; shift ;;
				esac
			done
			[[ ! -f $D/networks/$name ]] || { echo "Error response from daemon: network with name $name already exists" >&2; exit 1; }
			printf '%s\n' "${opts[@]}" >"$D/networks/$name"
			docker_id "$name"
			echo ;;
		*) echo "fake docker network: unsupported $*" >&2; exit 125 ;;
		esac ;;
	ps)
		local re="" format="" c n
		while (($#)); do
			case $1 in
			-a) shift ;;
			--filter) re=${2#name=}; shift 2 ;;
			--format) format=$2; shift 2 ;;
			*) echo "fake docker ps: unsupported $1" >&2; exit 125 ;;
			esac
		done
		[[ $format =~ ^\{\{\.Label\ \"([^\"]+)\"\}\}\ \{\{\.State\}\}$ ]] || { echo "fake docker ps: unsupported format $format" >&2; exit 125; }
		local key=${BASH_REMATCH[1]}
		for c in "$D"/containers/*/; do
			[[ -d $c ]] || continue
			n=$(basename "$c")
			[[ /$n =~ $re ]] || continue
			printf '%s %s\n' "$(sed -n "s/^$key=//p" "$c/labels" | tail -n 1)" "$(cat "$c/state")"
		done ;;
	pull)
		echo "$1" >>"$D/pulled"
		echo "Status: Downloaded newer image for $1" ;;
	run) docker_run "$@" ;;
	rm)
		[[ $1 == -f ]] && shift
		[[ -d $D/containers/$1 ]] || { echo "Error response from daemon: No such container: $1" >&2; exit 1; }
		rm -rf "${D:?}/containers/$1"
		echo "$1" ;;
	start | stop)
		[[ -d $D/containers/$1 ]] || { echo "Error response from daemon: No such container: $1" >&2; exit 1; }
		if [[ $sub == start ]]; then echo running >"$D/containers/$1/state"; else echo exited >"$D/containers/$1/state"; fi
		echo "$1" ;;
	*) echo "fake docker: unsupported $sub" >&2; exit 125 ;;
	esac
}

# fake_iptables FAMILY ARGS...: the filter table, a file per chain under $S/iptables/FAMILY.
fake_iptables() {
	local dir=$S/iptables/$1 op chain rule
	shift
	mkdir -p "$dir"
	[[ -f $dir/INPUT ]] || : >"$dir/INPUT"
	[[ -f $dir/FORWARD ]] || : >"$dir/FORWARD"
	[[ ${1:-} != -w ]] || shift
	op=$1 chain=$2
	shift 2
	rule="$*"
	case $op in
	-S)
		[[ -f $dir/$chain ]] || { echo "iptables: No chain/target/match by that name." >&2; exit 1; }
		if [[ $chain == INPUT || $chain == FORWARD ]]; then echo "-P $chain ACCEPT"; else echo "-N $chain"; fi
		cat "$dir/$chain" ;;
	-N)
		[[ ! -f $dir/$chain ]] || { echo "iptables: Chain already exists." >&2; exit 1; }
		: >"$dir/$chain" ;;
	-A) [[ -f $dir/$chain ]] && echo "-A $chain $rule" >>"$dir/$chain" ;;
	-I)
		[[ -f $dir/$chain ]] || exit 1
		[[ $1 == 1 ]] || { echo "fake iptables: only -I CHAIN 1" >&2; exit 2; }
		shift
		{ echo "-A $chain $*"; cat "$dir/$chain"; } >"$dir/$chain.new" && mv "$dir/$chain.new" "$dir/$chain" ;;
	-C) [[ -f $dir/$chain ]] && grep -qxF -- "-A $chain $rule" "$dir/$chain" ;;
	*) echo "fake iptables: unsupported $op" >&2; exit 2 ;;
	esac
}

# fake_iptables_restore FAMILY [-w] --noflush: a declared chain is emptied, then filled.
fake_iptables_restore() {
	local dir=$S/iptables/$1 line
	mkdir -p "$dir"
	[[ " ${*:2} " == *" --noflush "* ]] || { echo "fake iptables-restore: only --noflush" >&2; exit 2; }
	while IFS= read -r line; do
		case $line in
		'*filter' | COMMIT) ;;
		:*) line=${line#:}; : >"$dir/${line%% *}" ;;
		-A\ *) line=${line#-A }; [[ -f $dir/${line%% *} ]] && echo "-A $line" >>"$dir/${line%% *}" ;;
		*) echo "fake iptables-restore: unsupported line $line" >&2; exit 2 ;;
		esac
	done
}

case $me in
iptables) fake_iptables 4 "$@" ;;
ip6tables) fake_iptables 6 "$@" ;;
iptables-restore) fake_iptables_restore 4 "$@" ;;
ip6tables-restore) fake_iptables_restore 6 "$@" ;;
id)
	[[ ${1:-} == -u ]] || { echo "fake id: only -u" >&2; exit 2; }
	echo "${FAKE_UID:-0}" ;;
dpkg-query)
	# shellcheck disable=SC2016 # dpkg-query's own ${fields}
	[[ $1 == -W && $2 == '-f=${Package} ${Status}\n' ]] || { echo "fake dpkg-query: unsupported $*" >&2; exit 2; }
	rc=0
	for pkg in "${@:3}"; do
		if [[ -f $S/dpkg/$pkg ]]; then printf '%s install ok installed\n' "$pkg"; else echo "dpkg-query: no packages found matching $pkg" >&2; rc=1; fi
	done
	exit "$rc" ;;
apt-cache)
	pkg=${!#}
	if available "$pkg"; then printf 'Package: %s\n' "$pkg"; else printf 'N: Unable to locate package %s\nE: No packages found\n' "$pkg" >&2; exit 100; fi ;;
apt-get) fake_apt_get "$@" ;;
systemctl) fake_systemctl "$@" ;;
stat) fake_stat "$@" ;;
chown) fake_chown "$@" ;;
curl) fake_curl "$@" ;;
docker) fake_docker "$@" ;;
*) echo "fake: unknown command $me" >&2; exit 127 ;;
esac
`

var bootstrapFakeNames = []string{"id", "dpkg-query", "apt-cache", "apt-get", "systemctl", "stat", "chown", "curl", "docker",
	"iptables", "ip6tables", "iptables-restore", "ip6tables-restore"}

const (
	// An htpasswd line as the provisioner sends it for the owner-setup guard.
	bootstrapSetupUsers = "provisioner:$2y$05$Zm9vYmFyYmF6cXV4cXV1eO3bV5zK6GZ3b1hJ7WlUjW0p2sQ1mYt8e"
	bootstrapDomain     = "n8n.example.test"
	bootstrapEmail      = "ops@example.test"
	bootstrapToken      = "cfTOKEN-0123456789-abcdefghijklmnopqrstuvw"
)

type bootstrapHost struct {
	t                            *testing.T
	dir, root, state, tokenFile  string
	script, n8nctl               string
	env                          []string
	callsSeen                    int
	outputs                      bytes.Buffer // all the script printed, for the secret check
	containerDir, networkOptions string
}

type bootstrapResult struct {
	code           int
	stdout, stderr string
	calls          []string // the fake commands this run called, one shell-quoted line each
}

// bootstrapSetup prepares a fresh Ubuntu 24.04 VM with the guest agent
// channel, a token file and the fakes; env is added last.
func bootstrapSetup(t *testing.T, env ...string) *bootstrapHost {
	t.Helper()
	dir := t.TempDir()
	script, err := filepath.Abs("bootstrap-host.sh")
	if err != nil {
		t.Fatal(err)
	}
	n8nctl, err := filepath.Abs("n8nctl")
	if err != nil {
		t.Fatal(err)
	}
	realStat, err := exec.LookPath("stat")
	if err != nil {
		t.Fatal(err)
	}
	h := &bootstrapHost{
		t: t, dir: dir, script: script, n8nctl: n8nctl,
		root:      filepath.Join(dir, "root"),
		state:     filepath.Join(dir, "state"),
		tokenFile: filepath.Join(dir, "cf-token"),
	}
	h.containerDir = filepath.Join(h.state, "docker", "containers")
	h.networkOptions = filepath.Join(h.state, "docker", "networks")
	bin := filepath.Join(dir, "bin")
	for _, d := range []string{bin, filepath.Join(h.state, "dpkg"), filepath.Join(h.state, "units"), h.containerDir,
		h.networkOptions, filepath.Join(h.root, "etc"), filepath.Join(h.root, "dev", "virtio-ports")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fake := filepath.Join(bin, "fake")
	bootstrapWrite(t, fake, bootstrapFakeCommands, 0o755)
	for _, name := range bootstrapFakeNames {
		if err := os.Symlink(fake, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	h.writeRoot("etc/os-release", "NAME=\"Ubuntu\"\nID=ubuntu\nVERSION_ID=\"24.04\"\n", 0o644)
	h.writeRoot("dev/virtio-ports/org.qemu.guest_agent.0", "", 0o600)
	bootstrapWrite(t, h.tokenFile, bootstrapToken+"\n", 0o600)

	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "BOOTSTRAP_"), strings.HasPrefix(k, "FAKE_"), strings.HasPrefix(k, "N8N"),
			slices.Contains([]string{"BASE_DOMAIN", "ACME_EMAIL", "ACME_STAGING", "CLOUDFLARE_TOKEN_FILE",
				"TRAEFIK_IMAGE", "DOCKER", "PATH", "DEBIAN_FRONTEND"}, k):
			continue
		}
		h.env = append(h.env, kv)
	}
	h.env = append(h.env,
		"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"BOOTSTRAP_ROOT="+h.root,
		"FAKE_STATE="+h.state,
		"FAKE_ROOT="+h.root,
		"FAKE_REAL_STAT="+realStat,
	)
	h.env = append(h.env, env...)
	return h
}

func bootstrapWrite(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func (h *bootstrapHost) writeRoot(rel, content string, mode os.FileMode) {
	h.t.Helper()
	bootstrapWrite(h.t, filepath.Join(h.root, rel), content, mode)
}

func (h *bootstrapHost) readRoot(rel string) string {
	h.t.Helper()
	b, err := os.ReadFile(filepath.Join(h.root, rel))
	if err != nil {
		h.t.Fatal(err)
	}
	return string(b)
}

// args are the flags every run of a test passes unless it says otherwise.
func (h *bootstrapHost) args(extra ...string) []string {
	return append([]string{"--base-domain", bootstrapDomain, "--acme-email", bootstrapEmail,
		"--cloudflare-token-file", h.tokenFile, "--n8nctl", h.n8nctl}, extra...)
}

// run runs the script with args and env (added to the host's) and returns
// how it ended and which fake commands it called.
func (h *bootstrapHost) run(args []string, env ...string) bootstrapResult {
	h.t.Helper()
	cmd := exec.Command(h.script, args...)
	cmd.Dir = h.dir
	cmd.Env = append(slices.Clone(h.env), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := bootstrapResult{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		res.code = exitErr.ExitCode()
	case err != nil:
		h.t.Fatalf("running bootstrap-host.sh: %v", err)
	}
	h.outputs.WriteString(res.stdout + res.stderr)
	all := h.allCalls()
	res.calls = all[h.callsSeen:]
	h.callsSeen = len(all)
	return res
}

// mustRun runs the script and fails the test unless it exits 0.
func (h *bootstrapHost) mustRun(args []string, env ...string) bootstrapResult {
	h.t.Helper()
	res := h.run(args, env...)
	if res.code != 0 {
		h.t.Fatalf("bootstrap-host.sh %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, res.code, res.stdout, res.stderr)
	}
	return res
}

func (h *bootstrapHost) allCalls() []string {
	h.t.Helper()
	b, err := os.ReadFile(filepath.Join(h.state, "calls.log"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// bootstrapMutating reports whether a logged fake call changes the host.
func bootstrapMutating(call string) bool {
	f := strings.Fields(call)
	if len(f) < 2 {
		return false
	}
	switch f[0] {
	case "apt-get", "chown":
		return true
	case "systemctl":
		return slices.Contains([]string{"enable", "start", "restart", "stop", "daemon-reload"}, f[1])
	case "iptables", "ip6tables", "iptables-restore", "ip6tables-restore":
		return !slices.Contains(f, "-S") && !slices.Contains(f, "-C")
	case "docker":
		return slices.Contains([]string{"run", "rm", "start", "stop", "pull"}, f[1]) ||
			(f[1] == "network" && len(f) > 2 && f[2] == "create")
	}
	return false
}

func bootstrapCallsMatching(calls []string, prefix string) []string {
	var out []string
	for _, c := range calls {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

// snapshot describes every file and directory under the root: mode, owner as
// the fake chown recorded it, and a digest of the content.
func (h *bootstrapHost) snapshot() map[string]string {
	h.t.Helper()
	owners := map[string]string{}
	if b, err := os.ReadFile(filepath.Join(h.state, "owners")); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if owner, path, ok := strings.Cut(line, "\t"); ok {
				owners[path] = owner
			}
		}
	}
	snap := map[string]string{}
	err := filepath.WalkDir(h.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v owner=%s", fi.Mode(), owners[path])
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			desc += " sha256=" + hex.EncodeToString(sum[:])
		}
		snap[strings.TrimPrefix(path, h.root)] = desc
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return snap
}

// meta returns the mode and owner of a file under the root, the owner as the
// fake chown left it.
func (h *bootstrapHost) meta(rel string) (os.FileMode, string) {
	h.t.Helper()
	path := filepath.Join(h.root, rel)
	fi, err := os.Stat(path)
	if err != nil {
		h.t.Fatal(err)
	}
	owner := bootstrapOwner(fi)
	if b, err := os.ReadFile(filepath.Join(h.state, "owners")); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if o, p, ok := strings.Cut(line, "\t"); ok && p == path {
				owner = o
			}
		}
	}
	return fi.Mode().Perm(), owner
}

func (h *bootstrapHost) wantMeta(rel string, mode os.FileMode, owner string) {
	h.t.Helper()
	gotMode, gotOwner := h.meta(rel)
	if gotMode != mode || gotOwner != owner {
		h.t.Errorf("%s: mode %v owner %s, want %v %s", rel, gotMode, gotOwner, mode, owner)
	}
}

// container returns the fake Docker container's run arguments, labels and
// state; ok is false when there is none.
func (h *bootstrapHost) container(name string) (args []string, labels map[string]string, state string, ok bool) {
	h.t.Helper()
	dir := filepath.Join(h.containerDir, name)
	b, err := os.ReadFile(filepath.Join(dir, "args"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, "", false
	}
	if err != nil {
		h.t.Fatal(err)
	}
	args = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	labels = map[string]string{}
	lb, _ := os.ReadFile(filepath.Join(dir, "labels"))
	for _, l := range strings.Split(strings.TrimSpace(string(lb)), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			labels[k] = v
		}
	}
	sb, _ := os.ReadFile(filepath.Join(dir, "state"))
	return args, labels, strings.TrimSpace(string(sb)), true
}

func (h *bootstrapHost) setContainerState(name, state string) {
	h.t.Helper()
	bootstrapWrite(h.t, filepath.Join(h.containerDir, name, "state"), state+"\n", 0o644)
}

// checkSecret fails when the Cloudflare token reached any argv or output.
func (h *bootstrapHost) checkSecret() {
	h.t.Helper()
	for _, c := range h.allCalls() {
		if strings.Contains(c, bootstrapToken) {
			h.t.Errorf("the token is in a command line: %s", c)
		}
	}
	if strings.Contains(h.outputs.String(), bootstrapToken) {
		h.t.Error("the token is in the script's output")
	}
}

// bootstrapDig walks nested YAML/JSON maps.
func bootstrapDig(t *testing.T, v any, keys ...string) any {
	t.Helper()
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("at %q: %v is not a map", k, v)
		}
		if v, ok = m[k]; !ok {
			t.Fatalf("no key %q in %v", k, m)
		}
	}
	return v
}

func bootstrapYAML(t *testing.T, text string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(text), &m); err != nil {
		t.Fatalf("not YAML: %v\n%s", err, text)
	}
	return m
}

// bootstrapFlagValues returns the values that follow flag in a docker run argument list.
func bootstrapFlagValues(args []string, flag string) []string {
	var out []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			out = append(out, args[i+1])
		}
	}
	return out
}

func TestBootstrapInstallsTheHostThenChangesNothing(t *testing.T) {
	t.Parallel()
	h := bootstrapSetup(t)
	first := h.mustRun(h.args())

	// Packages: the lists refreshed first, then everything in one install.
	var aptCalls []string
	for _, c := range bootstrapCallsMatching(first.calls, "apt-get") {
		aptCalls = append(aptCalls, strings.Join(slices.DeleteFunc(strings.Fields(c), func(s string) bool {
			return strings.HasPrefix(s, "-") || strings.HasPrefix(s, "Dpkg::")
		})[1:], " "))
	}
	wantApt := []string{"update", "install ca-certificates curl jq age qemu-guest-agent docker.io docker-compose-v2"}
	if !slices.Equal(aptCalls, wantApt) {
		t.Errorf("apt-get calls %q, want %q", aptCalls, wantApt)
	}
	if got := bootstrapCallsMatching(first.calls, "systemctl start qemu-guest-agent"); len(got) != 0 {
		t.Errorf("the package's own start left the agent running; the script started it again: %q", got)
	}
	// daemon.json came after docker.io started, so Docker restarts to read it.
	if got := bootstrapCallsMatching(first.calls, "systemctl restart docker.service"); len(got) != 1 {
		t.Errorf("docker restarts for daemon.json: %q", got)
	}

	var daemon map[string]any
	if err := json.Unmarshal([]byte(h.readRoot("etc/docker/daemon.json")), &daemon); err != nil {
		t.Fatalf("daemon.json: %v", err)
	}
	if daemon["log-driver"] != "json-file" || daemon["live-restore"] != true ||
		bootstrapDig(t, daemon, "log-opts", "max-size") != "10m" || bootstrapDig(t, daemon, "log-opts", "max-file") != "5" {
		t.Errorf("daemon.json = %v", daemon)
	}

	// The token: copied byte for byte, root-only, in a root-only directory.
	if got := h.readRoot("etc/n8n-provisioner/secrets/cloudflare-dns-token"); got != bootstrapToken+"\n" {
		t.Errorf("installed token differs from the source")
	}
	h.wantMeta("etc/n8n-provisioner/secrets/cloudflare-dns-token", 0o600, "0:0")
	h.wantMeta("etc/n8n-provisioner/secrets", 0o700, "0:0")
	h.wantMeta("var/lib/n8n-provisioner/traefik", 0o700, "0:0")
	h.wantMeta("var/lib/n8n-provisioner/traefik/acme.json", 0o600, "0:0")
	if got := h.readRoot("var/lib/n8n-provisioner/traefik/acme.json"); got != "" {
		t.Errorf("acme.json starts empty for Traefik to fill, has %q", got)
	}

	static := bootstrapYAML(t, h.readRoot("etc/n8n-provisioner/traefik/traefik.yml"))
	for _, c := range []struct {
		keys []string
		want any
	}{
		{[]string{"entryPoints", "web", "address"}, ":80"},
		{[]string{"entryPoints", "web", "http", "redirections", "entryPoint", "to"}, "websecure"},
		{[]string{"entryPoints", "web", "http", "redirections", "entryPoint", "scheme"}, "https"},
		{[]string{"entryPoints", "websecure", "address"}, ":443"},
		{[]string{"providers", "docker", "exposedByDefault"}, false},
		{[]string{"providers", "docker", "network"}, "proxy"},
		{[]string{"providers", "file", "directory"}, "/etc/traefik/dynamic"},
		{[]string{"certificatesResolvers", "cloudflare", "acme", "email"}, bootstrapEmail},
		{[]string{"certificatesResolvers", "cloudflare", "acme", "caServer"}, "https://acme-v02.api.letsencrypt.org/directory"},
		{[]string{"certificatesResolvers", "cloudflare", "acme", "storage"}, "/var/lib/traefik/acme.json"},
		{[]string{"certificatesResolvers", "cloudflare", "acme", "dnsChallenge", "provider"}, "cloudflare"},
	} {
		if got := bootstrapDig(t, static, c.keys...); got != c.want {
			t.Errorf("traefik.yml %s = %v, want %v", strings.Join(c.keys, "."), got, c.want)
		}
	}
	dynamic := bootstrapYAML(t, h.readRoot("etc/n8n-provisioner/traefik/dynamic/tls.yml"))
	if got := bootstrapDig(t, dynamic, "tls", "stores", "default", "defaultGeneratedCert", "resolver"); got != "cloudflare" {
		t.Errorf("default certificate resolver = %v", got)
	}
	if got := bootstrapDig(t, dynamic, "tls", "stores", "default", "defaultGeneratedCert", "domain", "main"); got != "*."+bootstrapDomain {
		t.Errorf("default certificate domain = %v, want the wildcard", got)
	}

	// Docker: the network isolates its containers; Traefik runs on the host's
	// network with the token as a file, never as a value.
	opts, err := os.ReadFile(filepath.Join(h.networkOptions, "proxy"))
	if err != nil || !strings.Contains(string(opts), "com.docker.network.bridge.enable_icc=false") {
		t.Errorf("network proxy options %q (%v), want enable_icc=false", opts, err)
	}
	args, labels, state, ok := h.container("traefik")
	if !ok || state != "running" {
		t.Fatalf("traefik container: exists %v, state %q", ok, state)
	}
	if img := args[len(args)-1]; img != "traefik:v3.7.13" {
		t.Errorf("image %q", img)
	}
	for flag, want := range map[string]string{"--restart": "unless-stopped", "--network": "host",
		"-e": "CLOUDFLARE_DNS_API_TOKEN_FILE=/run/secrets/cloudflare-dns-token", "--cap-add": "NET_BIND_SERVICE"} {
		if got := bootstrapFlagValues(args, flag); !slices.Contains(got, want) {
			t.Errorf("docker run %s = %q, want %q", flag, got, want)
		}
	}
	wantBinds := []string{
		h.root + "/etc/n8n-provisioner/traefik:/etc/traefik:ro",
		h.root + "/etc/n8n-provisioner/secrets:/run/secrets:ro",
		h.root + "/var/lib/n8n-provisioner/traefik:/var/lib/traefik",
		h.root + "/var/run/docker.sock:/var/run/docker.sock:ro",
	}
	if got := bootstrapFlagValues(args, "-v"); !slices.Equal(got, wantBinds) {
		t.Errorf("binds %q, want %q", got, wantBinds)
	}
	if !strings.HasPrefix(labels["n8n-provisioner.config"], "sha256:") {
		t.Errorf("labels %v: no configuration hash", labels)
	}

	// The agent, its settings, and the root-only data and backup dirs.
	src, err := os.ReadFile(h.n8nctl)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.readRoot("opt/n8n-provisioner/libexec/n8nctl"); got != string(src) {
		t.Error("installed n8nctl differs from scripts/n8nctl")
	}
	h.wantMeta("opt/n8n-provisioner/libexec/n8nctl", 0o755, "0:0")
	h.wantMeta("opt/n8n-provisioner/bin/n8nctl", 0o755, "0:0")
	h.wantMeta("data/n8n", 0o700, "0:0")
	h.wantMeta("var/backups/n8n", 0o700, "0:0")
	if env := h.readRoot("etc/n8n-provisioner/n8nctl.env"); !strings.Contains(env, "N8N_DATA_ROOT="+h.root+"/data/n8n\n") ||
		!strings.Contains(env, "N8N_BACKUP_DIR="+h.root+"/var/backups/n8n\n") || !strings.Contains(env, "N8N_PROXY_NETWORK=proxy\n") {
		t.Errorf("n8nctl.env:\n%s", env)
	}

	for _, want := range []string{"POST", "/v1/hosts", "VM.GuestAgent.Unrestricted", "VM.Monitor", "/vms/<vmid>", "guest agent  running", "change(s) made"} {
		if !strings.Contains(first.stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, first.stdout)
		}
	}

	// The second run finds everything in place and touches nothing.
	before := h.snapshot()
	second := h.mustRun(h.args())
	for _, c := range second.calls {
		if bootstrapMutating(c) {
			t.Errorf("second run changed the host: %s", c)
		}
	}
	after := h.snapshot()
	for path, desc := range after {
		if before[path] != desc {
			t.Errorf("second run changed %s: %s -> %s", path, before[path], desc)
		}
	}
	if len(after) != len(before) {
		t.Errorf("second run added or removed files: %d -> %d", len(before), len(after))
	}
	if !strings.Contains(second.stdout, "nothing to change") || strings.Contains(second.stderr, "warning") {
		t.Errorf("second run should say there was nothing to change:\n%s\n%s", second.stdout, second.stderr)
	}
	h.checkSecret()
}

func TestBootstrapRecreatesTraefikOnlyWhenItsConfigurationChanges(t *testing.T) {
	t.Parallel()
	h := bootstrapSetup(t)
	h.mustRun(h.args())
	_, labels, _, _ := h.container("traefik")
	hash := labels["n8n-provisioner.config"]

	h.setContainerState("traefik", "exited")
	res := h.mustRun(h.args())
	if got := bootstrapCallsMatching(res.calls, "docker "); !slices.Contains(got, "docker start traefik") ||
		len(bootstrapCallsMatching(res.calls, "docker run")) != 0 {
		t.Errorf("a stopped Traefik is started, not recreated: %q", got)
	}

	for _, c := range []struct {
		name  string
		args  []string
		token string
		check func()
	}{
		{name: "acme email", args: h.args("--acme-email", "certs@example.test"), check: func() {
			if !strings.Contains(h.readRoot("etc/n8n-provisioner/traefik/traefik.yml"), "certs@example.test") {
				t.Error("traefik.yml keeps the old email")
			}
		}},
		{name: "base domain", args: h.args("--base-domain", "apps.example.test"), check: func() {
			if !strings.Contains(h.readRoot("etc/n8n-provisioner/traefik/dynamic/tls.yml"), `"*.apps.example.test"`) {
				t.Error("tls.yml keeps the old wildcard")
			}
		}},
		{name: "token", args: h.args(), token: "cfTOKEN-rotated-9876543210-zyxwvutsrqponm", check: func() {
			if h.readRoot("etc/n8n-provisioner/secrets/cloudflare-dns-token") != "cfTOKEN-rotated-9876543210-zyxwvutsrqponm\n" {
				t.Error("the rotated token was not installed")
			}
			// The operator's file was world-readable: the copy is not.
			h.wantMeta("etc/n8n-provisioner/secrets/cloudflare-dns-token", 0o600, "0:0")
		}},
		{name: "image", args: h.args("--traefik-image", "traefik:v3.7.12"), check: func() {
			if args, _, _, _ := h.container("traefik"); args[len(args)-1] != "traefik:v3.7.12" {
				t.Errorf("image %q", args[len(args)-1])
			}
		}},
		{name: "staging CA", args: h.args("--acme-staging"), check: func() {
			h.wantMeta("var/lib/n8n-provisioner/traefik/acme-staging.json", 0o600, "0:0")
		}},
	} {
		args := c.args
		if c.token != "" {
			bootstrapWrite(t, h.tokenFile, c.token+"\n", 0o644)
		}
		res := h.mustRun(args)
		if c.token != "" && !strings.Contains(res.stderr, "is readable by other users (mode 644)") {
			t.Errorf("no warning about the world-readable token file:\n%s", res.stderr)
		}
		want := []string{"docker rm -f traefik"}
		if got := bootstrapCallsMatching(res.calls, "docker rm"); !slices.Equal(got, want) {
			t.Errorf("%s changed: docker rm calls %q, want %q", c.name, got, want)
		}
		if got := bootstrapCallsMatching(res.calls, "docker run"); len(got) != 1 {
			t.Errorf("%s changed: docker run calls %q", c.name, got)
		}
		_, labels, state, _ := h.container("traefik")
		if labels["n8n-provisioner.config"] == hash || state != "running" {
			t.Errorf("%s changed: label %q (was %q), state %q", c.name, labels["n8n-provisioner.config"], hash, state)
		}
		hash = labels["n8n-provisioner.config"]
		c.check()
	}
	// Once in place, the same flags change nothing again.
	again := h.mustRun(h.args("--acme-staging"))
	if got := bootstrapCallsMatching(again.calls, "docker r"); len(got) != 0 || !strings.Contains(again.stdout, "nothing to change") {
		t.Errorf("a repeated run still recreates: %q\n%s", got, again.stdout)
	}
	h.checkSecret()
}

func TestBootstrapDryRunChangesNothing(t *testing.T) {
	t.Parallel()
	h := bootstrapSetup(t)
	before := h.snapshot()
	res := h.mustRun(h.args("--dry-run"))
	for _, c := range res.calls {
		if bootstrapMutating(c) {
			t.Errorf("dry run changed the host: %s", c)
		}
	}
	if after := h.snapshot(); len(after) != len(before) {
		t.Errorf("dry run wrote files: %d entries before, %d after", len(before), len(after))
	}
	for _, want := range []string{"would install ca-certificates curl jq age qemu-guest-agent docker.io docker-compose-v2",
		"would write /etc/n8n-provisioner/secrets/cloudflare-dns-token (mode 600)",
		"would create the traefik container", "change(s) would be made"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, res.stdout)
		}
	}

	// On a bootstrapped host a dry run has nothing to report.
	h.mustRun(h.args())
	res = h.mustRun(h.args("--dry-run"))
	if !strings.Contains(res.stdout, "0 change(s) would be made") || strings.Contains(res.stdout, "bootstrap-host: would ") {
		t.Errorf("dry run on a bootstrapped host:\n%s", res.stdout)
	}
	h.checkSecret()
}

func TestBootstrapRefusesBadSettings(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		args  func(h *bootstrapHost) []string
		env   []string
		setup func(h *bootstrapHost)
		code  int
		msg   string
	}{
		{name: "no base domain", args: func(h *bootstrapHost) []string { return h.args()[2:] }, code: 2, msg: "--base-domain is required"},
		{name: "bad base domain", args: func(h *bootstrapHost) []string { return h.args("--base-domain", "-x.example..com") }, code: 2, msg: "--base-domain must be a DNS name"},
		{name: "no email", args: func(h *bootstrapHost) []string { return append(h.args()[:2], h.args()[4:]...) }, code: 2, msg: "--acme-email is required"},
		{name: "bad email", args: func(h *bootstrapHost) []string { return h.args("--acme-email", "ops") }, code: 2, msg: "--acme-email must be an email address"},
		{name: "no token on a fresh host", args: func(h *bootstrapHost) []string { return append(h.args()[:4], h.args()[6:]...) }, code: 2, msg: "--cloudflare-token-file is required"},
		{name: "token of two lines", setup: func(h *bootstrapHost) {
			bootstrapWrite(h.t, h.tokenFile, bootstrapToken+"\nsecond\n", 0o600)
		}, code: 2, msg: "the token alone on one line"},
		{name: "unpinned image", args: func(h *bootstrapHost) []string { return h.args("--traefik-image", "traefik") }, code: 2, msg: "must be pinned"},
		{name: "relative data root", args: func(h *bootstrapHost) []string { return h.args("--data-root", "data") }, code: 2, msg: "absolute paths"},
		{name: "n8nctl over http", args: func(h *bootstrapHost) []string { return h.args("--n8nctl", "http://example.test/n8nctl") }, code: 2, msg: "must be https://"},
		{name: "missing n8nctl", args: func(h *bootstrapHost) []string { return h.args("--n8nctl", "/nonexistent/n8nctl") }, code: 2, msg: "no such file"},
		{name: "unknown flag", args: func(h *bootstrapHost) []string { return h.args("--force") }, code: 2, msg: "unknown argument: --force"},
		{name: "bad egress entry", args: func(h *bootstrapHost) []string { return h.args("--allow-egress", "lan") }, code: 2, msg: "--allow-egress must be CIDR[:PORT]"},
		{name: "bad egress port", args: func(h *bootstrapHost) []string { return h.args("--allow-egress", "10.0.0.5:99999") }, code: 2, msg: "--allow-egress must be CIDR[:PORT]"},
		{name: "bad resolver", args: func(h *bootstrapHost) []string { return h.args("--resolver", "dns.example.test") }, code: 2, msg: "--resolver must be an IP address"},
		{name: "flag without value", args: func(h *bootstrapHost) []string { return append(h.args(), "--acme-email") }, code: 2, msg: "--acme-email needs a value"},
		{name: "unsupported distribution", setup: func(h *bootstrapHost) {
			h.writeRoot("etc/os-release", "ID=fedora\nVERSION_ID=41\n", 0o644)
		}, code: 2, msg: "unsupported distribution"},
		{name: "not root", env: []string{"FAKE_UID=1000"}, code: 1, msg: "must run as root"},
		{name: "n8nctl checksum mismatch", args: func(h *bootstrapHost) []string { return h.args("--n8nctl-sha256", strings.Repeat("0", 64)) }, code: 1, msg: "not the expected"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			h := bootstrapSetup(t, c.env...)
			if c.setup != nil {
				c.setup(h)
			}
			args := h.args()
			if c.args != nil {
				args = c.args(h)
			}
			before := h.snapshot()
			res := h.run(args)
			if res.code != c.code || !strings.Contains(res.stderr, c.msg) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", res.code, res.stderr, c.code, c.msg)
			}
			for _, call := range res.calls {
				if bootstrapMutating(call) {
					t.Errorf("refused run changed the host: %s", call)
				}
			}
			if after := h.snapshot(); len(after) != len(before) {
				t.Errorf("refused run wrote files: %d entries before, %d after", len(before), len(after))
			}
		})
	}
}

func TestBootstrapHelpExitsZero(t *testing.T) {
	t.Parallel()
	h := bootstrapSetup(t)
	res := h.run([]string{"--help"})
	if res.code != 0 || !strings.Contains(res.stdout, "--base-domain DOMAIN") || len(res.calls) != 0 {
		t.Errorf("--help: exit %d, calls %q\n%s", res.code, res.calls, res.stdout)
	}
}

func TestBootstrapKeepsTheTokenItHasWhenNoneIsGiven(t *testing.T) {
	t.Parallel()
	h := bootstrapSetup(t)
	h.mustRun(h.args())
	args := append(h.args()[:4], h.args()[6:]...)
	res := h.mustRun(args)
	if !strings.Contains(res.stdout, "nothing to change") {
		t.Errorf("a rerun without the token file should keep the installed one:\n%s", res.stdout)
	}
}

func TestBootstrapWillNotOrphanInstancesByMovingTheDataRoot(t *testing.T) {
	t.Parallel()
	h := bootstrapSetup(t)
	h.mustRun(h.args())
	envBefore := h.readRoot("etc/n8n-provisioner/n8nctl.env")
	h.writeRoot("data/n8n/acme/env", "N8N_HOST=acme."+bootstrapDomain+"\n", 0o600)
	res := h.run(h.args("--data-root", "/srv/n8n"))
	if res.code != 2 || !strings.Contains(res.stderr, "instances live in the current data root /data/n8n") {
		t.Errorf("exit %d, stderr %q", res.code, res.stderr)
	}
	if h.readRoot("etc/n8n-provisioner/n8nctl.env") != envBefore {
		t.Error("the env file moved to the new data root anyway")
	}

	// Without instances in the old one, the data root may move.
	if err := os.RemoveAll(filepath.Join(h.root, "data/n8n/acme")); err != nil {
		t.Fatal(err)
	}
	h.mustRun(h.args("--data-root", "/srv/n8n"))
	if !strings.Contains(h.readRoot("etc/n8n-provisioner/n8nctl.env"), "N8N_DATA_ROOT="+h.root+"/srv/n8n\n") {
		t.Error("the env file does not name the new data root")
	}
	h.wantMeta("srv/n8n", 0o700, "0:0")
}

func TestBootstrapWarnsWithoutTheGuestAgentChannel(t *testing.T) {
	t.Parallel()
	h := bootstrapSetup(t)
	if err := os.Remove(filepath.Join(h.root, "dev/virtio-ports/org.qemu.guest_agent.0")); err != nil {
		t.Fatal(err)
	}
	res := h.mustRun(h.args())
	if got := bootstrapCallsMatching(res.calls, "systemctl start qemu-guest-agent"); len(got) != 0 {
		t.Errorf("started the agent without its channel: %q", got)
	}
	for _, want := range []string{"QEMU Guest Agent > Enabled", "shut the VM down and start it again"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("warning lacks %q:\n%s", want, res.stderr)
		}
	}
	if !strings.Contains(res.stdout, "guest agent  NOT READY") {
		t.Errorf("summary does not say the agent is not ready:\n%s", res.stdout)
	}

	// Once the operator enables the option and power-cycles the VM (the
	// channel appears, udev does not start the agent here), a rerun starts it.
	h.writeRoot("dev/virtio-ports/org.qemu.guest_agent.0", "", 0o600)
	res = h.mustRun(h.args())
	if got := bootstrapCallsMatching(res.calls, "systemctl start qemu-guest-agent"); len(got) != 1 {
		t.Errorf("the agent is not started once its channel exists: %q", got)
	}
}

func TestBootstrapMergesAnExistingDaemonJSON(t *testing.T) {
	t.Parallel()
	h := bootstrapSetup(t)
	h.writeRoot("etc/docker/daemon.json", `{"dns": ["10.0.0.53"], "log-opts": {"max-size": "50m", "compress": "true"}}`, 0o644)
	h.mustRun(h.args())
	var got map[string]any
	if err := json.Unmarshal([]byte(h.readRoot("etc/docker/daemon.json")), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"dns": []any{"10.0.0.53"}, "log-driver": "json-file", "live-restore": true,
		"log-opts": map[string]any{"max-size": "10m", "max-file": "5", "compress": "true"}}
	if a, b := bootstrapJSON(t, got), bootstrapJSON(t, want); a != b {
		t.Errorf("daemon.json = %s, want %s", a, b)
	}

	// An operator's reformatting of the same settings is not a change.
	h.writeRoot("etc/docker/daemon.json", bootstrapJSON(t, got), 0o644)
	res := h.mustRun(h.args())
	if len(bootstrapCallsMatching(res.calls, "systemctl restart")) != 0 || !strings.Contains(res.stdout, "nothing to change") {
		t.Errorf("reformatted daemon.json caused changes:\n%s", res.stdout)
	}
}

func TestBootstrapRefusesABrokenDaemonJSON(t *testing.T) {
	t.Parallel()
	h := bootstrapSetup(t)
	h.writeRoot("etc/docker/daemon.json", `{"dns": [`, 0o644)
	res := h.run(h.args())
	if res.code != 1 || !strings.Contains(res.stderr, "daemon.json is not a JSON object") {
		t.Errorf("exit %d:\n%s", res.code, res.stderr)
	}
	if got := h.readRoot("etc/docker/daemon.json"); got != `{"dns": [` {
		t.Errorf("the broken file was overwritten: %q", got)
	}
}

func TestBootstrapKeepsDockerCE(t *testing.T) {
	t.Parallel()
	h := bootstrapSetup(t, "FAKE_APT_AVAILABLE=ca-certificates curl jq age qemu-guest-agent docker-ce docker-compose-plugin")
	// Docker's own packages, installed before the script ran.
	if err := os.MkdirAll(filepath.Join(h.state, "dpkg"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(h.dir, "bin", "apt-get"), "install", "-y", "docker-ce")
	cmd.Env = append(slices.Clone(h.env), "DEBIAN_FRONTEND=noninteractive")
	if err := os.WriteFile(filepath.Join(h.state, "apt-updated"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("preinstalling docker-ce: %v\n%s", err, out)
	}
	h.callsSeen = len(h.allCalls())
	res := h.mustRun(h.args())
	got := bootstrapCallsMatching(res.calls, "apt-get")
	if len(got) != 2 || !strings.HasSuffix(got[1], "install -y ca-certificates curl jq age qemu-guest-agent docker-compose-plugin") {
		t.Errorf("apt-get calls %q: want docker.io left out and the Compose plugin in", got)
	}
}

func TestBootstrapSkipsComposeWhereTheReleaseHasNone(t *testing.T) {
	t.Parallel()
	h := bootstrapSetup(t, "FAKE_APT_AVAILABLE=ca-certificates curl jq age qemu-guest-agent docker.io")
	h.writeRoot("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n", 0o644)
	first := h.mustRun(h.args())
	if !strings.Contains(first.stdout, "no docker-compose-v2 package") {
		t.Errorf("no word about Compose:\n%s", first.stdout)
	}
	second := h.mustRun(h.args())
	if got := bootstrapCallsMatching(second.calls, "apt-get"); len(got) != 0 {
		t.Errorf("second run on Debian ran apt-get: %q", got)
	}
}

func TestBootstrapWarnsAboutANetworkThatLetsInstancesTalk(t *testing.T) {
	t.Parallel()
	h := bootstrapSetup(t)
	bootstrapWrite(t, filepath.Join(h.networkOptions, "proxy"), "\n", 0o644)
	res := h.mustRun(h.args())
	if !strings.Contains(res.stderr, "enable_icc=false") {
		t.Errorf("no warning about the shared network:\n%s", res.stderr)
	}
	if got := bootstrapCallsMatching(res.calls, "docker network create"); len(got) != 0 {
		t.Errorf("the existing network was touched: %q", got)
	}
}

func TestBootstrapInstallsN8nctlFromAURL(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("n8nctl")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(src)
	good := hex.EncodeToString(sum[:])
	const url = "https://downloads.example.test/n8nctl"

	h := bootstrapSetup(t, "FAKE_CURL_SRC="+bootstrapAbs(t, "n8nctl"))
	h.mustRun(h.args("--n8nctl", url, "--n8nctl-sha256", good))
	if got := h.readRoot("opt/n8n-provisioner/libexec/n8nctl"); got != string(src) {
		t.Error("the downloaded n8nctl was not installed as is")
	}

	notScript := filepath.Join(t.TempDir(), "page.html")
	bootstrapWrite(t, notScript, "<html>404</html>\n", 0o644)
	for _, c := range []struct {
		name string
		env  []string
		args []string
		msg  string
	}{
		{"wrong checksum", nil, []string{"--n8nctl-sha256", strings.Repeat("a", 64)}, "not the expected"},
		{"an error page", []string{"FAKE_CURL_SRC=" + notScript}, nil, "not a bash script"},
		{"a failed download", []string{"FAKE_CURL_FAIL=1"}, nil, "could not download"},
	} {
		h := bootstrapSetup(t, "FAKE_CURL_SRC="+bootstrapAbs(t, "n8nctl"))
		res := h.run(h.args(append([]string{"--n8nctl", url}, c.args...)...), c.env...)
		if res.code != 1 || !strings.Contains(res.stderr, c.msg) {
			t.Errorf("%s: exit %d, stderr %q", c.name, res.code, res.stderr)
		}
		if _, err := os.Stat(filepath.Join(h.root, "opt/n8n-provisioner")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: something was installed (%v)", c.name, err)
		}
	}
}

func bootstrapAbs(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(rel)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The installed wrapper is what the provisioner runs through the guest agent:
// it must take the host's settings from the env file and pass stdin through.
func TestBootstrapInstalledAgentRunsWithTheHostSettings(t *testing.T) {
	t.Parallel()
	h := bootstrapSetup(t)
	h.mustRun(h.args())
	fakeDocker, err := filepath.Abs(filepath.Join("testdata", "fake-docker"))
	if err != nil {
		t.Fatal(err)
	}
	dockerState := filepath.Join(h.dir, "n8n-docker")
	if err := os.Mkdir(dockerState, 0o700); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !strings.HasPrefix(k, "N8N_") && !strings.HasPrefix(k, "FAKE_") && k != "DOCKER" {
			env = append(env, kv)
		}
	}
	cmd := exec.Command(filepath.Join(h.root, "opt/n8n-provisioner/bin/n8nctl"), "provision", "acme")
	cmd.Env = append(env, "DOCKER="+fakeDocker, "FAKE_DOCKER_STATE="+dockerState, "N8N_HEALTH_INTERVAL=0")
	cmd.Stdin = strings.NewReader("IMAGE=n8nio/n8n:1.97.1\nCPUS=0.5\nMEMORY_MB=1024\nFQDN=acme." + bootstrapDomain +
		"\nN8N_ENCRYPTION_KEY=k3y-of-the-bootstrap-test-0123456789\nSETUP_AUTH_USERS=" + bootstrapSetupUsers + "\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("installed n8nctl: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	var out map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil || out["ok"] != true {
		t.Fatalf("n8nctl answered %q (%v)", stdout.String(), err)
	}
	b, err := os.ReadFile(filepath.Join(dockerState, "containers", "n8n-acme", "container.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		HostConfig struct {
			NetworkMode string
			Binds       []string
		}
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if c.HostConfig.NetworkMode != "proxy" {
		t.Errorf("network %q, want the env file's proxy", c.HostConfig.NetworkMode)
	}
	wantData := h.root + "/data/n8n/acme/data:"
	if len(c.HostConfig.Binds) == 0 || !strings.HasPrefix(c.HostConfig.Binds[0], wantData) {
		t.Errorf("binds %q, want the data under the env file's data root %s", c.HostConfig.Binds, wantData)
	}
}

func TestBootstrapShellcheck(t *testing.T) {
	t.Parallel()
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Skip("shellcheck is not installed")
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake-host-commands")
	bootstrapWrite(t, fake, bootstrapFakeCommands, 0o755)
	out, err := exec.Command(sc, "--norc", "bootstrap-host.sh", filepath.Join("host", "n8nctl-wrapper"), filepath.Join("host", "n8n-egress"), fake).CombinedOutput()
	if err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}

func bootstrapJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// bootstrapOwner is a file's real owner as "uid:gid".
func bootstrapOwner(fi os.FileInfo) string {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fmt.Sprintf("%d:%d", st.Uid, st.Gid)
	}
	return "?"
}

// The egress policy: bootstrap installs the script, its settings (the operator's
// allow-list and resolvers) and the unit that applies it after Docker; a second run
// changes nothing, and one after someone removed a rule applies the policy again.
func TestBootstrapInstallsAndKeepsTheEgressPolicy(t *testing.T) {
	t.Parallel()
	h := bootstrapSetup(t)
	h.writeRoot("etc/resolv.conf", "nameserver 127.0.0.53\nnameserver 10.0.0.1\n", 0o644)
	args := h.args("--allow-egress", "10.0.0.5/32:5432", "--allow-egress", "192.168.7.0/24")
	res := h.mustRun(args)
	conf := h.readRoot("etc/n8n-provisioner/egress.conf")
	for _, want := range []string{"NETWORK=proxy\n", `RESOLVERS="10.0.0.1"`, `ALLOW="10.0.0.5/32:5432 192.168.7.0/24"`, `HOST_PORTS="80 443"`} {
		if !strings.Contains(conf, want) {
			t.Errorf("egress.conf lacks %q:\n%s", want, conf)
		}
	}
	if unit := h.readRoot("etc/systemd/system/n8n-egress.service"); !strings.Contains(unit, "ExecStart=/opt/n8n-provisioner/libexec/n8n-egress apply") ||
		!strings.Contains(unit, "PartOf=docker.service") {
		t.Errorf("unit:\n%s", unit)
	}
	if len(bootstrapCallsMatching(res.calls, "systemctl enable n8n-egress.service")) != 1 ||
		len(bootstrapCallsMatching(res.calls, "systemctl restart n8n-egress.service")) != 1 {
		t.Errorf("the unit is not enabled and started once: %q", bootstrapCallsMatching(res.calls, "systemctl"))
	}
	if net, err := os.ReadFile(filepath.Join(h.networkOptions, "proxy")); err != nil || !strings.Contains(string(net), "com.docker.network.bridge.name=n8n-proxy") {
		t.Errorf("network options %q (%v), want the bridge named n8n-proxy", net, err)
	}
	forward := filepath.Join(h.state, "iptables", "4", "N8N-EGRESS")
	rules, err := os.ReadFile(forward)
	if err != nil || !strings.Contains(string(rules), "-d 169.254.0.0/16 -j REJECT") || !strings.Contains(string(rules), "-d 10.0.0.5/32 -p tcp --dport 5432 -j RETURN") {
		t.Fatalf("the policy was not applied: %v\n%s", err, rules)
	}

	res = h.mustRun(args)
	if !strings.Contains(res.stdout, "nothing to change") || !strings.Contains(res.stdout, "egress: the tenants' policy is in place") {
		t.Errorf("a second run changed something:\n%s", res.stdout)
	}

	tampered := strings.Replace(string(rules), "-A N8N-EGRESS -d 169.254.0.0/16 -j REJECT --reject-with icmp-admin-prohibited\n", "", 1)
	bootstrapWrite(t, forward, tampered, 0o644)
	res = h.mustRun(args)
	if !strings.Contains(res.stdout, "apply the egress policy again (IPv4 chain N8N-EGRESS differs from the policy") {
		t.Errorf("the tampered policy was not applied again:\n%s", res.stdout)
	}
	if got, _ := os.ReadFile(forward); string(got) != string(rules) {
		t.Errorf("after the repair:\n%s\nwant:\n%s", got, rules)
	}
}
