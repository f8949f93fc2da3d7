package sandbox_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/n8n-provisioner/n8n-provisioner/internal/hosts"
	"github.com/n8n-provisioner/n8n-provisioner/internal/n8n"
	"github.com/n8n-provisioner/n8n-provisioner/internal/sandbox"
)

// A demo command's view: start the World, add a host, and drive it with the provisioner's
// own adapters (here by hand; `provisioner demo` hands World.Env() to its configuration).
func Example() {
	dir, err := os.MkdirTemp("", "sandbox-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

	w, err := sandbox.Start(ctx, sandbox.Config{Dir: dir, BaseDomain: "n8n.example.test"})
	if err != nil {
		panic(err)
	}
	defer w.Close()
	h, err := w.AddHost("nuc1")
	if err != nil {
		panic(err)
	}

	pve, _ := hosts.NewProxmox(hosts.ProxmoxConfig{
		BaseURL: w.ProxmoxURL, TokenID: w.ProxmoxTokenID, TokenSecret: w.ProxmoxTokenSecret,
		PollInterval: 10 * time.Millisecond,
	})
	agent, _ := hosts.NewAgent(hosts.AgentConfig{Exec: pve})
	key, _ := n8n.GenerateEncryptionKey()
	guardPass, _ := n8n.GeneratePassword()
	guardLine, _ := n8n.SetupGuardHTPasswd("provisioner", guardPass)
	_, err = agent.Run(ctx, h.Node, h.VMID, "provision", "acme", map[string]string{
		"IMAGE": "n8nio/n8n:1.97.1", "CPUS": "1", "MEMORY_MB": "1024", "FQDN": w.FQDN("acme"),
		"N8N_ENCRYPTION_KEY": key, "SETUP_AUTH_USERS": guardLine,
	})
	if err != nil {
		panic(err)
	}

	app := n8n.New(n8n.Config{IngressURL: h.IngressURL, Host: w.FQDN("acme")})
	if err := app.WaitReady(ctx, 10*time.Millisecond); err != nil {
		panic(err)
	}
	password, _ := n8n.GeneratePassword()
	owner := n8n.Owner{Email: "ada@example.com", FirstName: "Ada", LastName: "Lovelace", Password: password}
	fmt.Println("owner setup:", app.SetupOwner(ctx, owner, n8n.BasicAuth{User: "provisioner", Password: guardPass}))
	fmt.Println("login:", app.Login(ctx, owner.Email, owner.Password))

	cs, _ := w.Containers("nuc1")
	fmt.Printf("%s running=%v cpus=%v memory=%dMB on %s (%s)\n", cs[0].Name, cs[0].Running, cs[0].CPUs, cs[0].MemoryMB, h.Name, h.PublicIP)
	u, _ := w.N8n("acme").Owner()
	fmt.Println("n8n owner:", u.Email)
	// Output:
	// owner setup: <nil>
	// login: <nil>
	// n8n-acme running=true cpus=1 memory=1024MB on nuc1 (203.0.113.10)
	// n8n owner: ada@example.com
}
