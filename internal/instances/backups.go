package instances

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"filippo.io/age"
	"github.com/riverqueue/river"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/queue"
)

// Backups: n8nctl archives an instance's data on its host, encrypted there with an age
// identity of the archive's own (the host is given only the public half), and uploads it
// to the bucket through presigned URLs; the provisioner then reads the object back and
// checks its SHA-256. The identity is sealed under the master key in the backup's row.

// backupResult is what `n8nctl backup` prints.
type backupResult struct {
	Path      string    `json:"path"`
	Name      string    `json:"name"`
	SHA256    string    `json:"sha256"`
	Bytes     int64     `json:"bytes"`
	Encrypted bool      `json:"encrypted"`
	CreatedAt time.Time `json:"created_at"`
}

// dataKey is a fresh archive's age identity: the recipient goes to the host, the sealed
// identity into the backup's row.
type dataKey struct {
	recipient, sealed string
}

func (s *Service) newDataKey(backupID string) (dataKey, error) {
	key, _, err := s.newDataKeyPair(backupID)
	return key, err
}

// newDataKeyPair also returns the identity itself, for an upgrade, whose rollback
// decrypts the archive it has just taken.
func (s *Service) newDataKeyPair(backupID string) (dataKey, string, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return dataKey{}, "", err
	}
	sealed, err := s.cfg.Keys.Seal(id.String(), backupSealContext(backupID))
	if err != nil {
		return dataKey{}, "", err
	}
	return dataKey{recipient: id.Recipient().String(), sealed: sealed}, id.String(), nil
}

// upgradeResult is the part of `n8nctl upgrade`'s output about its pre-upgrade archive.
type upgradeResult struct {
	Backup          string    `json:"backup"`
	BackupName      string    `json:"backup_name"`
	BackupSHA256    string    `json:"backup_sha256"`
	BackupBytes     int64     `json:"backup_bytes"`
	BackupCreatedAt time.Time `json:"backup_created_at"`
}

// recordUpgradeBackup records the archive an upgrade took before it changed the image,
// like any other backup.
func (s *Service) recordUpgradeBackup(ctx context.Context, in *Instance, b Backup, key dataKey, raw []byte) error {
	var res upgradeResult
	if err := json.Unmarshal(raw, &res); err != nil {
		return fmt.Errorf("reading n8nctl upgrade output: %v", err)
	}
	if res.Backup == "" {
		return nil // the image was already the one asked for: no archive was taken
	}
	b.Path, b.Name, b.SHA256, b.Bytes, b.DataKeySealed, b.CreatedAt = res.Backup, res.BackupName, res.BackupSHA256, res.BackupBytes, key.sealed, s.now()
	return s.recordBackup(ctx, in, b)
}

func backupSealContext(backupID string) string { return "backup/" + backupID + "/data_key" }

// openDataKey returns the archive's age identity, or "" for an archive taken before
// encryption.
func (s *Service) openDataKey(b Backup) (string, error) {
	if b.DataKeySealed == "" {
		return "", nil
	}
	return s.cfg.Keys.Open(b.DataKeySealed, backupSealContext(b.ID))
}

// backup takes an archive of the instance's data on host and records it; the upload to
// the bucket follows as a job of its own, so a bucket that is down never fails the action
// that asked for the backup (a deletion's final backup, say).
func (s *Service) backup(ctx context.Context, in *Instance, host Host, reason string) (Backup, error) {
	b := Backup{ID: NewID(), InstanceID: in.ID, Host: host.Name, N8nImage: in.N8nImage,
		EncryptionKeySealed: in.EncryptionKeySealed, Reason: reason, Status: BackupLocal, OnHost: true}
	key, err := s.newDataKey(b.ID)
	if err != nil {
		return Backup{}, err
	}
	raw, err := s.cfg.Agent.Run(ctx, host.Node, host.VMID, "backup", in.Slug, map[string]string{"RECIPIENT": key.recipient})
	if err != nil {
		return Backup{}, err
	}
	var res backupResult
	if err := json.Unmarshal(raw, &res); err != nil || res.Path == "" || !res.Encrypted {
		return Backup{}, fmt.Errorf("reading n8nctl backup output: %v (encrypted: %v)", err, res.Encrypted)
	}
	b.Path, b.Name, b.SHA256, b.Bytes, b.DataKeySealed = res.Path, res.Name, res.SHA256, res.Bytes, key.sealed
	b.CreatedAt = s.now()
	if reason == "final" {
		expires := s.now().Add(s.cfg.Retention)
		b.ExpiresAt = &expires
	}
	return b, s.recordBackup(ctx, in, b)
}

// recordBackup stores a backup taken on a host and queues its upload.
func (s *Service) recordBackup(ctx context.Context, in *Instance, b Backup) error {
	if err := s.store.AddBackup(ctx, b); err != nil {
		return err
	}
	if err := s.enqueueUpload(ctx, b.ID); err != nil {
		return err
	}
	return s.store.Apply(ctx, in.ID, nil, "backup", fmt.Sprintf("%s backup %s taken on %s (%d bytes, sha256 %s)", b.Reason, b.Name, b.Host, b.Bytes, b.SHA256))
}

// BackupUploadArgs copies one archive from its host to the bucket.
type BackupUploadArgs struct {
	BackupID string `json:"backup_id" river:"unique"`
}

// Kind names the job.
func (BackupUploadArgs) Kind() string { return "backup_upload" }

func (s *Service) enqueueUpload(ctx context.Context, backupID string) error {
	if s.cfg.Bucket == nil {
		return nil
	}
	_, err := s.cfg.Queue.Insert(ctx, BackupUploadArgs{BackupID: backupID}, &river.InsertOpts{MaxAttempts: actionAttempts, UniqueOpts: uniqueWhileQueued})
	return err
}

type uploadWorker struct {
	river.WorkerDefaults[BackupUploadArgs]
	s *Service
}

func (w *uploadWorker) Timeout(*river.Job[BackupUploadArgs]) time.Duration { return w.s.cfg.JobTimeout }

func (w *uploadWorker) NextRetry(job *river.Job[BackupUploadArgs]) time.Time {
	return w.s.now().Add(queue.Backoff(job.Attempt))
}

func (w *uploadWorker) Work(ctx context.Context, job *river.Job[BackupUploadArgs]) error {
	s := w.s
	b, err := s.store.Backup(ctx, job.Args.BackupID)
	if err != nil || b.Status != BackupLocal || !b.OnHost {
		return err
	}
	host, err := s.cfg.Placer.Host(ctx, b.Host)
	if err != nil {
		return river.JobCancel(err)
	}
	in, err := s.store.Get(ctx, b.InstanceID)
	if err != nil {
		return err
	}
	if err := s.upload(ctx, &b, in.Slug, host); err != nil {
		return s.uploadFailed(ctx, job, b, err)
	}
	return nil
}

// uploadFailed keeps retrying on the capped backoff for the upload deadline, tells the
// operator once the failure has lasted, and finally marks the backup failed. The archive
// stays on its host whatever happens: the pruner never removes an archive the bucket
// does not hold.
func (s *Service) uploadFailed(ctx context.Context, job *river.Job[BackupUploadArgs], b Backup, err error) error {
	failingFor := s.now().Sub(job.CreatedAt)
	s.store.UpdateBackup(ctx, b.ID, map[string]any{"error": apperr.Message(err)})
	if failingFor >= s.cfg.Backups.UploadDeadline || apperr.Is(err, apperr.Invalid) {
		s.store.UpdateBackup(ctx, b.ID, map[string]any{"status": BackupFailed})
		s.alert(ctx, "Backup upload failed: %s of instance %s gave up after %s; the archive stays on %s: %s",
			b.Name, b.InstanceID, failingFor.Round(time.Second), b.Host, err.Error())
		return river.JobCancel(err)
	}
	if failingFor >= s.cfg.AlertAfter {
		s.alertThrottled(ctx, "upload-"+b.ID, "Backup upload failing: %s of instance %s for %s (attempt %d); the archive stays on %s: %s",
			b.Name, b.InstanceID, failingFor.Round(time.Second), job.Attempt, b.Host, apperr.Message(err))
	}
	return err
}

// uploadResult is what `n8nctl upload` prints.
type uploadResult struct {
	SHA256 string         `json:"sha256"`
	Bytes  int64          `json:"bytes"`
	Parts  []UploadedPart `json:"parts"`
}

// upload copies b from host to the bucket and verifies it there.
func (s *Service) upload(ctx context.Context, b *Backup, slug string, host Host) error {
	if s.cfg.Bucket == nil {
		return apperr.New(apperr.Invalid, "no bucket is configured (PROVISIONER_BACKUP_S3_BUCKET)")
	}
	key := objectKey(*b)
	u, err := s.cfg.Bucket.StartUpload(ctx, key, b.Bytes)
	if err != nil {
		return apperr.Wrap(apperr.Unavailable, err, "the bucket refused the upload")
	}
	settings := map[string]string{"ARCHIVE": b.Name, "PARTS": fmt.Sprint(len(u.Parts))}
	for _, p := range u.Parts {
		n := fmt.Sprint(p.Number)
		settings["PART_"+n+"_URL"], settings["PART_"+n+"_OFFSET"], settings["PART_"+n+"_SIZE"] = p.URL, fmt.Sprint(p.Offset), fmt.Sprint(p.Size)
	}
	raw, err := s.cfg.Agent.Run(ctx, host.Node, host.VMID, "upload", slug, settings)
	if err != nil {
		s.cfg.Bucket.AbortUpload(ctx, u)
		return err
	}
	var res uploadResult
	if err := json.Unmarshal(raw, &res); err != nil || res.SHA256 != b.SHA256 {
		s.cfg.Bucket.AbortUpload(ctx, u)
		return fmt.Errorf("n8nctl upload reported sha256 %q for %s, recorded %s (%v)", res.SHA256, b.Name, b.SHA256, err)
	}
	if err := s.cfg.Bucket.CompleteUpload(ctx, u, res.Parts); err != nil {
		s.cfg.Bucket.AbortUpload(ctx, u)
		return apperr.Wrap(apperr.Unavailable, err, "completing the upload of %s failed", b.Name)
	}
	if err := s.cfg.Bucket.Verify(ctx, key, b.SHA256, b.Bytes); err != nil {
		s.cfg.Bucket.Delete(ctx, key)
		return apperr.Wrap(apperr.Unavailable, err, "the uploaded %s does not match its archive", b.Name)
	}
	now := s.now()
	b.Status, b.ObjectKey, b.UploadedAt, b.Error = BackupUploaded, key, &now, ""
	if err := s.store.UpdateBackup(ctx, b.ID, map[string]any{"status": b.Status, "object_key": key, "uploaded_at": now, "error": ""}); err != nil {
		return err
	}
	return s.store.Apply(ctx, b.InstanceID, nil, "backup_uploaded", fmt.Sprintf("backup %s uploaded to the bucket and verified (%d bytes)", b.Name, b.Bytes))
}

// objectKey is where a backup lives in the bucket: by instance, so that one customer's
// archives list together.
func objectKey(b Backup) string { return "instances/" + b.InstanceID + "/" + b.Name }

// restoreOn puts backup b's data into the instance's container on host: from the archive
// on that host when it is there, else downloaded from the bucket first. n8nctl checks the
// archive's SHA-256 against our record and decrypts it before it touches anything, and
// leaves the container running or stopped as it found it.
func (s *Service) restoreOn(ctx context.Context, in *Instance, host Host, b Backup) error {
	path, err := s.archiveOn(ctx, in, host, b)
	if err != nil {
		return err
	}
	identity, err := s.openDataKey(b)
	if err != nil {
		return err
	}
	settings := map[string]string{"BACKUP": path, "SHA256": b.SHA256}
	if identity != "" {
		settings["IDENTITY"] = identity
	}
	_, err = s.cfg.Agent.Run(ctx, host.Node, host.VMID, "restore", in.Slug, settings)
	return err
}

// fetchResult is what `n8nctl fetch` prints.
type fetchResult struct {
	Path       string `json:"path"`
	Downloaded bool   `json:"downloaded"`
}

// archiveOn returns the path of b's archive on host, downloading it from the bucket when
// the host does not hold it.
func (s *Service) archiveOn(ctx context.Context, in *Instance, host Host, b Backup) (string, error) {
	if b.Status == BackupPruned {
		return "", apperr.New(apperr.Invalid, "backup %s was pruned by retention", b.ID)
	}
	if b.OnHost && b.Host == host.Name {
		return b.Path, nil
	}
	if b.ObjectKey == "" || s.cfg.Bucket == nil {
		return "", apperr.New(apperr.Invalid, "backup %s is only on host %s, and not in the bucket", b.ID, b.Host)
	}
	url, err := s.cfg.Bucket.PresignGet(ctx, b.ObjectKey)
	if err != nil {
		return "", apperr.Wrap(apperr.Unavailable, err, "the bucket cannot sign a download of %s", b.Name)
	}
	raw, err := s.cfg.Agent.Run(ctx, host.Node, host.VMID, "fetch", in.Slug, map[string]string{
		"NAME": b.Name, "URL": url, "SHA256": b.SHA256, "BYTES": fmt.Sprint(b.Bytes),
		"IMAGE": b.N8nImage, "CREATED_AT": b.CreatedAt.UTC().Format(time.RFC3339)})
	if err != nil {
		return "", err
	}
	var res fetchResult
	if err := json.Unmarshal(raw, &res); err != nil || res.Path == "" {
		return "", fmt.Errorf("reading n8nctl fetch output: %v", err)
	}
	// The copy on this host is the one to restore from again, and to prune later.
	if err := s.store.UpdateBackup(ctx, b.ID, map[string]any{"host": host.Name, "path": res.Path, "on_host": true}); err != nil {
		return "", err
	}
	if res.Downloaded {
		s.store.Apply(ctx, in.ID, nil, "backup_fetched", fmt.Sprintf("backup %s downloaded from the bucket to %s", b.Name, host.Name))
	}
	return res.Path, nil
}
