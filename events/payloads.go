package events

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Version is the payload version this build writes. Readers accept any
// payload whose V is at most Version.
const Version = 1

// AgentPresence is the payload of rahat.evt.<agent>.agent.{online,heartbeat,offline}.
type AgentPresence struct {
	V        int       `json:"v"`
	ID       string    `json:"id"` // unique message id, also the Nats-Msg-Id
	AgentID  string    `json:"agentId"`
	Hostname string    `json:"hostname"`
	OS       string    `json:"os"`
	Version  string    `json:"version"`
	At       time.Time `json:"at"`
}

// ConnSpec says how an agent reaches a database. SealedPassword is the
// password sealed to the receiving agent's public key (package sealed); the
// plaintext never travels.
type ConnSpec struct {
	Type           string `json:"type"`
	Host           string `json:"host"`
	Port           int    `json:"port"`
	Username       string `json:"username"`
	SealedPassword string `json:"sealedPassword,omitempty"`
	Database       string `json:"database"`
	// MongoDB only (empty or false otherwise).
	AuthSource string `json:"authSource,omitempty"`
	TLS        bool   `json:"tls,omitempty"`
	ReplicaSet string `json:"replicaSet,omitempty"`
	// SQL Server only (empty otherwise): the named instance (empty: the
	// default one) and the encryption (strict, mandatory or optional;
	// empty: mandatory).
	Instance string `json:"instance,omitempty"`
	Encrypt  string `json:"encrypt,omitempty"`
}

// DBTestRequest is the request on rahat.rpc.<agent>.dbtest.
type DBTestRequest struct {
	V         int      `json:"v"`
	RequestID string   `json:"requestId"`
	Conn      ConnSpec `json:"conn"`
}

// DBTestReply is the agent's answer to a DBTestRequest.
type DBTestReply struct {
	V       int    `json:"v"`
	Success bool   `json:"success"`
	Message string `json:"message"`
	Version string `json:"version,omitempty"`
}

// Decode unmarshals a payload and rejects versions newer than this build.
func Decode(data []byte, v any) error {
	var head struct {
		V int `json:"v"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return fmt.Errorf("events: bad payload: %w", err)
	}
	if head.V < 1 || head.V > Version {
		return fmt.Errorf("events: unsupported payload version %d", head.V)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("events: bad payload: %w", err)
	}
	return nil
}

// Publish sends payload to a JetStream subject with Nats-Msg-Id = msgID, so a
// retried publish is stored once, and waits for the stream's ack.
func Publish(ctx context.Context, js jetstream.JetStream, subject, msgID string, payload any) error {
	data, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, msgID)
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	return nil
}

// Request sends payload on a core NATS subject and decodes the single reply
// into reply, waiting at most timeout. It returns nats.ErrNoResponders when
// nobody serves the subject and nats.ErrTimeout when nobody answers in time.
func Request(ctx context.Context, nc *nats.Conn, subject string, payload, reply any, timeout time.Duration) error {
	data, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	msg, err := nc.RequestWithContext(ctx, subject, data)
	if err != nil {
		return err
	}
	return Decode(msg.Data, reply)
}
