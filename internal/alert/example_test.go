package alert_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/n8n-provisioner/n8n-provisioner/internal/alert"
)

// An alert posted to an ntfy server's root: the topic comes from the URL's query.
func ExampleWebhook_Send() {
	ntfy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var msg struct{ Topic, Title, Message string }
		json.NewDecoder(r.Body).Decode(&msg)
		fmt.Printf("%s %s: %s | %s\n", r.Method, r.URL.Path, msg.Topic, msg.Title)
	}))
	defer ntfy.Close()

	hook, err := alert.New(alert.Config{URL: ntfy.URL + "/?topic=ops-alerts"})
	if err != nil {
		panic(err)
	}
	if err := hook.Send(context.Background(), "No host has room", "instance 42 waits in pending"); err != nil {
		panic(err)
	}
	// Output: POST /: ops-alerts | No host has room
}
