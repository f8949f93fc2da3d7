package billing

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"
)

func TestMercadoPagoVerify(t *testing.T) {
	t.Parallel()
	const secret = "mp-verify-secret-0123456789abcdef"
	p := &mercadoPagoProvider{secrets: []string{"mp-other-secret-0123456789abcdef", secret}}
	body := []byte(`{"id":123456789012,"live_mode":true,"type":"subscription_preapproval","date_created":"2026-05-25T13:01:08.000-03:00","action":"updated","data":{"id":"2C9380848F0D"}}`)
	sign := func(manifest string) string {
		h := hmac.New(sha256.New, []byte(secret))
		h.Write([]byte(manifest))
		return hex.EncodeToString(h.Sum(nil))
	}
	now := time.Now()
	sec, ms := strconv.FormatInt(now.Unix(), 10), strconv.FormatInt(now.UnixMilli(), 10)
	old := strconv.FormatInt(now.Add(-6*time.Minute).Unix(), 10)
	q := url.Values{"data.id": {"2C9380848F0D"}, "type": {"subscription_preapproval"}}
	hdr := func(sig, rid string) http.Header {
		h := http.Header{"X-Signature": {sig}}
		if rid != "" {
			h.Set("X-Request-Id", rid)
		}
		return h
	}
	tests := []struct {
		name   string
		header http.Header
		query  url.Values
		reason string
	}{
		{"seconds", hdr("ts="+sec+",v1="+sign("id:2c9380848f0d;request-id:r-1;ts:"+sec+";"), "r-1"), q, ""},
		{"milliseconds, spaces", hdr(" ts="+ms+", v1="+sign("id:2c9380848f0d;request-id:r-1;ts:"+ms+";"), "r-1"), q, ""},
		{"no request id: left out of the manifest", hdr("ts="+sec+",v1="+sign("id:2c9380848f0d;ts:"+sec+";"), ""), q, ""},
		{"data.id only in the body", hdr("ts="+sec+",v1="+sign("id:2c9380848f0d;request-id:r-1;ts:"+sec+";"), "r-1"), url.Values{}, ""},
		{"not lowercased", hdr("ts="+sec+",v1="+sign("id:2C9380848F0D;request-id:r-1;ts:"+sec+";"), "r-1"), q, "bad_signature"},
		{"another request id", hdr("ts="+sec+",v1="+sign("id:2c9380848f0d;request-id:r-1;ts:"+sec+";"), "r-2"), q, "bad_signature"},
		{"query names another object", hdr("ts="+sec+",v1="+sign("id:ffff;request-id:r-1;ts:"+sec+";"), "r-1"),
			url.Values{"data.id": {"ffff"}}, "bad_signature"},
		{"stale", hdr("ts="+old+",v1="+sign("id:2c9380848f0d;request-id:r-1;ts:"+old+";"), "r-1"), q, "stale"},
		{"unsigned", http.Header{}, q, "unsigned"},
		{"no v1", hdr("ts="+sec, "r-1"), q, "malformed"},
		{"garbage", hdr("ts=abc,v1=zz", "r-1"), q, "malformed"},
	}
	for _, tt := range tests {
		in, err := p.verify(body, tt.header, tt.query)
		if tt.reason == "" {
			if err != nil || in.ID != "123456789012" || in.Type != "subscription_preapproval" || now.Sub(in.Created) > time.Second {
				t.Errorf("%s: %+v, %v", tt.name, in, err)
			}
			continue
		}
		if rej, ok := err.(*rejection); !ok || rej.Reason != tt.reason {
			t.Errorf("%s: err = %v, want %s", tt.name, err, tt.reason)
		}
	}
	// The notification's own id: a number or a string of letters and digits.
	good := hdr("ts="+sec+",v1="+sign("id:2c9380848f0d;request-id:r-1;ts:"+sec+";"), "r-1")
	for id, ok := range map[string]bool{`"abc123"`: true, `"../x"`: false, `null`: false, `""`: false} {
		b := []byte(`{"id":` + id + `,"type":"subscription_preapproval","data":{"id":"2C9380848F0D"}}`)
		_, err := p.verify(b, good, q)
		if rej, isRej := err.(*rejection); ok != (err == nil) || (!ok && (!isRej || rej.Reason != "malformed")) {
			t.Errorf("id %s: %v", id, err)
		}
	}
}

func TestReference(t *testing.T) {
	t.Parallel()
	r := reference{client: "cus_42.a:b-c", plan: "pro", locale: "es"}
	if got := parseReference(r.String()); got != r {
		t.Fatalf("round trip = %+v", got)
	}
	if got := parseReference("YG-1234"); got != (reference{}) {
		t.Fatalf("a reference not ours = %+v", got)
	}
	if got := parseReference("client=../x;plan=pro"); got.client != "" {
		t.Fatalf("a bad client id was read: %+v", got)
	}
}
