// Package events is the only place where NATS subjects, stream and consumer
// names and message payloads are spelled. See SPEC §4.
package events

import (
	"strings"
	"time"
)

// Stream names.
const (
	// StreamCommands holds control plane → agent commands (work queue).
	StreamCommands = "COMMANDS"
	// StreamEvents holds agent → everyone events (limits retention).
	StreamEvents = "EVENTS"
)

const (
	commandsPrefix = "rahat.cmd."
	eventsPrefix   = "rahat.evt."
	rpcPrefix      = "rahat.rpc."
)

// Command kinds, the last token of a command subject.
const (
	CommandBackup  = "backup"
	CommandRestore = "restore"
	CommandVerify  = "verify"
)

// RPC methods, the last token of a request/reply subject.
const (
	RPCDBTest = "dbtest"
	RPCDelete = "delete"
)

// Event kinds and phases: rahat.evt.<agent>.<kind>.<phase>.
const (
	KindAgent   = "agent"
	KindBackup  = "backup"
	KindRestore = "restore"
	KindVerify  = "verify"

	PhaseOnline    = "online"
	PhaseHeartbeat = "heartbeat"
	PhaseOffline   = "offline"

	PhaseStarted   = "started"
	PhaseProgress  = "progress"
	PhaseCompleted = "completed"
	PhaseFailed    = "failed"
)

// DefaultRPCTimeout is how long the control plane waits for an agent's reply.
const DefaultRPCTimeout = 30 * time.Second

// CommandSubject is rahat.cmd.<agentID>.<kind>.
func CommandSubject(agentID, kind string) string {
	return commandsPrefix + agentID + "." + kind
}

// RPCSubject is rahat.rpc.<agentID>.<method>.
func RPCSubject(agentID, method string) string {
	return rpcPrefix + agentID + "." + method
}

// EventSubject is rahat.evt.<agentID>.<kind>.<phase>.
func EventSubject(agentID, kind, phase string) string {
	return eventsPrefix + agentID + "." + kind + "." + phase
}

// ParseEventSubject splits rahat.evt.<agentID>.<kind>.<phase>; ok is false for
// any other subject.
func ParseEventSubject(subject string) (agentID, kind, phase string, ok bool) {
	rest, found := strings.CutPrefix(subject, eventsPrefix)
	if !found {
		return "", "", "", false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

// AgentConsumer is the durable consumer through which one agent pulls its
// commands from StreamCommands.
func AgentConsumer(agentID string) string { return "agent-" + agentID }

// AgentNATSUser is the NATS user name of an agent.
func AgentNATSUser(agentID string) string { return "agent-" + agentID }

// AgentIDFromNATSUser reverses AgentNATSUser.
func AgentIDFromNATSUser(user string) (string, bool) {
	id, ok := strings.CutPrefix(user, "agent-")
	return id, ok && id != ""
}

// AgentInboxPrefix is the private inbox prefix of an agent: its replies and
// JetStream acks arrive under it, and no other agent may subscribe to it.
func AgentInboxPrefix(agentID string) string { return "_INBOX_" + strings.ReplaceAll(agentID, "-", "") }

// Permissions lists the subjects a NATS user may publish and subscribe to.
// AllowResponses lets it answer requests it received (one reply each).
type Permissions struct {
	Publish        []string
	Subscribe      []string
	AllowResponses bool
}

// AgentPermissions is everything one agent may do on NATS: pull and ack its
// own commands, publish its own events, serve its own RPC subjects, read
// its own inbox and stream its own transfers (rahat.xfer.<id>.>). Nothing
// else.
func AgentPermissions(agentID string) Permissions {
	consumer := AgentConsumer(agentID)
	return Permissions{
		Publish: []string{
			eventsPrefix + agentID + ".>",
			"$JS.API.CONSUMER.INFO." + StreamCommands + "." + consumer,
			"$JS.API.CONSUMER.MSG.NEXT." + StreamCommands + "." + consumer,
			"$JS.ACK." + StreamCommands + "." + consumer + ".>",
			TransferSubjects(agentID),
		},
		Subscribe: []string{
			rpcPrefix + agentID + ".>",
			AgentInboxPrefix(agentID) + ".>",
			TransferSubjects(agentID),
		},
		AllowResponses: true,
	}
}

// CommandKind returns the kind of a command subject of agentID
// (rahat.cmd.<agentID>.<kind>), or "" for any other subject.
func CommandKind(agentID, subject string) string {
	kind, ok := strings.CutPrefix(subject, commandsPrefix+agentID+".")
	if !ok || strings.Contains(kind, ".") {
		return ""
	}
	return kind
}
