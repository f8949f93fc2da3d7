package n8n_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts/traefiktest"
	"github.com/n8n-provisioner/n8n-provisioner/internal/n8n"
	"github.com/n8n-provisioner/n8n-provisioner/internal/n8n/n8ntest"
)

// The provisioning flow for one instance: make the secrets, let the host write the labels
// (here: a fake Traefik reads them), wait for n8n, claim the owner, and on a retry find out
// whether the existing owner is ours.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	password, _ := n8n.GeneratePassword()
	guardPassword, _ := n8n.GeneratePassword()
	htpasswdLine, _ := n8n.SetupGuardHTPasswd("provisioner", guardPassword)

	backend := httptest.NewServer(&n8ntest.Server{})
	defer backend.Close()
	ingress := &traefiktest.Ingress{}
	ingress.SetContainers([]traefiktest.Container{{
		Name: "n8n-acme",
		Addr: backend.Listener.Addr().String(),
		Labels: map[string]string{
			"traefik.enable":                                               "true",
			"traefik.http.routers.n8n-acme.rule":                           "Host(`acme.example.com`)",
			"traefik.http.routers.n8n-acme.service":                        "n8n-acme",
			"traefik.http.services.n8n-acme.loadbalancer.server.port":      "5678",
			"traefik.http.routers.n8n-acme-setup.rule":                     "Host(`acme.example.com`) && PathRegexp(`(?i)^/rest/owner/setup/?$`)",
			"traefik.http.routers.n8n-acme-setup.priority":                 "1000",
			"traefik.http.routers.n8n-acme-setup.service":                  "n8n-acme",
			"traefik.http.routers.n8n-acme-setup.middlewares":              "n8n-acme-setup-auth",
			"traefik.http.middlewares.n8n-acme-setup-auth.basicauth.users": htpasswdLine,
		},
	}})
	front := httptest.NewServer(ingress)
	defer front.Close()

	c := n8n.New(n8n.Config{IngressURL: front.URL, Host: "acme.example.com", HTTPClient: front.Client()})
	if err := c.WaitReady(ctx, 100*time.Millisecond); err != nil {
		fmt.Println("wait:", err)
		return
	}
	owner := n8n.Owner{Email: "ada@acme.test", FirstName: "Ada", LastName: "Lovelace", Password: password}
	guard := n8n.BasicAuth{User: "provisioner", Password: guardPassword}
	fmt.Println("first setup:", c.SetupOwner(ctx, owner, guard))

	// A retried saga step meets the owner it created before it crashed.
	err := c.SetupOwner(ctx, owner, guard)
	if errors.Is(err, n8n.ErrOwnerAlreadySetup) && c.Login(ctx, owner.Email, owner.Password) == nil {
		fmt.Println("retry: the owner is already ours")
	}
	// Output:
	// first setup: <nil>
	// retry: the owner is already ours
}
