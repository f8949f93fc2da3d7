package scripts_test

// The per-instance disk quota on a real loop mount: n8nctl makes an ext4 image, mounts it
// under the instance, and the kernel enforces its size. It needs root (mount, losetup) and
// skips, saying why, without it; CI runs as root and runs it. Docker is the fake one.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const gib = 1 << 30

func diskHost(t *testing.T) (*host, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to loop-mount the instance's disk image; CI runs as root")
	}
	for _, tool := range []string{"mount", "umount", "losetup", "mkfs.ext4", "resize2fs", "chattr", "mountpoint"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	probe := t.TempDir()
	img := filepath.Join(probe, "probe.img")
	if out, err := exec.Command("sh", "-c", "truncate -s 16M "+img+" && mkfs.ext4 -q -F "+img+" && mount -o loop "+img+" "+probe+" && umount "+probe).CombinedOutput(); err != nil {
		t.Skipf("the kernel refuses loop mounts here (%v: %s)", err, out)
	}
	fstab := filepath.Join(t.TempDir(), "fstab")
	if err := os.WriteFile(fstab, []byte("# the host's own line\n/dev/sda1 / ext4 defaults 0 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := setup(t, "N8N_FSTAB="+fstab)
	t.Cleanup(func() { // whatever the test did, leave no mount or loop device behind
		mnt := filepath.Join(h.root, "acme", "disk")
		exec.Command("umount", mnt).Run()
		exec.Command("chattr", "-i", mnt).Run()
	})
	return h, fstab
}

// fill asks the kernel for n bytes in a new file under dir.
func fill(dir string, n int64) error {
	f, err := os.Create(filepath.Join(dir, "big"))
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	return unix.Fallocate(int(f.Fd()), 0, 0, n)
}

func TestDiskQuotaOnARealLoopMount(t *testing.T) {
	h, fstab := diskHost(t)
	st := h.must("provision", "acme", provisionInput("DISK_GB=1"))
	mnt := filepath.Join(h.root, "acme", "disk")
	data := filepath.Join(mnt, "data")
	if st["disk_gb"] != float64(1) || st["disk_mounted"] != true {
		t.Fatalf("status after provision = %v", st)
	}
	if err := exec.Command("mountpoint", "-q", mnt).Run(); err != nil {
		t.Fatalf("%s is not a mount point: %v", mnt, err)
	}
	c := h.container("n8n-acme")
	if src := c["Mounts"].([]any)[0].(map[string]any)["Source"]; src != data {
		t.Errorf("the container's data volume is %v, want %s on the quota", src, data)
	}
	tab, _ := os.ReadFile(fstab)
	img := filepath.Join(h.root, ".disks", "acme.img")
	line := img + " " + mnt + " ext4 loop,nodev,nosuid,nofail 0 2"
	if !strings.Contains(string(tab), line) || !strings.Contains(string(tab), "/dev/sda1 / ext4") {
		t.Errorf("fstab:\n%s\nwant the host's line and %q", tab, line)
	}

	// The kernel holds the quota: 1 GiB fits nothing bigger.
	if err := fill(data, gib+gib/10); !errors.Is(err, unix.ENOSPC) {
		t.Errorf("allocating 1.1 GiB in a 1 GiB quota: %v, want ENOSPC", err)
	}
	if err := fill(data, gib/2); err != nil {
		t.Errorf("allocating 0.5 GiB: %v", err)
	}

	// A plan upgrade grows it online; it never shrinks.
	if st := h.must("limits", "acme", "DISK_GB=2\n"); st["disk_gb"] != float64(2) {
		t.Errorf("status after growing = %v", st)
	}
	if err := fill(data, gib+gib/2); err != nil {
		t.Errorf("allocating 1.5 GiB after growing to 2 GiB: %v", err)
	}
	if res := h.run("limits", "acme", "DISK_GB=1\n"); res.code != 2 || !strings.Contains(fmt.Sprint(res.out["error"]), "cannot shrink") {
		t.Errorf("shrinking: exit %d %v", res.code, res.out)
	}

	// Backup and restore work on the quota's filesystem.
	if err := os.WriteFile(filepath.Join(data, "workflow.json"), []byte(`{"v":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	backup := h.must("backup", "acme", "")
	os.WriteFile(filepath.Join(data, "workflow.json"), []byte(`{"v":2}`), 0o644)
	h.must("restore", "acme", "BACKUP="+backup["path"].(string)+"\n")
	if b, _ := os.ReadFile(filepath.Join(data, "workflow.json")); string(b) != `{"v":1}` {
		t.Errorf("after restore: %s", b)
	}
	if err := exec.Command("mountpoint", "-q", mnt).Run(); err != nil {
		t.Errorf("the restore left the disk unmounted: %v", err)
	}

	// Should the mount be missing (a failed boot mount), nothing can create a blank data
	// dir in its place, and n8nctl mounts it again before it starts the container.
	if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v %s", err, out)
	}
	if err := os.Mkdir(filepath.Join(mnt, "data"), 0o755); err == nil {
		t.Error("a data dir could be created in the unmounted mount point")
	}
	if st := h.must("restart", "acme", ""); st["disk_mounted"] != true {
		t.Errorf("restart did not mount the disk again: %v", st)
	}

	// Destroy with PURGE removes the mount, the image and the fstab line.
	h.must("destroy", "acme", "PURGE=1\n")
	if _, err := os.Stat(img); !os.IsNotExist(err) {
		t.Errorf("the image survived the purge: %v", err)
	}
	if tab, _ := os.ReadFile(fstab); strings.Contains(string(tab), img) || !strings.Contains(string(tab), "/dev/sda1") {
		t.Errorf("fstab after the purge:\n%s", tab)
	}
}
