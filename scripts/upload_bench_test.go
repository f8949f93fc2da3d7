package scripts_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/objstore"
	"github.com/n8n-provisioner/n8n-provisioner/internal/objstore/objstoretest"
)

// BenchmarkUpload1GiB uploads the same 1 GiB archive of random bytes to the test S3
// server (SeaweedFS, started by scripts/test.sh or scripts/s3.sh) two ways, in the same
// run on the same machine, and reports MB/s for each:
//
//   - presigned: what production does. The provisioner starts a multipart upload and
//     presigns the parts; `n8nctl upload` (its checksum pass, dd, one curl per part)
//     PUTs them; the provisioner completes the upload. The read-back check is not timed.
//   - sdk: objstore.Put, aws-sdk-go-v2's transfer manager uploading the file directly
//     with the keys (concurrent parts), as a host would if it held credentials.
//
// Run it with `go test -run - -bench Upload1GiB -benchtime 1x ./scripts/`.
func BenchmarkUpload1GiB(b *testing.B) {
	needCurl(b)
	const size = 1 << 30
	store, err := objstore.New(objstoretest.Config(b))
	if err != nil {
		b.Fatal(err)
	}
	h := setup(b)
	name := "20261207T030000Z.tar.gz.age"
	dir := filepath.Join(h.backups, "acme")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(dir, name)
	sum := writeRandomArchive(b, path, size)
	writeBytes(b, path+".sha256", []byte(sum+"  "+name+"\n"))
	ctx := context.Background()

	b.Run("presigned", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			key := fmt.Sprintf("bench/presigned-%d", i)
			u, err := store.StartUpload(ctx, key, size, time.Hour)
			if err != nil {
				b.Fatal(err)
			}
			out := h.must("upload", "acme", presignedInput(name, u))
			var done []objstore.Done
			for _, p := range out["parts"].([]any) {
				part := p.(map[string]any)
				done = append(done, objstore.Done{Number: int32(part["number"].(float64)), ETag: part["etag"].(string)})
			}
			if err := store.CompleteUpload(ctx, u, done); err != nil {
				b.Fatal(err)
			}
			verifyAndDelete(b, store, key, sum, size)
		}
		reportMBs(b, size)
	})
	b.Run("sdk", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			key := fmt.Sprintf("bench/sdk-%d", i)
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			err = store.Put(ctx, key, f)
			f.Close()
			if err != nil {
				b.Fatal(err)
			}
			verifyAndDelete(b, store, key, sum, size)
		}
		reportMBs(b, size)
	})
}

// presignedInput is `n8nctl upload`'s stdin for u, as instances.Service.upload writes it.
func presignedInput(name string, u objstore.Upload) string {
	in := fmt.Sprintf("ARCHIVE=%s\nPARTS=%d\n", name, len(u.Parts))
	for _, p := range u.Parts {
		in += fmt.Sprintf("PART_%d_URL=%s\nPART_%d_OFFSET=%d\nPART_%d_SIZE=%d\n", p.Number, p.URL, p.Number, p.Offset, p.Number, p.Size)
	}
	return in
}

// verifyAndDelete checks the object against the archive, outside the timed part.
func verifyAndDelete(b *testing.B, store *objstore.Store, key, sum string, size int64) {
	b.StopTimer()
	defer b.StartTimer()
	if err := store.Verify(context.Background(), key, sum, size); err != nil {
		b.Fatal(err)
	}
	if err := store.Delete(context.Background(), key); err != nil {
		b.Fatal(err)
	}
}

func reportMBs(b *testing.B, size int64) {
	b.ReportMetric(float64(size)*float64(b.N)/1e6/b.Elapsed().Seconds(), "MB/s")
}

// writeRandomArchive writes size incompressible bytes from a seeded generator (an
// encrypted archive looks like that) and returns their SHA-256.
func writeRandomArchive(b *testing.B, path string, size int64) string {
	b.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.NewChaCha8([32]byte{1}), size); err != nil {
		b.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
