// Package events is the only place where NATS subjects, stream and consumer
// names and message payloads are spelled. See SPEC §4.
package events

import (
	"slices"
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
	controlPrefix  = "rahat.cp."
	rpcPrefix      = "rahat.rpc."
	alertPrefix    = "rahat.alert."
	auditPrefix    = "rahat.audit."
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

// ControlSubject is rahat.cp.<agentID>.<kind>.<phase>: an event about a run
// of agentID that only the control plane decides (ControlPhase). No agent
// may publish under rahat.cp.>.
func ControlSubject(agentID, kind, phase string) string {
	return controlPrefix + agentID + "." + kind + "." + phase
}

// Subject is a parsed event subject.
type Subject struct {
	AgentID, Kind, Phase string
	// Control is true for rahat.cp.> (published by the control plane),
	// false for rahat.evt.> (published by the agent AgentID).
	Control bool
}

// ParseSubject splits rahat.evt.<agentID>.<kind>.<phase> or
// rahat.cp.<agentID>.<kind>.<phase>; ok is false for any other subject.
func ParseSubject(subject string) (s Subject, ok bool) {
	rest, found := strings.CutPrefix(subject, eventsPrefix)
	if !found {
		if rest, found = strings.CutPrefix(subject, controlPrefix); !found {
			return s, false
		}
		s.Control = true
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return Subject{}, false
	}
	s.AgentID, s.Kind, s.Phase = parts[0], parts[1], parts[2]
	return s, true
}

// ParseEventSubject splits rahat.evt.<agentID>.<kind>.<phase>, an agent's
// own event; ok is false for any other subject, rahat.cp.> included.
func ParseEventSubject(subject string) (agentID, kind, phase string, ok bool) {
	s, ok := ParseSubject(subject)
	if !ok || s.Control {
		return "", "", "", false
	}
	return s.AgentID, s.Kind, s.Phase, true
}

// agentPhases are the phases an agent publishes of each kind, on its own
// rahat.evt.<agent>.> subjects.
var agentPhases = map[string][]string{
	KindAgent:   {PhaseOnline, PhaseHeartbeat, PhaseOffline},
	KindBackup:  {PhaseStarted, PhaseProgress, PhaseCompleted, PhaseFailed},
	KindRestore: {PhaseStarted, PhaseProgress, PhaseCompleted, PhaseFailed},
	KindVerify:  {PhaseStarted, PhaseProgress, PhaseCompleted, PhaseFailed},
}

// controlPhases are the phases only the control plane decides, published
// on rahat.cp.<agent>.>: a run queued or skipped, a command that could not
// be queued (failed), a run whose agent went silent (lost), a backup
// deleted or expired, an expired backup's object purged or its deletion
// failed, a verification queued.
var controlPhases = map[string][]string{
	KindBackup:  {PhaseQueued, PhaseSkipped, PhaseFailed, PhaseLost, PhaseDeleted, PhaseExpired, PhasePurged, PhasePurgeFailed, PhaseChained},
	KindRestore: {PhaseQueued, PhaseFailed},
	KindVerify:  {PhaseQueued},
}

// AgentPhase reports whether an agent may publish phase of kind.
func AgentPhase(kind, phase string) bool { return slices.Contains(agentPhases[kind], phase) }

// ControlPhase reports whether the control plane publishes phase of kind.
func ControlPhase(kind, phase string) bool { return slices.Contains(controlPhases[kind], phase) }

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

// AgentLinks is what crosses between an agent's own NATS account and the
// control plane's (see natsd): every other subject an agent uses stays in
// its account, where nothing but the agent itself listens.
type AgentLinks struct {
	// Requests is what the agent sends into the control plane's account,
	// each answered at most once: its events (acknowledged by the
	// stream), its consumer's info, and its acks.
	Requests []string
	// StreamedRequests are the agent's requests answered by several
	// messages: its pull requests for commands.
	StreamedRequests []string
	// Services are the agent's RPC subjects, requested by the control
	// plane and answered by the agent.
	Services []string
	// FromAgent are one-way messages from the agent (transfer chunks).
	FromAgent []string
	// ToAgent are one-way messages to the agent (transfer control).
	ToAgent []string
}

// AgentAccountLinks is the AgentLinks of agentID.
func AgentAccountLinks(agentID string) AgentLinks {
	consumer := AgentConsumer(agentID)
	return AgentLinks{
		Requests: []string{
			eventsPrefix + agentID + ".>",
			"$JS.API.CONSUMER.INFO." + StreamCommands + "." + consumer,
			"$JS.ACK." + StreamCommands + "." + consumer + ".>",
		},
		StreamedRequests: []string{"$JS.API.CONSUMER.MSG.NEXT." + StreamCommands + "." + consumer},
		Services:         []string{rpcPrefix + agentID + ".>"},
		FromAgent:        []string{transferPrefix + agentID + ".*.data"},
		ToAgent:          []string{transferPrefix + agentID + ".*.ctl"},
	}
}
