package traefiktest

import (
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
)

// Rule is a parsed Traefik HTTP router rule, such as
// "Host(`a.example.com`) && Path(`/rest/owner/setup`)".
type Rule struct {
	text  string
	match func(*http.Request) bool
}

// String returns the rule as written.
func (r *Rule) String() string { return r.text }

// Match reports whether req satisfies the rule. req.URL.Path is matched as it is: the
// Ingress sanitizes it first, as Traefik's entry points do by default.
func (r *Rule) Match(req *http.Request) bool { return r.match(req) }

// ParseRule parses Traefik's rule language (v3 syntax): matchers Host, HostRegexp, Path,
// PathPrefix, PathRegexp, Method and Header, combined with &&, || and !, grouped with
// parentheses; arguments are quoted with backticks or double quotes. Host also takes several
// domains as in Traefik v2 (any of them matches). It returns an error for anything else,
// because Traefik refuses to serve a router whose rule does not parse.
func ParseRule(text string) (*Rule, error) {
	p := &ruleParser{src: text}
	if err := p.lex(); err != nil {
		return nil, fmt.Errorf("rule %q: %w", text, err)
	}
	if len(p.toks) == 0 {
		return nil, fmt.Errorf("rule %q: empty", text)
	}
	m, err := p.or()
	if err != nil {
		return nil, fmt.Errorf("rule %q: %w", text, err)
	}
	if p.pos != len(p.toks) {
		return nil, fmt.Errorf("rule %q: unexpected %q", text, p.toks[p.pos].text)
	}
	return &Rule{text: text, match: m}, nil
}

type tokKind int

const (
	tokIdent tokKind = iota
	tokString
	tokLParen
	tokRParen
	tokComma
	tokAnd
	tokOr
	tokNot
)

type token struct {
	kind tokKind
	text string
}

type ruleParser struct {
	src  string
	toks []token
	pos  int
}

func (p *ruleParser) lex() error {
	s := p.src
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(':
			p.toks = append(p.toks, token{tokLParen, "("})
			i++
		case c == ')':
			p.toks = append(p.toks, token{tokRParen, ")"})
			i++
		case c == ',':
			p.toks = append(p.toks, token{tokComma, ","})
			i++
		case c == '!':
			p.toks = append(p.toks, token{tokNot, "!"})
			i++
		case strings.HasPrefix(s[i:], "&&"):
			p.toks = append(p.toks, token{tokAnd, "&&"})
			i += 2
		case strings.HasPrefix(s[i:], "||"):
			p.toks = append(p.toks, token{tokOr, "||"})
			i += 2
		case c == '`' || c == '"':
			end := strings.IndexByte(s[i+1:], c)
			if end < 0 {
				return fmt.Errorf("unterminated string at offset %d", i)
			}
			p.toks = append(p.toks, token{tokString, s[i+1 : i+1+end]})
			i += end + 2
		case isIdentByte(c):
			j := i
			for j < len(s) && isIdentByte(s[j]) {
				j++
			}
			p.toks = append(p.toks, token{tokIdent, s[i:j]})
			i = j
		default:
			return fmt.Errorf("unexpected character %q at offset %d", c, i)
		}
	}
	return nil
}

func isIdentByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

func (p *ruleParser) peek() (token, bool) {
	if p.pos < len(p.toks) {
		return p.toks[p.pos], true
	}
	return token{}, false
}

func (p *ruleParser) expect(k tokKind, what string) (token, error) {
	t, ok := p.peek()
	if !ok {
		return token{}, fmt.Errorf("expected %s, got end of rule", what)
	}
	if t.kind != k {
		return token{}, fmt.Errorf("expected %s, got %q", what, t.text)
	}
	p.pos++
	return t, nil
}

type matchFunc = func(*http.Request) bool

func (p *ruleParser) or() (matchFunc, error) {
	left, err := p.and()
	if err != nil {
		return nil, err
	}
	for {
		t, ok := p.peek()
		if !ok || t.kind != tokOr {
			return left, nil
		}
		p.pos++
		right, err := p.and()
		if err != nil {
			return nil, err
		}
		l := left
		left = func(r *http.Request) bool { return l(r) || right(r) }
	}
}

func (p *ruleParser) and() (matchFunc, error) {
	left, err := p.unary()
	if err != nil {
		return nil, err
	}
	for {
		t, ok := p.peek()
		if !ok || t.kind != tokAnd {
			return left, nil
		}
		p.pos++
		right, err := p.unary()
		if err != nil {
			return nil, err
		}
		l := left
		left = func(r *http.Request) bool { return l(r) && right(r) }
	}
}

func (p *ruleParser) unary() (matchFunc, error) {
	t, ok := p.peek()
	if !ok {
		return nil, fmt.Errorf("expected a matcher, got end of rule")
	}
	switch t.kind {
	case tokNot:
		p.pos++
		inner, err := p.unary()
		if err != nil {
			return nil, err
		}
		return func(r *http.Request) bool { return !inner(r) }, nil
	case tokLParen:
		p.pos++
		inner, err := p.or()
		if err != nil {
			return nil, err
		}
		if _, err := p.expect(tokRParen, "')'"); err != nil {
			return nil, err
		}
		return inner, nil
	case tokIdent:
		return p.matcher()
	default:
		return nil, fmt.Errorf("expected a matcher, got %q", t.text)
	}
}

func (p *ruleParser) matcher() (matchFunc, error) {
	name, _ := p.expect(tokIdent, "a matcher")
	if _, err := p.expect(tokLParen, "'(' after "+name.text); err != nil {
		return nil, err
	}
	var args []string
	for {
		a, err := p.expect(tokString, "a quoted argument")
		if err != nil {
			return nil, err
		}
		args = append(args, a.text)
		t, ok := p.peek()
		if ok && t.kind == tokComma {
			p.pos++
			continue
		}
		break
	}
	if _, err := p.expect(tokRParen, "')'"); err != nil {
		return nil, err
	}
	return buildMatcher(name.text, args)
}

func buildMatcher(name string, args []string) (matchFunc, error) {
	one := func() error {
		if len(args) != 1 {
			return fmt.Errorf("%s takes exactly one argument, got %d", name, len(args))
		}
		return nil
	}
	switch name {
	case "Host":
		hosts := make([]string, len(args))
		for i, a := range args {
			if a == "" {
				return nil, fmt.Errorf("Host: empty domain")
			}
			hosts[i] = strings.ToLower(a)
		}
		return func(r *http.Request) bool {
			h := requestHost(r)
			for _, want := range hosts {
				if h == want {
					return true
				}
			}
			return false
		}, nil
	case "HostRegexp":
		if err := one(); err != nil {
			return nil, err
		}
		re, err := regexp.Compile(args[0])
		if err != nil {
			return nil, fmt.Errorf("HostRegexp: %w", err)
		}
		return func(r *http.Request) bool { return re.MatchString(requestHost(r)) }, nil
	case "Path", "PathPrefix":
		if err := one(); err != nil {
			return nil, err
		}
		if !strings.HasPrefix(args[0], "/") {
			return nil, fmt.Errorf("%s: path %q does not start with /", name, args[0])
		}
		want := args[0]
		if name == "Path" {
			return func(r *http.Request) bool { return r.URL.Path == want }, nil
		}
		return func(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, want) }, nil
	case "PathRegexp":
		if err := one(); err != nil {
			return nil, err
		}
		re, err := regexp.Compile(args[0])
		if err != nil {
			return nil, fmt.Errorf("PathRegexp: %w", err)
		}
		return func(r *http.Request) bool { return re.MatchString(r.URL.Path) }, nil
	case "Method":
		if err := one(); err != nil {
			return nil, err
		}
		m := strings.ToUpper(args[0])
		return func(r *http.Request) bool { return r.Method == m }, nil
	case "Header":
		if len(args) != 2 {
			return nil, fmt.Errorf("Header takes a name and a value, got %d arguments", len(args))
		}
		k, v := args[0], args[1]
		return func(r *http.Request) bool {
			for _, got := range r.Header.Values(k) {
				if got == v {
					return true
				}
			}
			return false
		}, nil
	default:
		return nil, fmt.Errorf("unsupported matcher %q", name)
	}
}

// requestHost is the Host header without its port, lower-cased: Traefik matches domains
// case-insensitively and ignores the port.
func requestHost(r *http.Request) string {
	h := r.Host
	if h == "" {
		h = r.URL.Host
	}
	if hp, _, err := net.SplitHostPort(h); err == nil {
		h = hp
	}
	return strings.ToLower(h)
}
