package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/rahatback/rahatback/sealed"
	"github.com/rahatback/rahatback/version"
)

// EnrollOpts configure Enroll.
type EnrollOpts struct {
	Server   string // control plane URL, e.g. http://127.0.0.1:8080; required
	Token    string // enrollment token; required
	StateDir string // required
	Name     string // default: the host name
	// Client performs the request; default an http.Client with a 30 s timeout.
	Client *http.Client
}

// Enroll generates the agent's key pair, redeems the enrollment token at the
// control plane and saves the resulting State. It refuses to overwrite an
// existing enrollment, and returns the server's error message on rejection.
func Enroll(ctx context.Context, o EnrollOpts) (*State, error) {
	if o.Server == "" || o.Token == "" || o.StateDir == "" {
		return nil, fmt.Errorf("enroll: --server, --token and --state-dir are required")
	}
	if _, err := LoadState(o.StateDir); err == nil {
		return nil, fmt.Errorf("enroll: %s already holds an enrolled agent; use another --state-dir or remove it", o.StateDir)
	}
	id, err := sealed.NewIdentity()
	if err != nil {
		return nil, err
	}
	hostname, _ := os.Hostname()
	body, _ := json.Marshal(map[string]string{
		"token": o.Token, "name": o.Name, "hostname": hostname, "os": runtime.GOOS + "/" + runtime.GOARCH,
		"version": version.String(), "publicKey": id.Recipient().String(),
	})
	server := strings.TrimRight(o.Server, "/")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, server+"/v1/agents/enroll", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	client := o.Client
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("enroll: cannot reach %s: %w", server, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		var e struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(data, &e) == nil && e.Message != "" {
			return nil, fmt.Errorf("enroll: %s", e.Message)
		}
		return nil, fmt.Errorf("enroll: server answered %s", resp.Status)
	}
	var out struct {
		AgentID      string `json:"agentId"`
		NATSURL      string `json:"natsUrl"`
		NATSUser     string `json:"natsUser"`
		NATSPassword string `json:"natsPassword"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("enroll: bad answer: %w", err)
	}
	s := &State{AgentID: out.AgentID, Server: server, NATSURL: out.NATSURL, NATSUser: out.NATSUser,
		NATSPassword: out.NATSPassword, Identity: id.String()}
	if err := SaveState(o.StateDir, s); err != nil {
		return nil, err
	}
	return s, nil
}
