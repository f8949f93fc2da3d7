package mail

import (
	"bytes"
	"embed"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"net/mail"
	"net/url"
	"strings"
	texttemplate "text/template"
	"time"
	"unicode"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
)

//go:embed templates
var templateFS embed.FS

// Template names, one .txt (subject + plain text) and one .html (the "content" block the
// layout wraps) per locale directory.
const (
	tmplCredentials   = "credentials"
	tmplSuspended     = "suspended"
	tmplPastDue       = "past_due"
	tmplResumed       = "resumed"
	tmplDeleted       = "deleted"
	tmplOperatorAlert = "operator_alert" // English only: the operator reads English logs too
)

// Suspension reasons, as the instances store records them.
const (
	ReasonBilling = "billing" // the subscription stopped paying
	ReasonManual  = "manual"  // an operator suspended the instance
)

// CredentialsData fills the email sent once an instance is ready.
type CredentialsData struct {
	To         string // recipient address
	Name       string // the client's name, may be empty
	URL        string // the instance, https://<slug>.<base-domain>
	LoginEmail string // the n8n owner login
	Password   string // the n8n owner's initial password
	// Key is optional: a stable caller key (for example the instance id) from which the
	// Message-ID derives, so that re-sending after a crash is recognised as the same email.
	Key string
}

// String describes d without the password.
func (d CredentialsData) String() string {
	return fmt.Sprintf("mail.CredentialsData{To: %q, URL: %q, LoginEmail: %q, Password: <redacted>}", d.To, d.URL, d.LoginEmail)
}

// GoString keeps %#v from printing the password.
func (d CredentialsData) GoString() string { return d.String() }

// SuspendedData fills the email sent when an instance is suspended.
type SuspendedData struct {
	To           string
	Name         string
	URL          string
	Reason       string // ReasonBilling or ReasonManual
	PortalURL    string // where a billing suspension is fixed; optional
	SupportEmail string // named in the "contact support" sentence when set; optional
	Key          string // optional stable caller key, see CredentialsData.Key
}

// PastDueData fills the warning sent while a payment is overdue but the instance still runs.
type PastDueData struct {
	To        string
	Name      string
	URL       string
	GraceEnds time.Time // when the instance will be suspended; required
	PortalURL string    // where to update the payment method; optional
	Key       string    // optional stable caller key, see CredentialsData.Key
}

// ResumedData fills the email sent when a suspended instance runs again.
type ResumedData struct {
	To   string
	Name string
	URL  string
	Key  string // optional stable caller key, see CredentialsData.Key
}

// DeletedData fills the email sent once an instance is deleted.
type DeletedData struct {
	To              string
	Name            string
	URL             string
	BackupKeptUntil time.Time // zero when no backup is kept: the sentence is left out
	SupportEmail    string    // optional
	Key             string    // optional stable caller key, see CredentialsData.Key
}

// Credentials renders the "your instance is ready" email with the URL, the login email, the
// password and the advice to change it after the first login. It returns an apperr.Invalid
// error when an address, the URL or the password is missing or malformed.
func Credentials(locale string, d CredentialsData) (Message, error) {
	if err := firstError(
		checkAddress("recipient", d.To),
		checkURL("instance URL", d.URL),
		checkAddress("login email", d.LoginEmail),
		checkRequired("password", d.Password),
	); err != nil {
		return Message{}, err
	}
	d.Name = cleanName(d.Name)
	id := idFor(tmplCredentials, d.Key, d.To, d.URL, d.LoginEmail)
	return render(locale, tmplCredentials, d.To, id, d)
}

// Suspended renders the suspension email: why (billing or manual) and how to reactivate
// (update the payment method in the portal, or contact support). It returns an
// apperr.Invalid error for a missing address or URL or an unknown reason.
func Suspended(locale string, d SuspendedData) (Message, error) {
	if err := firstError(
		checkAddress("recipient", d.To),
		checkURL("instance URL", d.URL),
		checkReason(d.Reason),
		checkOptionalURL("portal URL", d.PortalURL),
		checkOptionalAddress("support email", d.SupportEmail),
	); err != nil {
		return Message{}, err
	}
	d.Name = cleanName(d.Name)
	id := idFor(tmplSuspended, d.Key, d.To, d.URL, d.Reason)
	return render(locale, tmplSuspended, d.To, id, d)
}

// PastDueWarning renders the warning that a payment failed and when the instance will be
// suspended. It returns an apperr.Invalid error for a missing address, URL or GraceEnds.
func PastDueWarning(locale string, d PastDueData) (Message, error) {
	if err := firstError(
		checkAddress("recipient", d.To),
		checkURL("instance URL", d.URL),
		checkOptionalURL("portal URL", d.PortalURL),
	); err != nil {
		return Message{}, err
	}
	if d.GraceEnds.IsZero() {
		return Message{}, apperr.New(apperr.Invalid, "past-due warning: grace period end is required")
	}
	d.Name = cleanName(d.Name)
	id := idFor(tmplPastDue, d.Key, d.To, d.URL, d.GraceEnds.UTC().Format(time.RFC3339))
	return render(locale, tmplPastDue, d.To, id, d)
}

// Resumed renders the "your instance is back" email. It returns an apperr.Invalid error for
// a missing address or URL.
func Resumed(locale string, d ResumedData) (Message, error) {
	if err := firstError(
		checkAddress("recipient", d.To),
		checkURL("instance URL", d.URL),
	); err != nil {
		return Message{}, err
	}
	d.Name = cleanName(d.Name)
	id := idFor(tmplResumed, d.Key, d.To, d.URL)
	return render(locale, tmplResumed, d.To, id, d)
}

// Deleted renders the deletion email, with how long the backup is kept when it is. It
// returns an apperr.Invalid error for a missing address or URL.
func Deleted(locale string, d DeletedData) (Message, error) {
	if err := firstError(
		checkAddress("recipient", d.To),
		checkURL("instance URL", d.URL),
		checkOptionalAddress("support email", d.SupportEmail),
	); err != nil {
		return Message{}, err
	}
	d.Name = cleanName(d.Name)
	id := idFor(tmplDeleted, d.Key, d.To, d.URL)
	return render(locale, tmplDeleted, d.To, id, d)
}

// OperatorAlert renders a plain English alert for the operator (a failed saga, a host
// running out of room): the body verbatim as text, and in a <pre> block as HTML. Identical
// alerts share a Message-ID. It returns an apperr.Invalid error for a bad address or an
// empty subject.
func OperatorAlert(to, subject, body string) (Message, error) {
	if err := firstError(
		checkAddress("operator address", to),
		checkRequired("alert subject", subject),
	); err != nil {
		return Message{}, err
	}
	data := struct{ Subject, Body string }{Subject: oneLine(subject), Body: body}
	id := idFor(tmplOperatorAlert, "", to, subject, body)
	return render(LocaleEN, tmplOperatorAlert, to, id, data)
}

// idFor prefers the caller's key; without one the message's identifying facts stand in.
func idFor(kind, key string, facts ...string) string {
	if key != "" {
		return messageID(kind, "key", key)
	}
	return messageID(kind, append([]string{"facts"}, facts...)...)
}

// templateSet is one message's parsed templates in one locale.
type templateSet struct {
	text *texttemplate.Template // root: the body; "subject": the subject line
	html *htmltemplate.Template // "layout" wrapping this message's "content"
}

// parsed holds every template, parsed once at start-up: a broken template is a build
// defect and must fail every test, not the first customer's email. It is never written
// after init.
var parsed = mustParseTemplates(templateFS)

func mustParseTemplates(fsys fs.FS) map[string]map[string]templateSet {
	sets, err := parseTemplates(fsys)
	if err != nil {
		panic(err)
	}
	return sets
}

func parseTemplates(fsys fs.FS) (map[string]map[string]templateSet, error) {
	sets := map[string]map[string]templateSet{}
	for _, locale := range []string{LocaleEN, LocaleES} {
		funcs := templateFuncs(locale)
		layout, err := htmltemplate.New("layout").Funcs(htmltemplate.FuncMap(funcs)).ParseFS(fsys, "templates/layout.html")
		if err != nil {
			return nil, err
		}
		sets[locale] = map[string]templateSet{}
		for _, name := range []string{tmplCredentials, tmplSuspended, tmplPastDue, tmplResumed, tmplDeleted, tmplOperatorAlert} {
			if name == tmplOperatorAlert && locale != LocaleEN {
				continue
			}
			base := "templates/" + locale + "/" + name
			text, err := texttemplate.New(name+".txt").Funcs(funcs).Option("missingkey=error").ParseFS(fsys, base+".txt")
			if err != nil {
				return nil, err
			}
			if text.Lookup("subject") == nil {
				return nil, fmt.Errorf("%s.txt: no subject block", base)
			}
			html, err := layout.Clone()
			if err != nil {
				return nil, err
			}
			if html, err = html.Option("missingkey=error").ParseFS(fsys, base+".html"); err != nil {
				return nil, err
			}
			if html.Lookup("content") == nil {
				return nil, fmt.Errorf("%s.html: no content block", base)
			}
			sets[locale][name] = templateSet{text: text, html: html}
		}
	}
	return sets, nil
}

func templateFuncs(locale string) texttemplate.FuncMap {
	return texttemplate.FuncMap{
		"lang": func() string { return locale },
		"date": func(t time.Time) string { return formatDate(locale, t) },
	}
}

func render(locale, name, to, id string, data any) (Message, error) {
	set, ok := parsed[NormalizeLocale(locale)][name]
	if !ok {
		set = parsed[LocaleEN][name]
	}
	var subject, text, html bytes.Buffer
	if err := set.text.ExecuteTemplate(&subject, "subject", data); err != nil {
		return Message{}, apperr.Wrap(apperr.Internal, err, "rendering the %s email", name)
	}
	if err := set.text.Execute(&text, data); err != nil {
		return Message{}, apperr.Wrap(apperr.Internal, err, "rendering the %s email", name)
	}
	if err := set.html.ExecuteTemplate(&html, "layout", data); err != nil {
		return Message{}, apperr.Wrap(apperr.Internal, err, "rendering the %s email", name)
	}
	return Message{
		To:      to,
		Subject: oneLine(subject.String()),
		Text:    strings.TrimSpace(text.String()) + "\n",
		HTML:    html.String(),
		ID:      id,
	}, nil
}

var (
	weekdaysES = [...]string{"domingo", "lunes", "martes", "miércoles", "jueves", "viernes", "sábado"}
	monthsES   = [...]string{"enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre", "noviembre", "diciembre"}
)

// formatDate writes a deadline the way a reader of that language expects, in UTC and saying
// so: the customer's time zone is unknown, and a date without a zone is a day off for half
// of Latin America.
func formatDate(locale string, t time.Time) string {
	t = t.UTC()
	if locale == LocaleES {
		return fmt.Sprintf("%s %d de %s de %d, %02d:%02d (UTC)",
			weekdaysES[t.Weekday()], t.Day(), monthsES[t.Month()-1], t.Year(), t.Hour(), t.Minute())
	}
	return t.Format("Monday, January 2, 2006, 15:04 UTC")
}

// oneLine keeps a subject on one header line whatever the template or caller put in it.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// cleanName collapses whitespace and drops control characters so that a name cannot start
// new lines of its own in the plain-text body (a forged "Password:" line, say). HTML
// escaping is html/template's job.
func cleanName(name string) string {
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, name)
	name = oneLine(name)
	const maxRunes = 100
	if r := []rune(name); len(r) > maxRunes {
		name = string(r[:maxRunes])
	}
	return name
}

func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func checkRequired(what, v string) error {
	if strings.TrimSpace(v) == "" {
		return apperr.New(apperr.Invalid, "%s is required", what)
	}
	return nil
}

func checkAddress(what, addr string) error {
	if strings.TrimSpace(addr) == "" {
		return apperr.New(apperr.Invalid, "%s is required", what)
	}
	return checkOptionalAddress(what, addr)
}

func checkOptionalAddress(what, addr string) error {
	if addr == "" {
		return nil
	}
	if _, err := mail.ParseAddress(addr); err != nil || strings.ContainsAny(addr, "\r\n") {
		return apperr.New(apperr.Invalid, "%s %q is not a valid email address", what, addr)
	}
	return nil
}

func checkURL(what, raw string) error {
	if strings.TrimSpace(raw) == "" {
		return apperr.New(apperr.Invalid, "%s is required", what)
	}
	return checkOptionalURL(what, raw)
}

// checkOptionalURL accepts only absolute http(s) URLs: html/template would turn anything
// else in an href into "#ZgotmplZ", and the customer would get a dead link.
func checkOptionalURL(what, raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || strings.ContainsAny(raw, " \r\n") {
		return apperr.New(apperr.Invalid, "%s %q is not an http(s) URL", what, raw)
	}
	return nil
}

func checkReason(reason string) error {
	if reason != ReasonBilling && reason != ReasonManual {
		return apperr.New(apperr.Invalid, "suspension reason %q is not %q or %q", reason, ReasonBilling, ReasonManual)
	}
	return nil
}
