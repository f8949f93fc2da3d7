package metrics

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Routes turns a request's path into a route template for the operation label, so that
// ids (node names, VM ids, zone and record ids, Stripe object ids) never become label
// values: the metric set stays as small as the set of endpoints the adapters call.
type Routes struct {
	// Prefix is dropped from the path: the API's base path ("/api2/json", "/client/v4").
	Prefix string
	// IDsAfter lists the collection segments whose next segment is an id ("nodes",
	// "qemu", "zones", "customers"); that segment becomes {id}.
	IDsAfter []string
	// Opaque says the path itself is a credential (a webhook URL): the operation is the
	// method alone.
	Opaque bool
}

// maxSegments bounds the template's length: deeper paths end in "...".
const maxSegments = 8

// Template returns the method and route template of r, e.g.
// "POST /nodes/{id}/qemu/{id}/agent/exec". Besides the segments after IDsAfter, any
// segment that is not a plain word (see plainWord) is taken for an id too,
// so a path the list does not know still yields no raw id. The query is never included.
func (rt Routes) Template(r *http.Request) string {
	if rt.Opaque {
		return r.Method
	}
	path := strings.TrimPrefix(r.URL.Path, rt.Prefix)
	segs := strings.Split(strings.Trim(path, "/"), "/")
	out := make([]string, 0, min(len(segs), maxSegments+1))
	idNext := false
	for i, s := range segs {
		if i == maxSegments {
			out = append(out, "...")
			break
		}
		if idNext || !plainWord(s) {
			out = append(out, "{id}")
		} else {
			out = append(out, s)
		}
		idNext = slices.Contains(rt.IDsAfter, s)
	}
	return r.Method + " /" + strings.Join(out, "/")
}

// plainWord reports whether s reads as a word of an API's vocabulary: lowercase letters,
// "_" and "-", or an API version ("v1"). Ids carry digits or capitals.
func plainWord(s string) bool {
	if len(s) > 40 {
		return false
	}
	if len(s) >= 2 && s[0] == 'v' && strings.Trim(s[1:], "0123456789") == "" {
		return true
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// Transport returns next (nil: a clone of http.DefaultTransport) recording every round
// trip as a call to dependency with routes' template as the operation. A transport error,
// a 5xx and a 429 count as errors; any other answer (a 404 an adapter expects, a 400 it
// reports) is the dependency working. Only the template is recorded, never the URL,
// headers or body: they carry tokens and customers' data.
func (m *Dependencies) Transport(dependency string, routes Routes, next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport.(*http.Transport).Clone()
	}
	return &transport{m: m, name: func(*http.Request) string { return dependency }, routes: routes, next: next}
}

// TransportByHost is Transport for one client that serves several dependencies (the
// payment providers): name says which one a request goes to from its URL's host[:port],
// and must answer from a bounded set.
func (m *Dependencies) TransportByHost(name func(host string) string, routes Routes, next http.RoundTripper) http.RoundTripper {
	t := m.Transport("", routes, next).(*transport)
	t.name = func(r *http.Request) string { return name(r.URL.Host) }
	return t
}

type transport struct {
	m      *Dependencies
	name   func(*http.Request) string
	routes Routes
	next   http.RoundTripper
}

func (t *transport) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.next.RoundTrip(r)
	callErr := err
	if err == nil && (resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests) {
		callErr = statusError(resp.StatusCode)
	}
	t.m.Observe(t.name(r), t.routes.Template(r), time.Since(start), callErr)
	return resp, err
}

type statusError int

func (e statusError) Error() string { return "HTTP " + strconv.Itoa(int(e)) }
