package notify

import (
	"bytes"
	"fmt"
	"html/template"
	"strings"
	"time"
)

// Event kinds: what a notification is about.
const (
	EventBackupFailed       = "backup.failed"
	EventBackupSkipped      = "backup.skipped"
	EventBackupSucceeded    = "backup.succeeded"
	EventVerificationFailed = "verification.failed"
	EventRestoreSucceeded   = "restore.succeeded"
	EventRestoreFailed      = "restore.failed"
	EventRPOBreached        = "rpo.breached"
	EventRPORecovered       = "rpo.recovered"
	EventAgentOffline       = "agent.offline"
	EventAgentOnline        = "agent.online"
	EventTest               = "test"
)

// Notification is one thing to tell a user. It is stored with each of its
// deliveries and is, as JSON, the body of a generic webhook (with SentAt
// set at each attempt, so the signature covers the time).
type Notification struct {
	V     int    `json:"v"`
	ID    string `json:"id"`    // the event's key, the same for every channel and attempt
	Event string `json:"event"` // one of the Event* kinds
	// Status is the outcome in one word: failed, skipped, success,
	// breached, recovered, offline, online, test.
	Status  string    `json:"status"`
	Title   string    `json:"title"`
	At      time.Time `json:"at"` // when it happened
	Link    string    `json:"link,omitempty"`
	SentAt  time.Time `json:"sentAt,omitzero"`
	Job     *Ref      `json:"job,omitempty"`
	DB      *DBRef    `json:"database,omitempty"`
	Agent   *Ref      `json:"agent,omitempty"`
	Run     *Run      `json:"run,omitempty"`
	Error   string    `json:"error,omitempty"`
	Details []Detail  `json:"details,omitempty"`
}

// Ref names an object.
type Ref struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// DBRef is a database and its engine.
type DBRef struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Engine string `json:"engine"`
}

// Run is the backup, restore or verification a notification is about.
type Run struct {
	Type        string     `json:"type"` // backup, restore, verification
	ID          string     `json:"id"`
	BackupID    string     `json:"backupId,omitempty"`
	Status      string     `json:"status"`
	SizeBytes   *int64     `json:"sizeBytes,omitempty"`
	DurationMs  *int64     `json:"durationMs,omitempty"`
	CompletedAt *time.Time `json:"completedAt,omitempty"`
	Level       string     `json:"level,omitempty"`
}

// Detail is one more labelled line (a failed check, a threshold).
type Detail struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Failure reports whether n tells of something that went wrong (its
// colour in Slack and Discord).
func (n Notification) Failure() bool {
	switch n.Status {
	case "failed", "skipped", "breached", "offline":
		return true
	}
	return false
}

// Subject is the email subject and the first line of chat messages.
func (n Notification) Subject() string { return "[RahatBack] " + n.Title }

// Lines are the labelled facts of n, in the order every rendering shows them.
func (n Notification) Lines() []Detail {
	var out []Detail
	add := func(name, value string) {
		if value != "" {
			out = append(out, Detail{name, value})
		}
	}
	if n.Job != nil {
		add("Job", n.Job.Name)
	}
	if n.DB != nil {
		add("Database", n.DB.Name+" ("+n.DB.Engine+")")
	}
	if n.Agent != nil {
		add("Agent", n.Agent.Name)
	}
	add("Status", n.Status)
	if r := n.Run; r != nil {
		add("Level", r.Level)
		if r.SizeBytes != nil {
			add("Size", HumanBytes(*r.SizeBytes))
		}
		if r.DurationMs != nil {
			add("Duration", (time.Duration(*r.DurationMs) * time.Millisecond).Round(time.Millisecond).String())
		}
	}
	add("When", n.At.UTC().Format(time.RFC1123))
	add("Error", n.Error)
	out = append(out, n.Details...)
	return out
}

// HumanBytes is n in B, KiB, MiB or GiB.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 3; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGT"[exp])
}

// Text is the plain-text email body.
func (n Notification) Text() string {
	var b strings.Builder
	b.WriteString(n.Title + "\n\n")
	for _, l := range n.Lines() {
		fmt.Fprintf(&b, "%-10s %s\n", l.Name+":", l.Value)
	}
	if n.Link != "" {
		b.WriteString("\nOpen in RahatBack: " + n.Link + "\n")
	}
	return b.String()
}

var htmlBody = template.Must(template.New("email").Parse(`<!doctype html>
<html><body style="font-family:sans-serif">
<h2 style="color:{{if .N.Failure}}#b42318{{else}}#067647{{end}}">{{.N.Title}}</h2>
<table cellpadding="4">{{range .Lines}}<tr><th align="left">{{.Name}}</th><td>{{.Value}}</td></tr>{{end}}</table>
{{if .N.Link}}<p><a href="{{.N.Link}}">Open in RahatBack</a></p>{{end}}
</body></html>`))

// HTML is the HTML email body; every value is escaped.
func (n Notification) HTML() string {
	var b bytes.Buffer
	if err := htmlBody.Execute(&b, struct {
		N     Notification
		Lines []Detail
	}{n, n.Lines()}); err != nil {
		return "<pre>" + template.HTMLEscapeString(n.Text()) + "</pre>"
	}
	return b.String()
}
