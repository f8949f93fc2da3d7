package objstore_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/objstore"
)

// A host's archive goes to the bucket without the host ever holding a credential: the
// provisioner starts the upload and hands out one presigned URL per part, the host PUTs
// each part with curl and reports the ETags, the provisioner completes and verifies.
func Example_presignedUpload() {
	cfg, ok, err := objstore.ConfigFromEnv(os.Getenv)
	if err != nil || !ok {
		fmt.Println("no bucket:", err)
		return
	}
	s, err := objstore.New(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	const key, size, sum = "instances/in_1/n8n-20250101T020000Z.tar.gz.age", 3 << 30, "…sha256 of the archive…"
	u, err := s.StartUpload(ctx, key, size, time.Hour)
	if err != nil {
		fmt.Println(err)
		return
	}
	var done []objstore.Done
	for _, p := range u.Parts {
		// On the host: dd bytes [p.Offset, p.Offset+p.Size) | curl -X PUT -T - -K <(url = p.URL)
		done = append(done, objstore.Done{Number: p.Number, ETag: "the ETag curl printed"})
	}
	if err := s.CompleteUpload(ctx, u, done); err != nil {
		_ = s.AbortUpload(ctx, u)
		fmt.Println(err)
		return
	}
	fmt.Println(s.Verify(ctx, key, sum, size))
}
