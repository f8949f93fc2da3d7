package mail

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

// Outbox "sends" by writing each message as a complete RFC 5322 .eml file, byte for byte
// what SMTP would transmit, into a directory: the default when no SMTP server is configured,
// so that a newcomer's first instance still produces a credentials email they can open.
//
// Files are named <UTC time>-<message id>.eml, created 0600 in a 0700 directory (they hold
// passwords), and written to a temporary file renamed into place, so a crash never leaves
// half a message. Sending the same Message.ID again replaces the earlier file.
type Outbox struct {
	dir  string
	from string
	opts options
	mu   sync.Mutex // one lookup-then-rename at a time, so one ID never gets two files
}

// NewOutbox returns an outbox writing into dir (created on first Send) as from. A bad from
// address is reported by Send, as an apperr.Invalid error naming PROVISIONER_MAIL_FROM.
func NewOutbox(dir, from string, opts ...Option) *Outbox {
	return &Outbox{dir: dir, from: from, opts: newOptions(opts)}
}

// Dir returns the directory the outbox writes into.
func (o *Outbox) Dir() string { return o.dir }

// String describes the sender for start-up logs and doctor.
func (o *Outbox) String() string { return "outbox " + o.dir + " from " + o.from }

// outboxTimeLayout sorts lexically in time order and has no characters a file system or a
// shell minds.
const outboxTimeLayout = "20060102T150405Z"

// Send writes m into the outbox and returns the nil error once the file is in place. It
// returns an apperr.Invalid error when m or the from address is malformed and an
// apperr.Unavailable error when the directory cannot be written (or ctx has ended).
func (o *Outbox) Send(ctx context.Context, m Message) error {
	if err := ctx.Err(); err != nil {
		return apperr.Wrap(apperr.Unavailable, err, "writing email %s to the outbox", m.ID)
	}
	from, domain, err := parseFrom(o.from)
	if err != nil {
		return err
	}
	if m.ID == "" {
		m.ID = randomID()
	}
	now := o.opts.now()
	msg, err := compose(from, domain, m, now)
	if err != nil {
		return err
	}
	var eml bytes.Buffer
	if _, err := msg.WriteTo(&eml); err != nil {
		return apperr.Wrap(apperr.Internal, err, "encoding email %s", m.ID)
	}

	o.mu.Lock()
	defer o.mu.Unlock()
	if err := os.MkdirAll(o.dir, 0o700); err != nil {
		return apperr.Wrap(apperr.Unavailable, err, "creating the outbox %s", o.dir)
	}
	name, err := o.fileFor(fileID(m.ID), now)
	if err != nil {
		return apperr.Wrap(apperr.Unavailable, err, "reading the outbox %s", o.dir)
	}
	if err := writeAtomic(o.dir, name, eml.Bytes()); err != nil {
		return apperr.Wrap(apperr.Unavailable, err, "writing email %s to the outbox %s", m.ID, o.dir)
	}
	return nil
}

// Check makes sure the outbox directory exists and takes a file: the doctor's probe. It
// returns nil or an apperr.Unavailable error.
func (o *Outbox) Check(context.Context) error {
	if err := os.MkdirAll(o.dir, 0o700); err != nil {
		return apperr.Wrap(apperr.Unavailable, err, "creating the outbox %s", o.dir)
	}
	f, err := os.CreateTemp(o.dir, ".check-*")
	if err != nil {
		return apperr.Wrap(apperr.Unavailable, err, "writing to the outbox %s", o.dir)
	}
	_ = f.Close()
	_ = os.Remove(f.Name())
	return nil
}

// fileFor returns the name of the file already holding this id, or a new name stamped now.
func (o *Outbox) fileFor(id string, now time.Time) (string, error) {
	entries, err := os.ReadDir(o.dir)
	if err != nil {
		return "", err
	}
	suffix := "-" + id + ".eml"
	for _, e := range entries {
		name := e.Name()
		stamp, ok := strings.CutSuffix(name, suffix)
		if !ok || len(stamp) != len(outboxTimeLayout) {
			continue // another id that merely ends like this one
		}
		if _, err := time.Parse(outboxTimeLayout, stamp); err == nil {
			return name, nil
		}
	}
	return now.UTC().Format(outboxTimeLayout) + suffix, nil
}

// fileID keeps the characters of a message id that are safe in a file name everywhere; when
// it had to change or shorten the id, a hash of the original keeps two ids from colliding.
func fileID(id string) string {
	clean := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, id)
	clean = strings.TrimLeft(clean, ".")
	const maxLen = 120
	if clean == id && len(clean) <= maxLen {
		return clean
	}
	sum := sha256.Sum256([]byte(id))
	if len(clean) > maxLen {
		clean = clean[:maxLen]
	}
	return clean + "-" + hex.EncodeToString(sum[:6])
}

// writeAtomic writes data to dir/name through a synced temporary file renamed over it:
// readers see the old file or the new one, never a part.
func writeAtomic(dir, name string, data []byte) (err error) {
	tmp, err := os.CreateTemp(dir, ".tmp-*.eml") // 0600
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	// Make the rename itself survive a power cut. Best effort: some file systems cannot
	// sync a directory, and the message is complete either way.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
