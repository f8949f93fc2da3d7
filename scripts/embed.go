// Package scripts holds what runs on a host VM rather than in the provisioner: the host
// agent n8nctl, and the fake docker CLI its tests run it against. This Go file embeds both,
// so that a compiled provisioner (`provisioner demo`, through internal/sandbox) can run the
// real host script without the source tree beside it.
package scripts

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
)

// N8nctl is scripts/n8nctl, the host agent, byte for byte. Write it to a file with mode
// 0755 to run it; it needs bash, jq, flock, coreutils, and age and curl for backups.
//
//go:embed n8nctl
var N8nctl string

// FakeDocker is scripts/testdata/fake-docker, the stand-in docker CLI that keeps container
// state in files under $FAKE_DOCKER_STATE (see its header for the subcommands and knobs).
//
//go:embed testdata/fake-docker
var FakeDocker string

// FakeDisk is scripts/testdata/fake-disk, the stand-in for the disk tools (mount, df,
// ...) of an instance's disk quota, to be installed once under each name it covers.
//
//go:embed testdata/fake-disk
var FakeDisk string

// FakeDiskTools are the names FakeDisk answers to.
var FakeDiskTools = []string{"mkfs.ext4", "e2fsck", "resize2fs", "chattr", "mount", "umount", "mountpoint", "losetup", "df"}

// N8nctlVersion is what `n8nctl version all` prints as the version of exactly this
// script: "sha256:" and the SHA-256 of its bytes. A host whose n8nctl reports anything else
// runs another release's agent, and is refused when it is added.
var N8nctlVersion = "sha256:" + sha256Hex(N8nctl)

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
