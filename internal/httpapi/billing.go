package httpapi

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/billing"
)

// Billing is what the API needs of billing; *billing.Service satisfies it.
type Billing interface {
	Webhook(ctx context.Context, provider string, body io.Reader, header http.Header, query url.Values) (billing.Receipt, error)
	Checkout(ctx context.Context, req billing.CheckoutRequest) (billing.Session, error)
	BillingPortal(ctx context.Context, clientID string) (billing.Session, error)
	Cancel(ctx context.Context, subscriptionID string) (billing.Subscription, error)
	ChangeCard(ctx context.Context, subscriptionID, cardTokenID string) (billing.Subscription, error)
	Events(ctx context.Context, f billing.EventFilter) ([]billing.Event, string, error)
	Replay(ctx context.Context, id int64) (billing.Event, error)
}

var errNoBilling = apperr.New(apperr.Unavailable, "billing is not configured")

// webhook receives a payment provider's events: the provider named by the path's
// :provider, or provider for the fixed alias paths. Billing reads the body itself, under
// its own limit, so that an oversized delivery is refused and counted like any bad one.
func (s *Server) webhook(provider string) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.cfg.Billing == nil {
			return errNoBilling
		}
		name := provider
		if name == "" {
			name = c.Param("provider")
		}
		req := c.Request()
		r, err := s.cfg.Billing.Webhook(req.Context(), name, req.Body, req.Header, req.URL.Query())
		if err != nil {
			return err
		}
		status := "stored"
		if r.Duplicate {
			status = "duplicate"
		}
		return c.JSON(http.StatusOK, map[string]string{"status": status, "event_id": r.EventID})
	}
}

// skipWebhookLimit applies the API's body limit to every route but the webhooks, which
// have a smaller one of their own (see webhook).
func skipWebhookLimit(limit echo.MiddlewareFunc) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		limited := limit(next)
		return func(c echo.Context) error {
			if strings.HasPrefix(c.Path(), "/webhooks/") {
				return next(c)
			}
			return limited(c)
		}
	}
}

type checkoutJSON struct {
	ClientID string `json:"client_id"`
	Email    string `json:"email"`
	Name     string `json:"name"`
	Plan     string `json:"plan"`
	Locale   string `json:"locale"`
	Provider string `json:"provider"` // stripe (default) or mercadopago
}

type sessionJSON struct {
	ID       string `json:"id,omitempty"`
	URL      string `json:"url"`
	Provider string `json:"provider,omitempty"`
}

func (s *Server) createCheckoutSession(c echo.Context) error {
	var body checkoutJSON
	if err := decode(c, &body); err != nil {
		return err
	}
	if s.cfg.Billing == nil {
		return errNoBilling
	}
	if body.Provider == "" {
		body.Provider = billing.ProviderStripe
	}
	sess, err := s.cfg.Billing.Checkout(c.Request().Context(), billing.CheckoutRequest{
		ClientID: body.ClientID, Email: body.Email, Name: body.Name, Plan: body.Plan, Locale: body.Locale, Provider: body.Provider,
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, sessionJSON{ID: sess.ID, URL: sess.URL, Provider: body.Provider})
}

func (s *Server) createBillingPortalSession(c echo.Context) error {
	var body struct {
		ClientID string `json:"client_id"`
	}
	if err := decode(c, &body); err != nil {
		return err
	}
	if s.cfg.Billing == nil {
		return errNoBilling
	}
	sess, err := s.cfg.Billing.BillingPortal(c.Request().Context(), body.ClientID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, sessionJSON{URL: sess.URL})
}

type subscriptionJSON struct {
	ID               string     `json:"id"`
	Provider         string     `json:"provider"`
	ClientID         string     `json:"client_id"`
	Plan             string     `json:"plan"`
	Status           string     `json:"status"`
	CurrentPeriodEnd *time.Time `json:"current_period_end"`
	CanceledAt       *time.Time `json:"canceled_at"`
}

func viewSubscription(sub billing.Subscription) subscriptionJSON {
	v := subscriptionJSON{ID: sub.ID, Provider: sub.Provider, ClientID: sub.ClientID, Plan: sub.PlanID, Status: string(sub.Status),
		CanceledAt: sub.CanceledAt}
	if !sub.CurrentPeriodEnd.IsZero() {
		v.CurrentPeriodEnd = &sub.CurrentPeriodEnd
	}
	return v
}

// cancelSubscription cancels a MercadoPago subscription through its API; the state the
// answer shows is the one before the provider confirms (its notification, or our re-read).
func (s *Server) cancelSubscription(c echo.Context) error {
	if s.cfg.Billing == nil {
		return errNoBilling
	}
	sub, err := s.cfg.Billing.Cancel(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, viewSubscription(sub))
}

func (s *Server) changeSubscriptionCard(c echo.Context) error {
	var body struct {
		CardTokenID string `json:"card_token_id"`
	}
	if err := decode(c, &body); err != nil {
		return err
	}
	if s.cfg.Billing == nil {
		return errNoBilling
	}
	sub, err := s.cfg.Billing.ChangeCard(c.Request().Context(), c.Param("id"), body.CardTokenID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, viewSubscription(sub))
}

type billingEventJSON struct {
	ID              int64      `json:"id"`
	Provider        string     `json:"provider"`
	EventID         string     `json:"event_id"`
	Type            string     `json:"type"`
	Status          string     `json:"status"`
	Subscription    *string    `json:"subscription"`
	Error           string     `json:"error"`
	Detail          string     `json:"detail"`
	Attempts        int        `json:"attempts"`
	ProviderCreated *time.Time `json:"provider_created_at"`
	ReceivedAt      time.Time  `json:"received_at"`
	ProcessedAt     *time.Time `json:"processed_at"`
}

func viewBillingEvent(e billing.Event) billingEventJSON {
	v := billingEventJSON{ID: e.ID, Provider: e.Provider, EventID: e.EventID, Type: e.Type, Status: string(e.Status),
		Error: e.Error, Detail: e.Detail, Attempts: e.Attempts, ReceivedAt: e.ReceivedAt, ProcessedAt: e.ProcessedAt}
	if e.SubscriptionRef != "" {
		v.Subscription = &e.SubscriptionRef
	}
	if !e.ProviderCreated.IsZero() {
		v.ProviderCreated = &e.ProviderCreated
	}
	return v
}

func (s *Server) listBillingEvents(c echo.Context) error {
	if s.cfg.Billing == nil {
		return errNoBilling
	}
	p, err := page(c)
	if err != nil {
		return err
	}
	list, next, err := s.cfg.Billing.Events(c.Request().Context(), billing.EventFilter{
		Status: billing.EventStatus(c.QueryParam("status")), Cursor: p.Cursor, Limit: p.Limit,
	})
	if err != nil {
		return err
	}
	out := struct {
		Events     []billingEventJSON `json:"events"`
		NextCursor *string            `json:"next_cursor"`
	}{Events: make([]billingEventJSON, 0, len(list))}
	for _, e := range list {
		out.Events = append(out.Events, viewBillingEvent(e))
	}
	if next != "" {
		out.NextCursor = &next
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) replayBillingEvent(c echo.Context) error {
	if s.cfg.Billing == nil {
		return errNoBilling
	}
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id < 1 {
		return apperr.New(apperr.NotFound, "billing event not found")
	}
	e, err := s.cfg.Billing.Replay(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, viewBillingEvent(e))
}
