// Package notify holds what RahatBack tells its users and how: the rules
// that choose which events notify, the notification itself and its
// renderings (email text and HTML, signed webhook JSON, Slack and Discord
// messages), and the channels that carry it (email through SMTP, webhooks
// through the egress policy). handlers/notify turns events into
// deliveries; this package only formats and sends.
package notify

import (
	"encoding/json"
	"fmt"
)

// Rules choose which events notify a user: the user's default, or a
// job's own set replacing it whole. The JSON names are the API's.
type Rules struct {
	BackupFailed       bool `json:"backupFailed"`
	BackupSkipped      bool `json:"backupSkipped"`
	BackupSucceeded    bool `json:"backupSucceeded"`
	VerificationFailed bool `json:"verificationFailed"`
	RestoreFinished    bool `json:"restoreFinished"`
	// AgentOfflineMinutes alerts when one of the user's agents has not
	// been heard from this long, and again when it is back; nil or 0:
	// never. A user default only (a job's rules do not carry it).
	AgentOfflineMinutes *int `json:"agentOfflineMinutes,omitempty"`
	// RPOHours alerts when a job has had no good backup (successful, not
	// failed verification) for this long, and again when it has one;
	// nil or 0: never.
	RPOHours *int `json:"rpoHours,omitempty"`
}

// DefaultRules are a new user's: every failure and success of a backup
// and failed verifications, as the seed mails them (the migration's
// column default says the same).
var DefaultRules = Rules{BackupFailed: true, BackupSkipped: true, BackupSucceeded: true, VerificationFailed: true}

// Limits of the numeric rules.
const (
	MaxAgentOfflineMinutes = 7 * 24 * 60
	MaxRPOHours            = 365 * 24
)

// Validate returns, per JSON field name, what is wrong with r; job is true
// for a job's rules (which cannot carry agentOfflineMinutes).
func (r Rules) Validate(job bool) map[string]string {
	f := map[string]string{}
	if m := r.AgentOfflineMinutes; m != nil {
		switch {
		case job && *m != 0:
			f["agentOfflineMinutes"] = "is a user default, not a job rule"
		case *m < 0 || *m > MaxAgentOfflineMinutes:
			f["agentOfflineMinutes"] = fmt.Sprintf("must be 0-%d", MaxAgentOfflineMinutes)
		}
	}
	if h := r.RPOHours; h != nil && (*h < 0 || *h > MaxRPOHours) {
		f["rpoHours"] = fmt.Sprintf("must be 0-%d", MaxRPOHours)
	}
	return f
}

// ParseRules reads stored rules; empty input is DefaultRules.
func ParseRules(raw []byte) (Rules, error) {
	if len(raw) == 0 {
		return DefaultRules, nil
	}
	var r Rules
	if err := json.Unmarshal(raw, &r); err != nil {
		return Rules{}, fmt.Errorf("notify: stored rules: %w", err)
	}
	return r, nil
}

// Wants reports whether r notifies event kind (one of the Event* kinds).
func (r Rules) Wants(kind string) bool {
	switch kind {
	case EventBackupFailed:
		return r.BackupFailed
	case EventBackupSkipped:
		return r.BackupSkipped
	case EventBackupSucceeded:
		return r.BackupSucceeded
	case EventVerificationFailed:
		return r.VerificationFailed
	case EventRestoreSucceeded, EventRestoreFailed:
		return r.RestoreFinished
	case EventRPOBreached, EventRPORecovered:
		return r.RPOHours != nil && *r.RPOHours > 0
	case EventAgentOffline, EventAgentOnline:
		return r.AgentOfflineMinutes != nil && *r.AgentOfflineMinutes > 0
	case EventTest:
		return true
	}
	return false
}
