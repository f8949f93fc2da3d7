package mail_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/apperr"
	"github.com/n8n-provisioner/n8n-provisioner/internal/mail"
)

var grace = time.Date(2026, 3, 4, 15, 0, 0, 0, time.UTC)

func TestNormalizeLocale(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"es", "es"},
		{"es-AR", "es"},
		{"es_MX", "es"},
		{"ES-419", "es"},
		{" es ", "es"},
		{"en", "en"},
		{"en-GB", "en"},
		{"pt-BR", "en"},
		{"fr", "en"},
		{"", "en"},
		{"spanish", "en"},
	}
	for _, tt := range tests {
		if got := mail.NormalizeLocale(tt.in); got != tt.want {
			t.Errorf("NormalizeLocale(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// rendered is one builder call and the facts its text and HTML must both state.
type rendered struct {
	name  string
	build func(locale string) (mail.Message, error)
	facts map[string][]string // locale → facts
}

func allTemplates() []rendered {
	return []rendered{
		{
			name: "credentials",
			build: func(l string) (mail.Message, error) {
				return mail.Credentials(l, mail.CredentialsData{To: "ana@example.com", Name: "Ana", URL: "https://ana.n8n.example.com", LoginEmail: "ana@example.com", Password: "Xk9-pQ2v"})
			},
			facts: map[string][]string{
				"en": {"https://ana.n8n.example.com", "ana@example.com", "Xk9-pQ2v", "Change your password after the first login"},
				"es": {"https://ana.n8n.example.com", "ana@example.com", "Xk9-pQ2v", "Cambie su contraseña después del primer inicio de sesión"},
			},
		},
		{
			name: "suspended billing",
			build: func(l string) (mail.Message, error) {
				return mail.Suspended(l, mail.SuspendedData{To: "ana@example.com", Name: "Ana", URL: "https://ana.n8n.example.com", Reason: mail.ReasonBilling, PortalURL: "https://billing.example.com/p/session_1"})
			},
			facts: map[string][]string{
				"en": {"https://ana.n8n.example.com", "suspended", "could not collect the payment", "update your payment method", "https://billing.example.com/p/session_1"},
				"es": {"https://ana.n8n.example.com", "suspendida", "no pudimos cobrar el pago", "actualice su método de pago", "https://billing.example.com/p/session_1"},
			},
		},
		{
			name: "suspended manual",
			build: func(l string) (mail.Message, error) {
				return mail.Suspended(l, mail.SuspendedData{To: "ana@example.com", URL: "https://ana.n8n.example.com", Reason: mail.ReasonManual, SupportEmail: "help@example.com"})
			},
			facts: map[string][]string{
				"en": {"https://ana.n8n.example.com", "our team suspended it", "contact support", "help@example.com"},
				"es": {"https://ana.n8n.example.com", "nuestro equipo la suspendió", "comuníquese con soporte", "help@example.com"},
			},
		},
		{
			name: "past due",
			build: func(l string) (mail.Message, error) {
				return mail.PastDueWarning(l, mail.PastDueData{To: "ana@example.com", Name: "Ana", URL: "https://ana.n8n.example.com", GraceEnds: grace, PortalURL: "https://billing.example.com/p/session_2"})
			},
			facts: map[string][]string{
				"en": {"https://ana.n8n.example.com", "Wednesday, March 4, 2026, 15:00 UTC", "https://billing.example.com/p/session_2", "payment method"},
				"es": {"https://ana.n8n.example.com", "miércoles 4 de marzo de 2026, 15:00 (UTC)", "https://billing.example.com/p/session_2", "método de pago"},
			},
		},
		{
			name: "resumed",
			build: func(l string) (mail.Message, error) {
				return mail.Resumed(l, mail.ResumedData{To: "ana@example.com", Name: "Ana", URL: "https://ana.n8n.example.com"})
			},
			facts: map[string][]string{
				"en": {"https://ana.n8n.example.com", "running again"},
				"es": {"https://ana.n8n.example.com", "funcionando de nuevo"},
			},
		},
		{
			name: "deleted",
			build: func(l string) (mail.Message, error) {
				return mail.Deleted(l, mail.DeletedData{To: "ana@example.com", Name: "Ana", URL: "https://ana.n8n.example.com", BackupKeptUntil: grace})
			},
			facts: map[string][]string{
				"en": {"https://ana.n8n.example.com", "deleted", "backup", "Wednesday, March 4, 2026, 15:00 UTC"},
				"es": {"https://ana.n8n.example.com", "eliminada", "copia de seguridad", "miércoles 4 de marzo de 2026, 15:00 (UTC)"},
			},
		},
	}
}

func TestTemplatesStateTheFacts(t *testing.T) {
	t.Parallel()
	for _, tmpl := range allTemplates() {
		subjects := map[string]string{}
		for _, locale := range []string{"en", "es"} {
			t.Run(tmpl.name+"/"+locale, func(t *testing.T) {
				t.Parallel()
				m, err := tmpl.build(locale)
				if err != nil {
					t.Fatalf("build: %v", err)
				}
				if m.To != "ana@example.com" || m.Subject == "" || m.Text == "" || m.ID == "" {
					t.Fatalf("incomplete message: %v", m)
				}
				if strings.ContainsAny(m.Subject, "\r\n") {
					t.Errorf("subject spans lines: %q", m.Subject)
				}
				for _, fact := range tmpl.facts[locale] {
					if !strings.Contains(m.Text, fact) {
						t.Errorf("text lacks %q:\n%s", fact, m.Text)
					}
					if !strings.Contains(m.HTML, fact) {
						t.Errorf("HTML lacks %q:\n%s", fact, m.HTML)
					}
				}
				if want := `<html lang="` + locale + `">`; !strings.Contains(m.HTML, want) {
					t.Errorf("HTML lacks %s", want)
				}
				if strings.Contains(m.HTML, "ZgotmplZ") {
					t.Errorf("html/template rejected a value:\n%s", m.HTML)
				}
			})
		}
		// Build both outside the parallel subtests to compare them.
		for _, locale := range []string{"en", "es"} {
			m, err := tmpl.build(locale)
			if err != nil {
				t.Fatal(err)
			}
			subjects[locale] = m.Subject
		}
		if subjects["en"] == subjects["es"] {
			t.Errorf("%s: English and Spanish subjects are both %q", tmpl.name, subjects["en"])
		}
	}
}

func TestLocaleFallback(t *testing.T) {
	t.Parallel()
	data := mail.CredentialsData{To: "ana@example.com", URL: "https://ana.n8n.example.com", LoginEmail: "ana@example.com", Password: "Xk9-pQ2v"}
	render := func(locale string) mail.Message {
		m, err := mail.Credentials(locale, data)
		if err != nil {
			t.Fatalf("Credentials(%q): %v", locale, err)
		}
		return m
	}
	en, es := render("en"), render("es")
	for _, locale := range []string{"fr", "", "pt-BR", "de-DE"} {
		if got := render(locale); got.Text != en.Text || got.Subject != en.Subject {
			t.Errorf("locale %q did not fall back to English: %q", locale, got.Subject)
		}
	}
	for _, locale := range []string{"es-AR", "es_CO", "ES"} {
		if got := render(locale); got.Text != es.Text || got.Subject != es.Subject {
			t.Errorf("locale %q did not render Spanish: %q", locale, got.Subject)
		}
	}
}

func TestOperatorAlert(t *testing.T) {
	t.Parallel()
	m, err := mail.OperatorAlert("ops@example.com", "saga failed\r\nBcc: victim@example.com", "instance i_1\nstep dns: <cloudflare 502>")
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "[n8n-provisioner] saga failed Bcc: victim@example.com" {
		t.Errorf("Subject = %q: want one line", m.Subject)
	}
	if !strings.Contains(m.Text, "instance i_1\nstep dns: <cloudflare 502>") {
		t.Errorf("text does not carry the body verbatim:\n%s", m.Text)
	}
	if !strings.Contains(m.HTML, "step dns: &lt;cloudflare 502&gt;") || strings.Contains(m.HTML, "<cloudflare") {
		t.Errorf("HTML does not escape the body:\n%s", m.HTML)
	}
}

func TestHTMLEscapesHostileInput(t *testing.T) {
	t.Parallel()
	const name = `<script>alert("x")</script>`
	const password = `<b>&"'</b>`
	const url = `https://ana.n8n.example.com/"><script>alert(1)</script>`
	builds := map[string]func(string) (mail.Message, error){
		"credentials": func(l string) (mail.Message, error) {
			return mail.Credentials(l, mail.CredentialsData{To: "ana@example.com", Name: name, URL: url, LoginEmail: "ana@example.com", Password: password})
		},
		"suspended": func(l string) (mail.Message, error) {
			return mail.Suspended(l, mail.SuspendedData{To: "ana@example.com", Name: name, URL: url, Reason: mail.ReasonBilling, PortalURL: url})
		},
		"past due": func(l string) (mail.Message, error) {
			return mail.PastDueWarning(l, mail.PastDueData{To: "ana@example.com", Name: name, URL: url, GraceEnds: grace, PortalURL: url})
		},
		"resumed": func(l string) (mail.Message, error) {
			return mail.Resumed(l, mail.ResumedData{To: "ana@example.com", Name: name, URL: url})
		},
		"deleted": func(l string) (mail.Message, error) {
			return mail.Deleted(l, mail.DeletedData{To: "ana@example.com", Name: name, URL: url, BackupKeptUntil: grace})
		},
		"operator alert": func(string) (mail.Message, error) {
			return mail.OperatorAlert("ops@example.com", "alert", name)
		},
	}
	for what, build := range builds {
		for _, locale := range []string{"en", "es"} {
			m, err := build(locale)
			if err != nil {
				t.Fatalf("%s/%s: %v", what, locale, err)
			}
			if strings.Contains(m.HTML, "<script") {
				t.Errorf("%s/%s: HTML contains a live <script>:\n%s", what, locale, m.HTML)
			}
			if !strings.Contains(m.HTML, "&lt;script&gt;") {
				t.Errorf("%s/%s: HTML lacks the escaped name:\n%s", what, locale, m.HTML)
			}
			if what == "credentials" {
				if !strings.Contains(m.HTML, "&lt;b&gt;&amp;&#34;&#39;&lt;/b&gt;") {
					t.Errorf("%s/%s: password not escaped in HTML:\n%s", what, locale, m.HTML)
				}
				if !strings.Contains(m.Text, password) {
					t.Errorf("%s/%s: text must carry the password verbatim", what, locale)
				}
			}
		}
	}
}

func TestNameCannotForgeTextLines(t *testing.T) {
	t.Parallel()
	m, err := mail.Credentials("en", mail.CredentialsData{
		To: "ana@example.com", Name: "Eve\n\n  Password: hunter2\r\n", URL: "https://ana.n8n.example.com",
		LoginEmail: "ana@example.com", Password: "Xk9-pQ2v",
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.Text, "Hi Eve Password: hunter2,\n") {
		t.Errorf("name not kept on the greeting line:\n%s", m.Text)
	}
}

func TestBuildersRejectBadInput(t *testing.T) {
	t.Parallel()
	okCreds := mail.CredentialsData{To: "ana@example.com", URL: "https://ana.n8n.example.com", LoginEmail: "ana@example.com", Password: "Xk9-pQ2v"}
	tests := []struct {
		name  string
		build func() (mail.Message, error)
	}{
		{"credentials without recipient", func() (mail.Message, error) { d := okCreds; d.To = ""; return mail.Credentials("en", d) }},
		{"credentials bad recipient", func() (mail.Message, error) { d := okCreds; d.To = "ana at example"; return mail.Credentials("en", d) }},
		{"credentials header injection", func() (mail.Message, error) {
			d := okCreds
			d.To = "ana@example.com\r\nBcc: x@example.com"
			return mail.Credentials("en", d)
		}},
		{"credentials without password", func() (mail.Message, error) { d := okCreds; d.Password = ""; return mail.Credentials("en", d) }},
		{"credentials without login", func() (mail.Message, error) { d := okCreds; d.LoginEmail = ""; return mail.Credentials("en", d) }},
		{"credentials javascript URL", func() (mail.Message, error) {
			d := okCreds
			d.URL = "javascript:alert(1)"
			return mail.Credentials("en", d)
		}},
		{"credentials relative URL", func() (mail.Message, error) { d := okCreds; d.URL = "/ana"; return mail.Credentials("en", d) }},
		{"suspended unknown reason", func() (mail.Message, error) {
			return mail.Suspended("en", mail.SuspendedData{To: "ana@example.com", URL: "https://a.example.com", Reason: "fraud"})
		}},
		{"suspended bad portal", func() (mail.Message, error) {
			return mail.Suspended("en", mail.SuspendedData{To: "ana@example.com", URL: "https://a.example.com", Reason: mail.ReasonBilling, PortalURL: "ftp://x"})
		}},
		{"past due without grace end", func() (mail.Message, error) {
			return mail.PastDueWarning("en", mail.PastDueData{To: "ana@example.com", URL: "https://a.example.com"})
		}},
		{"resumed without URL", func() (mail.Message, error) { return mail.Resumed("en", mail.ResumedData{To: "ana@example.com"}) }},
		{"deleted bad support email", func() (mail.Message, error) {
			return mail.Deleted("en", mail.DeletedData{To: "ana@example.com", URL: "https://a.example.com", SupportEmail: "help"})
		}},
		{"operator alert without subject", func() (mail.Message, error) { return mail.OperatorAlert("ops@example.com", " ", "body") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := tt.build()
			if !apperr.Is(err, apperr.Invalid) {
				t.Fatalf("err = %v (kind %s), want invalid", err, apperr.KindOf(err))
			}
			if strings.Contains(err.Error(), "Xk9-pQ2v") {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
}

func TestMessageIDs(t *testing.T) {
	t.Parallel()
	data := mail.ResumedData{To: "ana@example.com", URL: "https://ana.n8n.example.com", Key: "inst_1/resume/3"}
	build := func(locale string, d mail.ResumedData) string {
		m, err := mail.Resumed(locale, d)
		if err != nil {
			t.Fatal(err)
		}
		if strings.ContainsAny(m.ID, "@<> ") {
			t.Fatalf("ID %q is not a bare msg-id left part", m.ID)
		}
		return m.ID
	}
	first := build("en", data)
	if again := build("en", data); again != first {
		t.Errorf("re-rendering changed the ID: %q then %q", first, again)
	}
	if es := build("es", data); es != first {
		t.Errorf("the same email in another language got another ID: %q vs %q", es, first)
	}
	other := data
	other.Key = "inst_1/resume/4"
	if build("en", other) == first {
		t.Error("two keys gave the same ID: a later notice would be folded into the first")
	}
	noKey := data
	noKey.Key = ""
	if a, b := build("en", noKey), build("en", noKey); a != b || a == first {
		t.Errorf("keyless IDs: %q, %q (keyed %q): want stable and distinct from keyed", a, b, first)
	}
	// Different kinds of email never share an ID, even with the same key.
	deleted, err := mail.Deleted("en", mail.DeletedData{To: "ana@example.com", URL: "https://ana.n8n.example.com", Key: data.Key})
	if err != nil {
		t.Fatal(err)
	}
	if deleted.ID == first {
		t.Error("resumed and deleted share an ID")
	}
}

func TestPrintingNeverShowsThePassword(t *testing.T) {
	t.Parallel()
	const password = "Xk9-pQ2v-very-secret"
	data := mail.CredentialsData{To: "ana@example.com", URL: "https://ana.n8n.example.com", LoginEmail: "ana@example.com", Password: password}
	m, err := mail.Credentials("en", data)
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("sending", "msg", m)
	outputs := []string{
		fmt.Sprintf("%v", m), fmt.Sprintf("%+v", m), fmt.Sprintf("%#v", m), fmt.Sprint(m),
		fmt.Sprintf("%v", data), fmt.Sprintf("%+v", data), fmt.Sprintf("%#v", data),
		logged.String(),
	}
	for _, out := range outputs {
		if strings.Contains(out, password) {
			t.Errorf("printed form leaks the password: %s", out)
		}
	}
	if !strings.Contains(logged.String(), m.ID) {
		t.Errorf("log line lacks the message ID: %s", logged.String())
	}
}
