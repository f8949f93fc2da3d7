package billing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/database"
)

// EventStatus is where an inbox event is in its processing.
type EventStatus string

const (
	EventPending   EventStatus = "pending"   // stored, not yet processed (maybe retrying: see Error)
	EventProcessed EventStatus = "processed" // the subscription was re-read and applied
	EventIgnored   EventStatus = "ignored"   // a type (or mode) billing does not act on
	EventFailed    EventStatus = "failed"    // never retried again by itself; replay it after a fix
)

// Valid reports whether s is one of the statuses above.
func (s EventStatus) Valid() bool {
	switch s {
	case EventPending, EventProcessed, EventIgnored, EventFailed:
		return true
	}
	return false
}

// Event is one provider event in the inbox, as the operator sees it.
type Event struct {
	ID              int64
	Provider        string
	EventID         string // the provider's id (evt_...)
	Type            string
	ProviderCreated time.Time // the provider's event time
	SubscriptionRef string    // the provider subscription it is about, once known
	Status          EventStatus
	Error           string // the last processing error, kept while retrying and when failed
	Detail          string // what processing did
	Attempts        int
	ReceivedAt      time.Time
	ProcessedAt     *time.Time
}

// eventRow is a billing_events row.
type eventRow struct {
	ID                int64 `gorm:"primaryKey"`
	Provider          string
	EventID           string
	Type              string
	Payload           string
	ProviderCreatedAt *time.Time
	SubscriptionRef   string
	ReceivedAt        time.Time
	EnqueuedAt        *time.Time
	ProcessedAt       *time.Time
	Outcome           string
	Error             string
	Detail            string
	Attempts          int
}

func (eventRow) TableName() string { return "billing_events" }

func (r eventRow) event() Event {
	e := Event{ID: r.ID, Provider: r.Provider, EventID: r.EventID, Type: r.Type, SubscriptionRef: r.SubscriptionRef,
		Error: r.Error, Detail: r.Detail, Attempts: r.Attempts, ReceivedAt: r.ReceivedAt.UTC(), ProcessedAt: utcPtr(r.ProcessedAt),
		Status: EventPending}
	if r.ProviderCreatedAt != nil {
		e.ProviderCreated = r.ProviderCreatedAt.UTC()
	}
	if r.ProcessedAt != nil {
		e.Status = EventStatus(r.Outcome)
	}
	return e
}

// subscriptionRow is a subscriptions row.
type subscriptionRow struct {
	ID                     string `gorm:"primaryKey"`
	ClientID               string
	ClientEmail            string
	ClientName             string
	ClientLocale           string
	Provider               string
	ProviderCustomerID     string
	ProviderSubscriptionID string
	PlanID                 string
	Status                 string
	StatusSince            time.Time
	CurrentPeriodEnd       *time.Time
	CanceledAt             *time.Time
	ProviderUpdatedAt      time.Time
	FetchedAt              time.Time
	CreatedAt              time.Time
	UpdatedAt              time.Time
}

func (subscriptionRow) TableName() string { return "subscriptions" }

func (r subscriptionRow) subscription() Subscription {
	s := Subscription{ID: r.ID, Provider: r.Provider, ProviderSubscriptionID: r.ProviderSubscriptionID,
		ProviderCustomerID: r.ProviderCustomerID, ClientID: r.ClientID, Email: r.ClientEmail, Name: r.ClientName,
		Locale: r.ClientLocale, PlanID: r.PlanID, Status: Status(r.Status), StatusSince: r.StatusSince.UTC(),
		CanceledAt: utcPtr(r.CanceledAt), ProviderUpdatedAt: r.ProviderUpdatedAt.UTC()}
	if r.CurrentPeriodEnd != nil {
		s.CurrentPeriodEnd = r.CurrentPeriodEnd.UTC()
	}
	return s
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// store keeps the inbox and the subscriptions.
type store struct {
	db      *gorm.DB
	dialect database.Dialect
	now     func() time.Time
	insert  string // the inbox insert, in the dialect's placeholders
	// writes serialises this process's hot writes on SQLite (inbox inserts, the
	// dispatcher's job inserts), which has one writer: waiting here is a handoff, while
	// waiting in SQLite's busy handler is a sleep of up to 100 ms, which made the p99 of
	// concurrent webhooks 180 ms.
	writes sync.Mutex
}

// serialise takes the SQLite write lock and returns its release; on PostgreSQL, nothing.
func (s *store) serialise() func() {
	if s.dialect != database.SQLite {
		return func() {}
	}
	s.writes.Lock()
	return s.writes.Unlock
}

func newStore(db *gorm.DB, now func() time.Time) *store {
	s := &store{db: db, now: func() time.Time { return now().UTC() }, dialect: database.SQLite}
	if db.Dialector.Name() == "postgres" {
		s.dialect = database.Postgres
	}
	s.insert = `INSERT INTO billing_events (provider, event_id, type, payload, provider_created_at, received_at)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (provider, event_id) DO NOTHING RETURNING id`
	if s.dialect == database.Postgres {
		s.insert = `INSERT INTO billing_events (provider, event_id, type, payload, provider_created_at, received_at)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (provider, event_id) DO NOTHING RETURNING id`
	}
	return s
}

// addEvent stores a verified event once. It returns the row id and whether this call
// stored it (false: the provider and event id were already there).
func (s *store) addEvent(ctx context.Context, provider string, in inbound, payload []byte) (int64, bool, error) {
	sqlDB, err := s.db.DB()
	if err != nil {
		return 0, false, err
	}
	// One statement, straight on database/sql: this is the webhook's whole cost, and
	// ON CONFLICT DO NOTHING makes concurrent redeliveries race safely.
	defer s.serialise()()
	var id int64
	err = sqlDB.QueryRowContext(ctx, s.insert, provider, in.ID, in.Type, string(payload), in.Created.UTC(), s.now()).Scan(&id)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, false, nil
	case err != nil:
		return 0, false, apperr.Wrap(apperr.Unavailable, err, "the event could not be stored; the provider will deliver it again")
	}
	return id, true, nil
}

func (s *store) event(ctx context.Context, id int64) (eventRow, error) {
	var r eventRow
	err := s.db.WithContext(ctx).Where("id = ?", id).Take(&r).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return r, apperr.New(apperr.NotFound, "billing event %d not found", id)
	}
	return r, err
}

// EventFilter narrows the operator's list of events.
type EventFilter struct {
	Status EventStatus // empty: every event
	Cursor string      // the last id of the previous page
	Limit  int         // 1 to MaxPageSize; 0 means DefaultPageSize
}

// Page sizes of the events list, the same as the instances list.
const (
	DefaultPageSize = 50
	MaxPageSize     = 200
)

func (s *store) listEvents(ctx context.Context, f EventFilter) ([]Event, string, error) {
	switch {
	case f.Limit == 0:
		f.Limit = DefaultPageSize
	case f.Limit < 0 || f.Limit > MaxPageSize:
		return nil, "", apperr.New(apperr.Invalid, "limit must be between 1 and %d", MaxPageSize)
	}
	if f.Status != "" && !f.Status.Valid() {
		return nil, "", apperr.New(apperr.Invalid, "status must be pending, processed, ignored or failed")
	}
	q := s.db.WithContext(ctx).Model(&eventRow{}).Omit("payload")
	if f.Cursor != "" {
		after, err := strconv.ParseInt(f.Cursor, 10, 64)
		if err != nil || after < 0 {
			return nil, "", apperr.New(apperr.Invalid, "cursor is not valid")
		}
		q = q.Where("id > ?", after)
	}
	// Literal conditions, so that the partial indexes (pending, failed) are usable by
	// any plan; the status is one of four known words.
	switch f.Status {
	case EventPending:
		q = q.Where("processed_at IS NULL")
	case EventFailed:
		q = q.Where("outcome = 'failed' AND processed_at IS NOT NULL")
	case EventProcessed:
		q = q.Where("outcome = 'processed' AND processed_at IS NOT NULL")
	case EventIgnored:
		q = q.Where("outcome = 'ignored' AND processed_at IS NOT NULL")
	}
	var rows []eventRow
	if err := q.Order("id").Limit(f.Limit + 1).Find(&rows).Error; err != nil {
		return nil, "", err
	}
	next := ""
	if len(rows) > f.Limit {
		rows = rows[:f.Limit]
		next = strconv.FormatInt(rows[len(rows)-1].ID, 10)
	}
	out := make([]Event, 0, len(rows))
	for _, r := range rows {
		out = append(out, r.event())
	}
	return out, next, nil
}

// undispatched returns up to limit ids of events stored but never enqueued.
func (s *store) undispatched(ctx context.Context, limit int) ([]int64, error) {
	var ids []int64
	err := s.db.WithContext(ctx).Model(&eventRow{}).Where("enqueued_at IS NULL AND processed_at IS NULL").
		Order("id").Limit(limit).Pluck("id", &ids).Error
	return ids, err
}

// stale returns up to limit ids of unprocessed events that were never enqueued and are
// older than grace (their dispatcher died), or were enqueued before staleBefore (their job
// may be gone).
func (s *store) stale(ctx context.Context, grace, staleAfter time.Duration, limit int) ([]int64, error) {
	now := s.now()
	var ids []int64
	err := s.db.WithContext(ctx).Model(&eventRow{}).
		Where("processed_at IS NULL AND ((enqueued_at IS NULL AND received_at < ?) OR enqueued_at < ?)", now.Add(-grace), now.Add(-staleAfter)).
		Order("id").Limit(limit).Pluck("id", &ids).Error
	return ids, err
}

func (s *store) markEnqueued(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	defer s.serialise()()
	return s.db.WithContext(ctx).Model(&eventRow{}).Where("id IN ? AND processed_at IS NULL", ids).
		Update("enqueued_at", s.now()).Error
}

// resetForReplay makes a finished event pending again.
func (s *store) resetForReplay(ctx context.Context, id int64) error {
	res := s.db.WithContext(ctx).Model(&eventRow{}).Where("id = ?", id).Updates(map[string]any{
		"processed_at": nil, "outcome": "", "enqueued_at": nil, "detail": "replay requested by the operator",
	})
	if res.Error != nil {
		return res.Error
	}
	if res.RowsAffected == 0 {
		return apperr.New(apperr.NotFound, "billing event %d not found", id)
	}
	return nil
}

// startAttempt counts an attempt at processing the event.
func (s *store) startAttempt(ctx context.Context, id int64) error {
	return s.db.WithContext(ctx).Model(&eventRow{}).Where("id = ?", id).
		Update("attempts", gorm.Expr("attempts + 1")).Error
}

// recordError keeps the last error of an event that will be retried.
func (s *store) recordError(ctx context.Context, id int64, subRef, msg string) error {
	return s.db.WithContext(ctx).Model(&eventRow{}).Where("id = ? AND processed_at IS NULL", id).
		Updates(map[string]any{"error": msg, "subscription_ref": subRef}).Error
}

// finish records the final outcome of an event.
func (s *store) finish(ctx context.Context, id int64, outcome EventStatus, subRef, errMsg, detail string) error {
	return s.db.WithContext(ctx).Model(&eventRow{}).Where("id = ?", id).Updates(map[string]any{
		"processed_at": s.now(), "outcome": string(outcome), "error": errMsg, "detail": detail, "subscription_ref": subRef,
	}).Error
}

// snapshot is a subscription's state as just read from the provider, with what the event
// taught us about whose it is.
type snapshot struct {
	Provider               string
	ProviderSubscriptionID string
	ProviderCustomerID     string
	PlanID                 string
	Status                 Status
	CurrentPeriodEnd       time.Time
	CanceledAt             *time.Time
	Attribution            attribution
	// EventCreated is the provider time of the event that caused the read; FetchedAt is
	// when the read began (our clock). Together they order reads of one subscription.
	EventCreated time.Time
	FetchedAt    time.Time
}

// attribution is who a subscription belongs to, as far as one event and one read tell.
type attribution struct {
	ClientID, Email, Name, Locale string
}

// applyResult says what apply did.
type applyResult struct {
	Sub          Subscription
	StateApplied bool // the read was not older than the stored state, so it replaced it
	Attributed   bool // the client became known with this event
	Conflict     string
}

// apply stores a read of a subscription unless the stored state comes from a newer read,
// and fills in the client's details when they were unknown. A read is newer when its
// event is newer, or, for events of the same second, when it was fetched later: reads of
// concurrent jobs can finish out of order, but an event is always re-read after it was
// created, so this never replaces a state by an older one for long.
func (s *store) apply(ctx context.Context, snap snapshot) (applyResult, error) {
	for attempt := 0; ; attempt++ {
		res, err := s.applyOnce(ctx, snap)
		// Two jobs can both find no row and both insert: the loser reads the winner's.
		if database.IsUniqueViolation(err) && attempt == 0 {
			continue
		}
		return res, err
	}
}

func (s *store) applyOnce(ctx context.Context, snap snapshot) (applyResult, error) {
	var res applyResult
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var row subscriptionRow
		q := tx.Where("provider = ? AND provider_subscription_id = ?", snap.Provider, snap.ProviderSubscriptionID)
		if s.dialect == database.Postgres {
			q = q.Clauses(clause.Locking{Strength: "UPDATE"})
		}
		err := q.Take(&row).Error
		now := s.now()
		if errors.Is(err, gorm.ErrRecordNotFound) {
			row = subscriptionRow{ID: uuid.Must(uuid.NewV7()).String(), Provider: snap.Provider,
				ProviderSubscriptionID: snap.ProviderSubscriptionID, CreatedAt: now}
			setState(&row, snap)
			row.StatusSince = snap.EventCreated
			merge(&row, snap.Attribution, &res)
			row.UpdatedAt = now
			res.StateApplied = true
			res.Sub = row.subscription()
			return tx.Create(&row).Error
		}
		if err != nil {
			return err
		}
		if newer(snap, row) {
			if Status(row.Status) != snap.Status {
				row.StatusSince = snap.EventCreated
			}
			setState(&row, snap)
			res.StateApplied = true
		}
		merge(&row, snap.Attribution, &res)
		row.UpdatedAt = now
		res.Sub = row.subscription()
		return tx.Save(&row).Error
	})
	return res, err
}

func newer(snap snapshot, row subscriptionRow) bool {
	switch {
	case snap.EventCreated.After(row.ProviderUpdatedAt):
		return true
	case snap.EventCreated.Before(row.ProviderUpdatedAt):
		return false
	}
	return !snap.FetchedAt.Before(row.FetchedAt)
}

func setState(row *subscriptionRow, snap snapshot) {
	row.ProviderCustomerID = snap.ProviderCustomerID
	row.PlanID = snap.PlanID
	row.Status = string(snap.Status)
	row.CurrentPeriodEnd = nil
	if !snap.CurrentPeriodEnd.IsZero() {
		end := snap.CurrentPeriodEnd.UTC()
		row.CurrentPeriodEnd = &end
	}
	row.CanceledAt = utcPtr(snap.CanceledAt)
	row.ProviderUpdatedAt = snap.EventCreated.UTC()
	row.FetchedAt = snap.FetchedAt.UTC()
}

// merge fills the client's details the row lacks. A client id, once known, never
// changes: a different one is reported, not applied.
func merge(row *subscriptionRow, a attribution, res *applyResult) {
	switch {
	case a.ClientID == "":
	case row.ClientID == "":
		row.ClientID, res.Attributed = a.ClientID, true
	case row.ClientID != a.ClientID:
		res.Conflict = fmt.Sprintf("the event names client %q but the subscription belongs to %q; kept %q", a.ClientID, row.ClientID, row.ClientID)
		return
	}
	if row.ClientEmail == "" {
		row.ClientEmail = a.Email
	}
	if row.ClientName == "" {
		row.ClientName = a.Name
	}
	if row.ClientLocale == "" {
		row.ClientLocale = a.Locale
	}
}

// subscription returns the stored subscription with our id, or NotFound.
func (s *store) subscription(ctx context.Context, id string) (Subscription, error) {
	var r subscriptionRow
	err := s.db.WithContext(ctx).Where("id = ?", id).Take(&r).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return Subscription{}, apperr.New(apperr.NotFound, "subscription not found")
	}
	return r.subscription(), err
}

// customerOf returns the provider customer id of the client's most recently updated
// subscription with one, or NotFound.
func (s *store) customerOf(ctx context.Context, provider, clientID string) (string, error) {
	var r subscriptionRow
	err := s.db.WithContext(ctx).Where("client_id = ? AND provider = ? AND provider_customer_id <> ''", clientID, provider).
		Order("updated_at DESC").Take(&r).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return "", apperr.New(apperr.NotFound, "no %s customer is known for client %s: the client has not completed a checkout", provider, clientID)
	}
	return r.ProviderCustomerID, err
}
