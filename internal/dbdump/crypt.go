package dbdump

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"filippo.io/age"

	"github.com/n8n-provisioner/n8n-provisioner/internal/secret"
)

// The dumps are age files with one scrypt recipient whose passphrase is derived from the
// master key. A passphrase, rather than an X25519 identity derived from the same bytes,
// because age's public API makes an X25519 identity only from its Bech32 text (the encoder
// is internal to age), and because the stock age tool then opens a dump with nothing but
// the passphrase (`age -d`), should the provisioner itself be what was lost.
const (
	hkdfInfo = "n8n-provisioner database dump v1"
	// workFactor is scrypt's log2(N). The passphrase is 256 uniformly random bits, so
	// scrypt's cost adds nothing against guessing it; the factor is kept small so that
	// sealing a dump, and trying each master key in turn on a restore, stay cheap: 2^12
	// with r=8 is 4 MiB and 18 ms on one core of the 2-core test machine (2^14: 75 ms,
	// age's default 2^18: 1.5 s). TestDumpScryptCost measures it.
	workFactor = 12
	// maxWorkFactor bounds what a dump may ask for (300 ms here), so that a planted object
	// cannot make a restore spend minutes in scrypt before it is refused.
	maxWorkFactor = 16
)

// Passphrase returns the age passphrase the dumps are sealed with under masterKey:
// hex(HKDF-SHA256(masterKey, no salt, "n8n-provisioner database dump v1", 32 bytes)). With
// it, `age -d -o provisioner.dump db/<time>.<dialect>.age` opens a dump without the
// provisioner.
func Passphrase(masterKey []byte) (string, error) {
	if len(masterKey) != secret.KeySize {
		return "", fmt.Errorf("dbdump: the master key must be %d bytes, got %d", secret.KeySize, len(masterKey))
	}
	k, err := hkdf.Key(sha256.New, masterKey, nil, hkdfInfo, 32)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(k), nil
}

// Encrypt returns a writer that encrypts what is written to it into w, under masterKey.
// Close finishes the file; without it the dump is truncated and will not open.
func Encrypt(w io.Writer, masterKey []byte) (io.WriteCloser, error) {
	pass, err := Passphrase(masterKey)
	if err != nil {
		return nil, err
	}
	r, err := age.NewScryptRecipient(pass)
	if err != nil {
		return nil, err
	}
	r.SetWorkFactor(workFactor)
	return age.Encrypt(w, r)
}

// Decrypt returns the plaintext of the dump r, opened with the first of keys it was
// sealed under. It returns ErrWrongKey at once when none fits; reading returns an error
// wrapping ErrCorrupt, instead of io.EOF, if the dump is truncated or was tampered with,
// so the plaintext is whole only when a read has returned io.EOF.
func Decrypt(r io.Reader, keys [][]byte) (io.Reader, error) {
	ids := make([]age.Identity, 0, len(keys))
	for _, k := range keys {
		pass, err := Passphrase(k)
		if err != nil {
			return nil, err
		}
		id, err := age.NewScryptIdentity(pass)
		if err != nil {
			return nil, err
		}
		id.SetMaxWorkFactor(maxWorkFactor)
		ids = append(ids, id)
	}
	plain, err := age.Decrypt(r, ids...)
	if err != nil {
		var noMatch *age.NoIdentityMatchError
		if errors.As(err, &noMatch) {
			return nil, ErrWrongKey
		}
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return corruptReader{plain}, nil
}

// corruptReader marks every failure of the authenticated stream as ErrCorrupt.
type corruptReader struct{ r io.Reader }

func (c corruptReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return n, err
}
