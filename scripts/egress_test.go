package scripts

// The tenants' egress policy (host/n8n-egress) on real kernel networking: network
// namespaces stand for the host VM, two tenants on its bridge, the operator's LAN (with
// the Proxmox API, a DNS resolver and the cloud metadata address) and the internet. The
// test applies the rules the script generates, for real, in the host namespace, and dials
// from a tenant. It needs CAP_NET_ADMIN (root): without it, it skips and says why; CI runs
// as root and runs it.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// netns is one network namespace of the test's topology.
type netns struct {
	t    *testing.T
	name string
}

// egressWorld builds the topology; every namespace is deleted at cleanup.
//
//	tenant1 172.31.250.2 ─┐                      ┌─ lan 192.168.250.2 (:8006 Proxmox, :5432 allowed)
//	tenant2 172.31.250.3 ─┤ bridge  [host ns]    │      192.168.250.53 (:53 the resolver, :8080)
//	                      └ 172.31.250.1 ─ routes ┤      169.254.169.254 (:80 metadata)
//	                                  198.51.100.1└─ internet 198.51.100.2 (:443)
type egressWorld struct {
	t                                   *testing.T
	prefix                              string
	host, tenant1, tenant2, lan, public netns
}

const egressBridge = "n8nbr0"

func newEgressWorld(t *testing.T) *egressWorld {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN) for network namespaces, veth pairs and iptables; CI runs as root")
	}
	for _, tool := range []string{"ip", "iptables", "iptables-restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s on PATH: %v", tool, err)
		}
	}
	prefix := fmt.Sprintf("n8neg%d", os.Getpid()%100000)
	w := &egressWorld{t: t, prefix: prefix}
	probe := prefix + "probe"
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		t.Skipf("the kernel refuses network namespaces here (%v: %s): the egress policy cannot be tested", err, out)
	}
	exec.Command("ip", "netns", "del", probe).Run()

	ns := func(role string) netns {
		n := netns{t: t, name: prefix + role}
		w.ip("netns", "add", n.name)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", n.name).Run() })
		n.ip("link", "set", "lo", "up")
		return n
	}
	w.host, w.tenant1, w.tenant2, w.lan, w.public = ns("h"), ns("t1"), ns("t2"), ns("lan"), ns("pub")

	h := w.host
	h.ip("link", "add", egressBridge, "type", "bridge")
	h.ip("addr", "add", "172.31.250.1/24", "dev", egressBridge)
	h.ip("link", "set", egressBridge, "up")
	h.sysctl("net.ipv4.ip_forward", "1")
	// Docker loads br_netfilter so that traffic between two containers on one bridge
	// passes iptables (its own icc=false rule needs it); the test's bridge does the same.
	h.sysctl("net.bridge.bridge-nf-call-iptables", "1")
	for i, tn := range []netns{w.tenant1, w.tenant2} {
		veth := fmt.Sprintf("%sv%d", w.prefix, i+1)
		w.link(tn, veth, "eth0")
		h.ip("link", "set", veth, "master", egressBridge)
		h.ip("link", "set", veth, "up")
		tn.ip("addr", "add", fmt.Sprintf("172.31.250.%d/24", i+2), "dev", "eth0")
		tn.ip("link", "set", "eth0", "up")
		tn.ip("route", "add", "default", "via", "172.31.250.1")
	}
	w.link(w.lan, w.prefix+"vl", "eth0")
	h.ip("addr", "add", "192.168.250.1/24", "dev", w.prefix+"vl")
	h.ip("link", "set", w.prefix+"vl", "up")
	w.lan.ip("addr", "add", "192.168.250.2/24", "dev", "eth0")
	w.lan.ip("addr", "add", "192.168.250.53/32", "dev", "lo")
	w.lan.ip("addr", "add", "169.254.169.254/32", "dev", "lo")
	w.lan.ip("link", "set", "eth0", "up")
	w.lan.ip("route", "add", "default", "via", "192.168.250.1")
	h.ip("route", "add", "192.168.250.53/32", "via", "192.168.250.2")
	h.ip("route", "add", "169.254.169.254/32", "via", "192.168.250.2")
	w.link(w.public, w.prefix+"vp", "eth0")
	h.ip("addr", "add", "198.51.100.1/24", "dev", w.prefix+"vp")
	h.ip("link", "set", w.prefix+"vp", "up")
	w.public.ip("addr", "add", "198.51.100.2/24", "dev", "eth0")
	w.public.ip("link", "set", "eth0", "up")
	w.public.ip("route", "add", "default", "via", "198.51.100.1")
	return w
}

func (w *egressWorld) ip(args ...string) {
	w.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		w.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// link makes a veth pair: hostEnd in the host namespace, inner (renamed) in n.
func (w *egressWorld) link(n netns, hostEnd, inner string) {
	w.t.Helper()
	w.host.ip("link", "add", hostEnd, "type", "veth", "peer", "name", hostEnd+"p")
	w.host.ip("link", "set", hostEnd+"p", "netns", n.name)
	n.ip("link", "set", hostEnd+"p", "name", inner)
}

func (n netns) ip(args ...string) {
	n.t.Helper()
	n.run("ip", args...)
}

func (n netns) sysctl(key, value string) {
	n.t.Helper()
	n.run("sysctl", "-q", "-w", key+"="+value)
}

func (n netns) run(cmd string, args ...string) string {
	n.t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.name, cmd}, args...)...).CombinedOutput()
	if err != nil {
		n.t.Fatalf("in %s: %s %s: %v: %s", n.name, cmd, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// in runs fn on an OS thread that has entered n; sockets made there stay in n.
func (n netns) in(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return err
	}
	defer self.Close()
	target, err := os.Open("/var/run/netns/" + n.name)
	if err != nil {
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return err
	}
	defer func() {
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			panic("cannot return to the test's network namespace: " + err.Error())
		}
	}()
	return fn()
}

// listen serves TCP on addr in n: it accepts and closes every connection.
func (n netns) listen(addr string) {
	n.t.Helper()
	var ln net.Listener
	if err := n.in(func() (err error) { ln, err = net.Listen("tcp", addr); return }); err != nil {
		n.t.Fatalf("listen %s in %s: %v", addr, n.name, err)
	}
	n.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// echoUDP answers every UDP datagram on addr in n with the same bytes (a stand-in DNS server).
func (n netns) echoUDP(addr string) {
	n.t.Helper()
	var pc net.PacketConn
	if err := n.in(func() (err error) { pc, err = net.ListenPacket("udp", addr); return }); err != nil {
		n.t.Fatalf("listen udp %s in %s: %v", addr, n.name, err)
	}
	n.t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:k], from)
		}
	}()
}

// reach reports whether a TCP connection from n to addr is accepted.
func (n netns) reach(addr string) error {
	return n.in(func() error {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// reachUDP reports whether a datagram from n to addr is answered.
func (n netns) reachUDP(addr string) error {
	return n.in(func() error {
		c, err := net.Dial("udp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("query")); err != nil {
			return err
		}
		_, err = c.Read(make([]byte, 16))
		return err
	})
}

type target struct {
	what, addr string
	udp        bool
}

func (tg target) from(n netns) error {
	if tg.udp {
		return n.reachUDP(tg.addr)
	}
	return n.reach(tg.addr)
}

// applyEgress runs the script's verb in the host namespace with the test's settings.
func (w *egressWorld) applyEgress(verb string) (string, error) {
	script, err := filepath.Abs("host/n8n-egress")
	if err != nil {
		w.t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", w.host.name, script, verb)
	cmd.Env = append(os.Environ(), "N8N_EGRESS_CONF=/nonexistent", "BRIDGE="+egressBridge,
		"RESOLVERS=192.168.250.53", "ALLOW=192.168.250.2:5432", "HOST_PORTS=80 443")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestEgressPolicyOnRealKernelNetworking(t *testing.T) {
	w := newEgressWorld(t)
	w.lan.listen("192.168.250.2:8006")    // the Proxmox API on the LAN
	w.lan.listen("192.168.250.2:5432")    // a LAN service the operator allows
	w.lan.listen("192.168.250.53:53")     // the resolver, over TCP
	w.lan.echoUDP("192.168.250.53:53")    // and over UDP
	w.lan.listen("192.168.250.53:8080")   // the resolver's machine, another port
	w.lan.listen("169.254.169.254:80")    // the cloud's metadata service
	w.host.listen("172.31.250.1:22")      // the host's SSH, on its bridge address
	w.host.listen("198.51.100.1:22")      // and on its public address
	w.host.listen("172.31.250.1:443")     // Traefik, the host's ingress
	w.tenant2.listen("172.31.250.3:5678") // another customer's n8n
	w.tenant1.listen("172.31.250.2:5678") // this customer's n8n, which Traefik reaches
	w.public.listen("198.51.100.2:443")   // a server on the internet

	blocked := []target{
		{what: "a LAN address (the Proxmox API)", addr: "192.168.250.2:8006"},
		{what: "the metadata address", addr: "169.254.169.254:80"},
		{what: "the resolver's machine on a port other than DNS", addr: "192.168.250.53:8080"},
		{what: "the host on its bridge address", addr: "172.31.250.1:22"},
		{what: "the host on its public address", addr: "198.51.100.1:22"},
		{what: "another tenant", addr: "172.31.250.3:5678"},
	}
	allowed := []target{
		{what: "a public address", addr: "198.51.100.2:443"},
		{what: "DNS over UDP to the resolver", addr: "192.168.250.53:53", udp: true},
		{what: "DNS over TCP to the resolver", addr: "192.168.250.53:53"},
		{what: "the operator's allow-list entry", addr: "192.168.250.2:5432"},
		{what: "the host's ingress", addr: "172.31.250.1:443"},
	}
	// Without the policy everything answers, so each refusal below is the policy's.
	for _, tg := range append(blocked, allowed...) {
		if err := tg.from(w.tenant1); err != nil {
			t.Fatalf("before the policy, %s (%s) does not answer: %v; the topology is broken", tg.what, tg.addr, err)
		}
	}
	if out, err := w.applyEgress("check"); err == nil {
		t.Fatalf("check passes before apply: %s", out)
	}

	for range 2 { // apply is idempotent: the second run changes nothing
		if out, err := w.applyEgress("apply"); err != nil {
			t.Fatalf("apply: %v\n%s", err, out)
		}
	}
	if out, err := w.applyEgress("check"); err != nil || strings.TrimSpace(out) != "ok" {
		t.Fatalf("check after apply = %v: %s", err, out)
	}
	for _, jump := range []string{"-A DOCKER-USER -i " + egressBridge + " -j N8N-EGRESS", "-A INPUT -i " + egressBridge + " -j N8N-EGRESS-HOST"} {
		if rules := w.host.run("iptables", "-S"); strings.Count(rules, jump) != 1 {
			t.Errorf("want the jump %q once after two applies:\n%s", jump, rules)
		}
	}

	for _, tg := range blocked {
		err := tg.from(w.tenant1)
		if err == nil {
			t.Errorf("a tenant reaches %s (%s)", tg.what, tg.addr)
		} else if !errors.Is(err, unix.EHOSTUNREACH) && !errors.Is(err, unix.ECONNREFUSED) {
			t.Errorf("%s: refused with %v, want a fast rejection, not a timeout", tg.what, err)
		}
	}
	for _, tg := range allowed {
		if err := tg.from(w.tenant1); err != nil {
			t.Errorf("a tenant cannot reach %s (%s): %v", tg.what, tg.addr, err)
		}
	}
	if err := w.host.reach("172.31.250.2:5678"); err != nil {
		t.Errorf("the ingress (the host namespace) cannot reach the tenant's n8n: %v", err)
	}

	// Someone removes a rule: check says so, and apply puts it back.
	w.host.run("iptables", "-D", "N8N-EGRESS", "-d", "169.254.0.0/16", "-j", "REJECT", "--reject-with", "icmp-admin-prohibited")
	if out, err := w.applyEgress("check"); err == nil || !strings.Contains(out, "N8N-EGRESS differs") {
		t.Errorf("check after a rule was removed = %v: %s", err, out)
	}
	if err := (target{addr: "169.254.169.254:80"}).from(w.tenant1); err == nil {
		t.Log("(the metadata address answers while the rule is missing, as expected)")
	} else {
		t.Errorf("the removed rule still applies: %v", err)
	}
	if out, err := w.applyEgress("apply"); err != nil {
		t.Fatalf("apply again: %v\n%s", err, out)
	}
	if err := (target{addr: "169.254.169.254:80"}).from(w.tenant1); err == nil {
		t.Error("apply did not put the metadata rule back")
	}
}
