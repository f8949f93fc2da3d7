package mail_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/n8n-provisioner/n8n-provisioner/internal/mail"
)

// A worker renders the credentials email in the client's locale and hands it to whichever
// sender is configured: here the outbox, the default when no SMTP server is set.
func Example() {
	dir, err := os.MkdirTemp("", "outbox")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	m, err := mail.Credentials("es-AR", mail.CredentialsData{
		To:         "ana@example.com",
		Name:       "Ana",
		URL:        "https://ana.n8n.example.com",
		LoginEmail: "ana@example.com",
		Password:   "Xk9-pQ2v",
		Key:        "inst_42", // the same key on a re-run gives the same Message-ID
	})
	if err != nil {
		panic(err)
	}
	outbox := mail.NewOutbox(dir, "n8n Cloud <noreply@example.com>")
	for range 2 { // a crash and a retry: still one email
		if err := outbox.Send(context.Background(), m); err != nil {
			panic(err)
		}
	}

	files, _ := filepath.Glob(filepath.Join(dir, "*.eml"))
	fmt.Println(m.Subject)
	fmt.Println(strings.Contains(m.Text, "Cambie su contraseña después del primer inicio de sesión"))
	fmt.Println(len(files), "file")
	// Output:
	// Su instancia de n8n está lista
	// true
	// 1 file
}
