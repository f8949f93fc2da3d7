// Package secret seals the secrets we must keep (owner passwords, N8N_ENCRYPTION_KEY,
// owner-setup guards) with AES-256-GCM under the operator's master key.
//
// A sealed value reads "v1.<key id>.<base64url(nonce|ciphertext)>". The key id lets the
// master key rotate: a Keyring seals with its current key and opens with any key it holds,
// so old rows stay readable until they are re-sealed. Every value is bound to a context
// string (for example "instance/<id>/encryption_key") as additional data, so a sealed value
// copied into another row or column does not open.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the length in bytes of a master key.
const KeySize = 32

const version = "v1"

// ErrUnknownKey means a sealed value names a key id the keyring does not hold.
var ErrUnknownKey = errors.New("secret: sealed with a key this keyring does not hold")

// ErrCorrupt means a sealed value is malformed, tampered with, or bound to another context.
var ErrCorrupt = errors.New("secret: sealed value is corrupt or belongs to another context")

// Keyring seals with its current key and opens with any of its keys.
type Keyring struct {
	current string
	aeads   map[string]cipher.AEAD
}

// NewKeyring returns a keyring that seals with current and also opens values sealed
// with any of previous. Every key must be KeySize bytes.
func NewKeyring(current []byte, previous ...[]byte) (*Keyring, error) {
	k := &Keyring{aeads: map[string]cipher.AEAD{}}
	for i, key := range append([][]byte{current}, previous...) {
		id, aead, err := newAEAD(key)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			k.current = id
		}
		if _, dup := k.aeads[id]; !dup {
			k.aeads[id] = aead
		}
	}
	return k, nil
}

func newAEAD(key []byte) (string, cipher.AEAD, error) {
	if len(key) != KeySize {
		return "", nil, fmt.Errorf("secret: master key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return "", nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return "", nil, err
	}
	return KeyID(key), aead, nil
}

// KeyID returns the public identifier of a master key: the first 8 bytes of its SHA-256,
// in hex. It reveals nothing useful about the key.
func KeyID(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:8])
}

// CurrentKeyID returns the id of the key new values are sealed with.
func (k *Keyring) CurrentKeyID() string { return k.current }

// Seal encrypts plaintext bound to context.
func (k *Keyring) Seal(plaintext, context string) (string, error) {
	aead := k.aeads[k.current]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("secret: reading random nonce: %w", err)
	}
	sealed := aead.Seal(nonce, nonce, []byte(plaintext), []byte(context))
	return version + "." + k.current + "." + base64.RawURLEncoding.EncodeToString(sealed), nil
}

// Open decrypts a value produced by Seal with the same context. It returns ErrUnknownKey
// or ErrCorrupt.
func (k *Keyring) Open(sealed, context string) (string, error) {
	parts := strings.SplitN(sealed, ".", 3)
	if len(parts) != 3 || parts[0] != version {
		return "", ErrCorrupt
	}
	aead, ok := k.aeads[parts[1]]
	if !ok {
		return "", ErrUnknownKey
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(raw) < aead.NonceSize() {
		return "", ErrCorrupt
	}
	plain, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], []byte(context))
	if err != nil {
		return "", ErrCorrupt
	}
	return string(plain), nil
}

// NeedsReseal reports whether sealed was made with a key other than the current one.
func (k *Keyring) NeedsReseal(sealed string) bool {
	parts := strings.SplitN(sealed, ".", 3)
	return len(parts) != 3 || parts[1] != k.current
}

// ParseKey decodes a base64 (standard or URL, padded or not) master key of KeySize bytes.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if key, err := enc.DecodeString(s); err == nil {
			if len(key) != KeySize {
				return nil, fmt.Errorf("must decode to %d bytes, got %d", KeySize, len(key))
			}
			return key, nil
		}
	}
	return nil, errors.New("is not valid base64")
}

// NewKey returns a fresh random master key, base64 encoded.
func NewKey() (string, error) {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(key), nil
}
