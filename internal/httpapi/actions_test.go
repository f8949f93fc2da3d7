package httpapi_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database/dbtest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/httpapi"
	"github.com/n8n-provisioner/n8n-provisioner/internal/instances"
	"github.com/n8n-provisioner/n8n-provisioner/internal/testlog"
)

// recordingActions answers like the instance service: the instance for a known id, a
// Conflict for a suspended one, and it records what was asked.
type recordingActions struct {
	store *instances.Store
	mu    sync.Mutex
	calls []string
}

func (r *recordingActions) act(ctx context.Context, name, id string) (instances.Instance, error) {
	in, err := r.store.Get(ctx, id)
	if err != nil {
		return in, err
	}
	if in.Status == instances.Suspended && name != "resume" {
		return in, apperr.New(apperr.Conflict, "cannot %s an instance that is suspended", name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, name+" "+id)
	return in, nil
}

func (r *recordingActions) Retry(ctx context.Context, id string) (instances.Instance, error) {
	return r.act(ctx, "retry", id)
}
func (r *recordingActions) Suspend(ctx context.Context, id string) (instances.Instance, error) {
	return r.act(ctx, "suspend", id)
}
func (r *recordingActions) Resume(ctx context.Context, id string) (instances.Instance, error) {
	return r.act(ctx, "resume", id)
}
func (r *recordingActions) Restart(ctx context.Context, id string) (instances.Instance, error) {
	return r.act(ctx, "restart", id)
}
func (r *recordingActions) Backup(ctx context.Context, id string) (instances.Instance, error) {
	return r.act(ctx, "backup", id)
}
func (r *recordingActions) Delete(ctx context.Context, id string) (instances.Instance, error) {
	return r.act(ctx, "delete", id)
}
func (r *recordingActions) Restore(ctx context.Context, id, backupID, host string) (instances.Instance, error) {
	return r.act(ctx, strings.TrimSpace("restore "+backupID+" "+host), id)
}
func (r *recordingActions) Move(ctx context.Context, id, host string) (instances.Instance, error) {
	return r.act(ctx, "move "+host, id)
}
func (r *recordingActions) Upgrade(ctx context.Context, id, image string) (instances.Instance, error) {
	if !strings.Contains(image, ":") {
		return instances.Instance{}, apperr.New(apperr.Invalid, "image must be pinned")
	}
	return r.act(ctx, "upgrade "+image, id)
}

func TestInstanceActionsAPI(t *testing.T) {
	t.Parallel()
	db := dbtest.Open(t, database.SQLite)
	e := newEnv(t, db)
	actions := &recordingActions{store: e.instances}
	logger, _ := testlog.New(t)
	e.server = httpapi.New(httpapi.Config{Instances: e.instances, Actions: actions, Hosts: e.hosts,
		AdminKey: adminKey, PortalKey: portalKey, Logger: logger})
	ids := e.seed("cus_act", 2)
	if err := e.instances.Apply(context.Background(), ids[1], map[string]any{"status": instances.Suspended}, "", ""); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		method, path, key, body string
		want                    int
	}{
		{"POST", "/v1/instances/" + ids[0] + "/restart", portalKey, "", http.StatusAccepted},
		{"POST", "/v1/instances/" + ids[0] + "/suspend", portalKey, "", http.StatusForbidden},
		{"POST", "/v1/instances/" + ids[0] + "/suspend", adminKey, "", http.StatusAccepted},
		{"POST", "/v1/instances/" + ids[1] + "/restart", adminKey, "", http.StatusConflict},
		{"POST", "/v1/instances/" + ids[1] + "/resume", adminKey, "", http.StatusAccepted},
		{"POST", "/v1/instances/" + ids[0] + "/upgrade", adminKey, `{"image":"docker.n8n.io/n8nio/n8n:2.9.0"}`, http.StatusAccepted},
		{"POST", "/v1/instances/" + ids[0] + "/upgrade", adminKey, `{"image":"n8n"}`, http.StatusBadRequest},
		{"POST", "/v1/instances/" + ids[0] + "/upgrade", adminKey, `{"img":"x"}`, http.StatusBadRequest},
		{"POST", "/v1/instances/" + ids[0] + "/backup", adminKey, "", http.StatusAccepted},
		{"POST", "/v1/instances/" + ids[0] + "/restore", adminKey, `{"backup_id":"b1"}`, http.StatusAccepted},
		{"POST", "/v1/instances/" + ids[0] + "/restore", adminKey, `{"backup":"b1"}`, http.StatusBadRequest},
		{"POST", "/v1/instances/" + ids[0] + "/restore", adminKey, `{"backup_id":"b2","host":"nuc2"}`, http.StatusAccepted},
		{"POST", "/v1/instances/" + ids[0] + "/move", adminKey, `{"host":"nuc2"}`, http.StatusAccepted},
		{"POST", "/v1/instances/" + ids[0] + "/move", adminKey, `{}`, http.StatusBadRequest},
		{"POST", "/v1/instances/" + ids[0] + "/move", portalKey, `{"host":"nuc2"}`, http.StatusForbidden},
		{"GET", "/v1/backups?status=failed", adminKey, "", http.StatusOK},
		{"GET", "/v1/backups?status=lost", adminKey, "", http.StatusBadRequest},
		{"GET", "/v1/backups?limit=0", adminKey, "", http.StatusBadRequest},
		{"GET", "/v1/backups", portalKey, "", http.StatusForbidden},
		{"GET", "/v1/instances/" + ids[0] + "/backups", adminKey, "", http.StatusOK},
		{"GET", "/v1/instances/" + ids[0] + "/backups", portalKey, "", http.StatusForbidden},
		{"POST", "/v1/instances/" + instances.NewID() + "/retry", adminKey, "", http.StatusNotFound},
		{"DELETE", "/v1/instances/" + ids[0], adminKey, "", http.StatusAccepted},
		{"DELETE", "/v1/instances/" + ids[0], portalKey, "", http.StatusForbidden},
	} {
		var body *strings.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		var res response
		if body != nil {
			res = e.do(tc.method, tc.path, tc.key, body)
		} else {
			res = e.do(tc.method, tc.path, tc.key, nil)
		}
		if res.Status != tc.want {
			t.Errorf("%s %s = %d %s, want %d", tc.method, tc.path, res.Status, res.Body, tc.want)
		}
	}
	want := []string{"restart " + ids[0], "suspend " + ids[0], "resume " + ids[1], "upgrade docker.n8n.io/n8nio/n8n:2.9.0 " + ids[0], "backup " + ids[0], "restore b1 " + ids[0],
		"restore b2 nuc2 " + ids[0], "move nuc2 " + ids[0], "delete " + ids[0]}
	if got := strings.Join(actions.calls, "\n"); got != strings.Join(want, "\n") {
		t.Errorf("actions called:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}
