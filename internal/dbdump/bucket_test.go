package dbdump_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
)

// memBucket is an in-memory object store with Bucket's semantics: Put stores the whole
// stream or nothing (as S3 does), Keys lists sorted, Delete of a missing key succeeds. It
// works from its zero value. Knobs: failPutAfter makes Put fail after reading that many
// bytes (0: never), swallow makes Put store whatever it read even if the stream failed (a
// careless store), failGet and failDelete fail those calls.
type memBucket struct {
	mu      sync.Mutex
	objects map[string][]byte

	failPutAfter int
	swallow      bool
	failGet      error
	failDelete   map[string]error
}

var errInjected = errors.New("injected store failure")

func (b *memBucket) Put(ctx context.Context, key string, r io.Reader) error {
	b.mu.Lock()
	limit, swallow := b.failPutAfter, b.swallow
	b.mu.Unlock()
	var buf bytes.Buffer
	var err error
	if limit > 0 {
		if _, err = io.CopyN(&buf, r, int64(limit)); err == nil {
			err = fmt.Errorf("after %d bytes: %w", limit, errInjected)
		} else if err == io.EOF {
			err = nil
		}
	} else {
		_, err = io.Copy(&buf, r)
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil && !swallow {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.objects == nil {
		b.objects = map[string][]byte{}
	}
	b.objects[key] = buf.Bytes()
	return nil
}

func (b *memBucket) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failGet != nil {
		return nil, b.failGet
	}
	o, ok := b.objects[key]
	if !ok {
		return nil, fmt.Errorf("%s: no such key", key)
	}
	return io.NopCloser(bytes.NewReader(o)), nil
}

func (b *memBucket) Keys(ctx context.Context, prefix string) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var keys []string
	for k := range b.objects {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys, nil
}

func (b *memBucket) Delete(ctx context.Context, key string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.failDelete[key]; err != nil {
		return err
	}
	delete(b.objects, key)
	return nil
}

// object returns a copy of the stored bytes of key.
func (b *memBucket) object(key string) ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	o, ok := b.objects[key]
	return bytes.Clone(o), ok
}

// set stores data at key directly (a tampered or planted object).
func (b *memBucket) set(key string, data []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.objects == nil {
		b.objects = map[string][]byte{}
	}
	b.objects[key] = data
}

func (b *memBucket) keys() []string {
	keys, _ := b.Keys(context.Background(), "")
	return keys
}

// shortBucket is a careless store: it reads part of the stream and reports success.
type shortBucket struct{ memBucket }

func (b *shortBucket) Put(ctx context.Context, key string, r io.Reader) error {
	return b.memBucket.Put(ctx, key, io.LimitReader(r, 100))
}

func bytesReader(s string) io.Reader { return strings.NewReader(s) }
