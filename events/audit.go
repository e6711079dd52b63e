package events

import (
	"strings"
	"time"
)

// AuditSubject is rahat.audit.<userID>.<action>, where the control plane
// records what a user did (action may hold dots: "database.create"). No
// agent may publish under rahat.audit.>.
func AuditSubject(userID, action string) string { return auditPrefix + userID + "." + action }

// ParseAuditSubject splits an AuditSubject; ok is false for any other.
func ParseAuditSubject(subject string) (userID, action string, ok bool) {
	rest, found := strings.CutPrefix(subject, auditPrefix)
	if !found {
		return "", "", false
	}
	userID, action, ok = strings.Cut(rest, ".")
	return userID, action, ok && userID != "" && action != ""
}

// AuditEvent is one state-changing request of a user: what was asked, by
// whom, from where, on which object, and how it ended. It never holds a
// request body, so no secret reaches it.
type AuditEvent struct {
	V          int       `json:"v"`
	ID         string    `json:"id"` // also the Nats-Msg-Id
	UserID     string    `json:"userId"`
	At         time.Time `json:"at"`
	Action     string    `json:"action"`
	ObjectType string    `json:"objectType,omitempty"`
	ObjectID   string    `json:"objectId,omitempty"`
	IP         string    `json:"ip,omitempty"`
	UserAgent  string    `json:"userAgent,omitempty"`
	Outcome    string    `json:"outcome"` // success | failure
	StatusCode int       `json:"statusCode"`
	Detail     string    `json:"detail,omitempty"` // the error message answered, on failure
	RequestID  string    `json:"requestId,omitempty"`
}

// Alert kinds and phases: rahat.alert.<userID>.<kind>.<phase>.
const (
	AlertRPO          = "rpo"
	AlertAgentOffline = "agent_offline"

	PhaseBreached  = "breached"
	PhaseRecovered = "recovered"
)

// AlertSubject is rahat.alert.<userID>.<kind>.<phase>: a condition the
// control plane computes from its tables began or ended. No agent may
// publish under rahat.alert.>.
func AlertSubject(userID, kind, phase string) string {
	return alertPrefix + userID + "." + kind + "." + phase
}

// ParseAlertSubject splits an AlertSubject; ok is false for any other.
func ParseAlertSubject(subject string) (userID, kind, phase string, ok bool) {
	rest, found := strings.CutPrefix(subject, alertPrefix)
	if !found {
		return "", "", "", false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

// AlertEvent is the payload of an AlertSubject. ID is the same for the
// alert's breach and recovery (the object and the breach time); with the
// phase it keys the notification.
type AlertEvent struct {
	V          int       `json:"v"`
	ID         string    `json:"id"`
	UserID     string    `json:"userId"`
	Kind       string    `json:"kind"`
	Phase      string    `json:"phase"`
	ObjectID   string    `json:"objectId"`
	BreachedAt time.Time `json:"breachedAt"`
	At         time.Time `json:"at"`
	// Threshold is the rule when the alert changed: rpoHours or
	// agentOfflineMinutes.
	Threshold int `json:"threshold,omitempty"`
	// LastGoodAt is, for rpo, when the job's newest good backup completed
	// (absent: never); LastSeenAt is, for agent_offline, when the agent
	// was last heard from.
	LastGoodAt *time.Time `json:"lastGoodAt,omitempty"`
	LastSeenAt *time.Time `json:"lastSeenAt,omitempty"`
}
