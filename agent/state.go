// Package agent is the agent process: enrollment, its state directory, and
// the run loop that connects to NATS, reports presence and serves the
// control plane's requests.
package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"filippo.io/age"

	"github.com/rahatback/rahatback/securefile"
)

// ErrNotEnrolled is returned by LoadState when the state directory holds no
// enrollment.
var ErrNotEnrolled = errors.New("agent is not enrolled: run `rahatback-agent enroll --server URL --token TOKEN` first")

const stateFile = "agent.json"

// State is what an enrolled agent keeps in its state directory (file
// agent.json, mode 0600): its identity, its secret key and its NATS
// credentials.
type State struct {
	AgentID      string `json:"agentId"`
	Server       string `json:"server"`
	NATSURL      string `json:"natsUrl"`
	NATSUser     string `json:"natsUser"`
	NATSPassword string `json:"natsPassword"`
	// Identity is the age X25519 secret key ("AGE-SECRET-KEY-1…") to which the
	// control plane seals the secrets it sends.
	Identity string `json:"identity"`
}

// ParseIdentity returns the agent's key pair.
func (s *State) ParseIdentity() (*age.X25519Identity, error) {
	id, err := age.ParseX25519Identity(s.Identity)
	if err != nil {
		return nil, fmt.Errorf("agent state: bad identity: %w", err)
	}
	return id, nil
}

// LoadState reads dir/agent.json. It returns ErrNotEnrolled when there is
// none, and an error when the file is readable by other users.
func LoadState(dir string) (*State, error) {
	path := filepath.Join(dir, stateFile)
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotEnrolled
	}
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is accessible by other users (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if s.AgentID == "" || s.NATSURL == "" || s.Identity == "" {
		return nil, fmt.Errorf("%s is incomplete; enroll again", path)
	}
	return &s, nil
}

// SaveState writes s to dir/agent.json (0600, atomically).
func SaveState(dir string, s *State) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return securefile.Write(filepath.Join(dir, stateFile), data)
}
