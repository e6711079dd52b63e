// Package notify is the alerting consumer of the EVENTS stream. It reads
// runs' events and the control plane's alerts with its own durable
// consumer, decides from the user's rules (or the job's) which ones
// notify, and records one delivery per event and channel before it
// acknowledges the event: an event delivered again finds its deliveries
// and adds none, an event never acknowledged comes back. A Dispatcher
// sends the deliveries, and an AlertChecker computes the alerts.
package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/notify"
)

// Opts configures Run.
type Opts struct {
	Pool *pgxpool.Pool       // required
	JS   jetstream.JetStream // required
	// PublicURL is the dashboard's address, for links; default
	// http://127.0.0.1:8080.
	PublicURL string
	// Email is true when the control plane can send email (SMTP is
	// configured): without it, email channels get no deliveries.
	Email  bool
	Logger *slog.Logger // default slog.Default()
	// Durable names the consumer; default events.NotifierConsumer.
	Durable string
	// Kick, when set, is called after deliveries were added (the
	// Dispatcher's Kick), so they go out at once.
	Kick func()
	// Projector names the history projector's consumer, whose progress
	// tells when an event about an unfinished run can be dropped; default
	// events.ProjectorConsumer.
	Projector string
}

func (o *Opts) validate() error {
	if o.Pool == nil || o.JS == nil {
		return errors.New("notify: Pool and JS are required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.PublicURL == "" {
		o.PublicURL = "http://127.0.0.1:8080"
	}
	o.PublicURL = strings.TrimRight(o.PublicURL, "/")
	if o.Durable == "" {
		o.Durable = events.NotifierConsumer
	}
	if o.Projector == "" {
		o.Projector = events.ProjectorConsumer
	}
	return nil
}

// errWait marks an event about a run the projector has not finished yet.
var errWait = errors.New("the run is not projected yet")

// errPoison marks an event that can never notify.
var errPoison = errors.New("poison event")

// retryDelay is how long a waiting or failed event stays away.
const retryDelay = 2 * time.Second

// Run consumes events until ctx ends. A database error is retried; an event
// that can never notify is terminated.
func Run(ctx context.Context, o Opts) error {
	if err := o.validate(); err != nil {
		return err
	}
	cons, err := events.EnsureLiveConsumer(ctx, o.JS, o.Durable, events.NotifierEvents...)
	if err != nil {
		return err
	}
	n := &Notifier{Opts: o, q: db.New()}
	applyCtx := context.WithoutCancel(ctx)
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		actx, cancel := context.WithTimeout(applyCtx, 30*time.Second)
		defer cancel()
		err := n.Handle(actx, msg.Subject(), msg.Data())
		if errors.Is(err, errWait) && n.projectorPassed(actx, msg) {
			// The projector may have applied the event since Handle read
			// the row: read it again before giving up.
			if err = n.Handle(actx, msg.Subject(), msg.Data()); errors.Is(err, errWait) {
				n.Logger.Warn("dropping a notification: the history projector applied its event and the run is still unfinished",
					"subject", msg.Subject())
				_ = msg.Term()
				return
			}
		}
		switch {
		case err == nil:
			_ = msg.Ack()
		case errors.Is(err, errWait):
			_ = msg.NakWithDelay(retryDelay)
		case errors.Is(err, errPoison):
			n.Logger.Warn("event cannot notify", "subject", msg.Subject(), "err", err)
			_ = msg.Term()
		default:
			n.Logger.Warn("notifying failed; will retry", "subject", msg.Subject(), "err", err)
			_ = msg.NakWithDelay(retryDelay)
		}
	})
	if err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	return nil
}

// projectorPassed reports whether the history projector has acknowledged
// everything up to msg (so the run's row is as final as it will be). An
// event about a run still unfinished waits for it however long the
// projector is down or behind: it is dropped only once the projector has
// applied it and the run did not end (an agent's stale or refused event).
func (n *Notifier) projectorPassed(ctx context.Context, msg jetstream.Msg) bool {
	meta, err := msg.Metadata()
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := n.JS.Consumer(ctx, events.StreamEvents, n.Projector)
	if err != nil {
		return false
	}
	info, err := c.Info(ctx)
	return err == nil && info.AckFloor.Stream >= meta.Sequence.Stream
}

// Notifier turns one event into deliveries.
type Notifier struct {
	Opts
	q *db.Queries
}

// NewNotifier is the Notifier of o, for tests that feed it events.
func NewNotifier(o Opts) (*Notifier, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	return &Notifier{Opts: o, q: db.New()}, nil
}

// Handle records the deliveries of one event received on subject. It is
// idempotent. Trust follows the subject as in the projector: an agent's
// event names only runs sent to that agent.
func (n *Notifier) Handle(ctx context.Context, subject string, data []byte) error {
	if user, kind, phase, ok := events.ParseAlertSubject(subject); ok {
		return n.alert(ctx, user, kind, phase, data)
	}
	sub, ok := events.ParseSubject(subject)
	if !ok {
		return fmt.Errorf("%w: subject %q", errPoison, subject)
	}
	agent, err := uuid.Parse(sub.AgentID)
	if err != nil {
		return fmt.Errorf("%w: agent %q", errPoison, sub.AgentID)
	}
	if sub.Control && !events.ControlPhase(sub.Kind, sub.Phase) || !sub.Control && !events.AgentPhase(sub.Kind, sub.Phase) {
		return fmt.Errorf("%w: %s is not a phase of that subject", errPoison, subject)
	}
	switch sub.Kind {
	case events.KindBackup:
		return n.backup(ctx, agent, sub, data)
	case events.KindRestore:
		return n.restore(ctx, agent, sub.Phase, data)
	case events.KindVerify:
		return n.verify(ctx, agent, sub.Phase, data)
	}
	return nil
}

func (n *Notifier) backup(ctx context.Context, agent uuid.UUID, sub events.Subject, data []byte) error {
	var kind string
	switch sub.Phase {
	case events.PhaseCompleted:
		kind = notify.EventBackupSucceeded
	case events.PhaseFailed, events.PhaseLost:
		kind = notify.EventBackupFailed
	case events.PhaseSkipped:
		kind = notify.EventBackupSkipped
	default:
		return nil
	}
	var ev events.BackupEvent
	if err := events.Decode(data, &ev); err != nil {
		return fmt.Errorf("%w: %v", errPoison, err)
	}
	run, err := uuid.Parse(ev.RunID)
	if err != nil {
		return fmt.Errorf("%w: runId %q", errPoison, ev.RunID)
	}
	c, err := n.q.NotifyBackupContext(ctx, n.Pool, db.NotifyBackupContextParams{ID: run, AgentID: agent})
	if errors.Is(db.MapErr(err), db.ErrNotFound) {
		return fmt.Errorf("%w: no run %s of agent %s", errPoison, run, agent)
	}
	if err != nil {
		return err
	}
	switch want := map[string][]string{
		notify.EventBackupSucceeded: {"success", "expired"},
		notify.EventBackupFailed:    {"failed"},
		notify.EventBackupSkipped:   {"skipped"},
	}[kind]; {
	case c.Status == "queued" || c.Status == "running":
		return errWait
	case !slices.Contains(want, c.Status):
		return nil // the run ended otherwise (a lost run that completed after all)
	}
	rules, err := notify.ParseRules(c.Rules)
	if err != nil {
		return err
	}
	if !rules.Wants(kind) {
		return nil
	}
	nt := notify.Notification{V: 1, ID: kind + ":" + run.String(), Event: kind, At: ev.At.UTC(),
		Link: n.PublicURL + "/history/" + run.String(),
		Job:  &notify.Ref{ID: c.BackupJobID.String(), Name: c.JobName},
		DB:   &notify.DBRef{ID: c.DatabaseID.String(), Name: c.DatabaseName, Engine: c.Engine},
		Run: &notify.Run{Type: "backup", ID: run.String(), Status: c.Status, SizeBytes: c.FileSize,
			DurationMs: c.DurationMs, CompletedAt: c.CompletedAt},
	}
	switch kind {
	case notify.EventBackupSucceeded:
		nt.Status, nt.Title = "success", fmt.Sprintf("Backup of %s succeeded", c.JobName)
	case notify.EventBackupFailed:
		nt.Status, nt.Title = "failed", fmt.Sprintf("Backup of %s failed", c.JobName)
	case notify.EventBackupSkipped:
		nt.Status, nt.Title = "skipped", fmt.Sprintf("Backup of %s was skipped", c.JobName)
	}
	if c.ErrorMessage != nil {
		nt.Error = *c.ErrorMessage
	}
	return n.enqueue(ctx, c.UserID, nt)
}

func (n *Notifier) restore(ctx context.Context, agent uuid.UUID, phase string, data []byte) error {
	var kind string
	switch phase {
	case events.PhaseCompleted:
		kind = notify.EventRestoreSucceeded
	case events.PhaseFailed:
		kind = notify.EventRestoreFailed
	default:
		return nil
	}
	var ev events.RestoreEvent
	if err := events.Decode(data, &ev); err != nil {
		return fmt.Errorf("%w: %v", errPoison, err)
	}
	id, err := uuid.Parse(ev.RestoreID)
	if err != nil {
		return fmt.Errorf("%w: restoreId %q", errPoison, ev.RestoreID)
	}
	c, err := n.q.NotifyRestoreContext(ctx, n.Pool, db.NotifyRestoreContextParams{ID: id, AgentID: agent})
	if errors.Is(db.MapErr(err), db.ErrNotFound) {
		return fmt.Errorf("%w: no restore %s of agent %s", errPoison, id, agent)
	}
	if err != nil {
		return err
	}
	switch {
	case c.Status == "queued" || c.Status == "running":
		return errWait
	case (c.Status == "success") != (kind == notify.EventRestoreSucceeded):
		return nil
	}
	rules, err := notify.ParseRules(c.Rules)
	if err != nil {
		return err
	}
	if !rules.Wants(kind) {
		return nil
	}
	nt := notify.Notification{V: 1, ID: kind + ":" + id.String(), Event: kind, At: ev.At.UTC(),
		Link:   n.PublicURL + "/restores",
		Status: c.Status,
		Job:    &notify.Ref{ID: c.BackupJobID.String(), Name: c.JobName},
		DB:     &notify.DBRef{ID: c.TargetDatabaseID.String(), Name: c.DatabaseName, Engine: c.Engine},
		Run: &notify.Run{Type: "restore", ID: id.String(), BackupID: c.BackupHistoryID.String(), Status: c.Status,
			SizeBytes: c.FileSize, DurationMs: c.DurationMs, CompletedAt: c.CompletedAt},
	}
	if kind == notify.EventRestoreSucceeded {
		nt.Title = fmt.Sprintf("Restore of %s into %s succeeded", c.JobName, c.DatabaseName)
	} else {
		nt.Status, nt.Title = "failed", fmt.Sprintf("Restore of %s into %s failed", c.JobName, c.DatabaseName)
	}
	if c.ErrorMessage != nil {
		nt.Error = *c.ErrorMessage
	}
	return n.enqueue(ctx, c.UserID, nt)
}

func (n *Notifier) verify(ctx context.Context, agent uuid.UUID, phase string, data []byte) error {
	if phase != events.PhaseCompleted && phase != events.PhaseFailed {
		return nil
	}
	var ev events.VerifyEvent
	if err := events.Decode(data, &ev); err != nil {
		return fmt.Errorf("%w: %v", errPoison, err)
	}
	if phase == events.PhaseCompleted && (ev.Result == nil || ev.Result.OverallStatus == "PASSED") {
		return nil
	}
	backup, err := uuid.Parse(ev.BackupID)
	if err != nil {
		return fmt.Errorf("%w: backupId %q", errPoison, ev.BackupID)
	}
	c, err := n.q.NotifyBackupContext(ctx, n.Pool, db.NotifyBackupContextParams{ID: backup, AgentID: agent})
	if errors.Is(db.MapErr(err), db.ErrNotFound) {
		return fmt.Errorf("%w: no backup %s of agent %s", errPoison, backup, agent)
	}
	if err != nil {
		return err
	}
	// Only a result the history holds notifies: an agent cannot announce
	// failures the projector refused, and a later result wins.
	at := ev.At.UTC()
	switch {
	case c.VerifiedAt == nil || c.VerifiedAt.Before(at.Add(-time.Microsecond)):
		return errWait
	case c.VerifiedAt.After(at.Add(time.Microsecond)) || c.VerificationStatus != "FAILED":
		return nil
	}
	rules, err := notify.ParseRules(c.Rules)
	if err != nil {
		return err
	}
	if !rules.Wants(notify.EventVerificationFailed) {
		return nil
	}
	key := ev.VerifyID
	if key == "" {
		key = ev.ID
	}
	kind := notify.EventVerificationFailed
	nt := notify.Notification{V: 1, ID: kind + ":" + key, Event: kind, Status: "failed", At: ev.At.UTC(),
		Title: fmt.Sprintf("Verification of a backup of %s failed", c.JobName),
		Link:  n.PublicURL + "/history/" + backup.String(),
		Job:   &notify.Ref{ID: c.BackupJobID.String(), Name: c.JobName},
		DB:    &notify.DBRef{ID: c.DatabaseID.String(), Name: c.DatabaseName, Engine: c.Engine},
		Run: &notify.Run{Type: "verification", ID: key, BackupID: backup.String(), Status: "failed",
			Level: ev.Level, SizeBytes: c.FileSize},
		Error: ev.Error,
	}
	if ev.Result != nil {
		nt.Run.Level = ev.Result.VerificationMethod
		for _, ch := range ev.Result.Checks {
			if !ch.Passed {
				nt.Details = append(nt.Details, notify.Detail{Name: "Check " + ch.Check, Value: ch.Message})
			}
		}
	}
	return n.enqueue(ctx, c.UserID, nt)
}

func (n *Notifier) alert(ctx context.Context, userS, kind, phase string, data []byte) error {
	var ev events.AlertEvent
	if err := events.Decode(data, &ev); err != nil {
		return fmt.Errorf("%w: %v", errPoison, err)
	}
	if ev.UserID != userS || ev.Kind != kind || ev.Phase != phase {
		return fmt.Errorf("%w: alert payload does not match its subject", errPoison)
	}
	user, err := uuid.Parse(ev.UserID)
	if err != nil {
		return fmt.Errorf("%w: userId %q", errPoison, ev.UserID)
	}
	object, err := uuid.Parse(ev.ObjectID)
	if err != nil {
		return fmt.Errorf("%w: objectId %q", errPoison, ev.ObjectID)
	}
	nt := notify.Notification{V: 1, At: ev.At.UTC()}
	switch kind {
	case events.AlertRPO:
		c, err := n.q.RPOAlertContext(ctx, n.Pool, object)
		if errors.Is(db.MapErr(err), db.ErrNotFound) || err == nil && c.UserID != user {
			return nil // the job is gone
		}
		if err != nil {
			return err
		}
		nt.Job = &notify.Ref{ID: c.ID.String(), Name: c.Name}
		nt.DB = &notify.DBRef{Name: c.DatabaseName, Engine: c.Engine}
		nt.Link = n.PublicURL + "/jobs/" + c.ID.String()
		last := "never"
		if ev.LastGoodAt != nil {
			last = ev.LastGoodAt.UTC().Format(time.RFC1123)
		}
		nt.Details = []notify.Detail{{Name: "Last good backup", Value: last}}
		if ev.Threshold > 0 {
			nt.Details = append(nt.Details, notify.Detail{Name: "Objective", Value: fmt.Sprintf("a good backup every %d hours", ev.Threshold)})
		}
		if phase == events.PhaseBreached {
			nt.Event, nt.Status = notify.EventRPOBreached, "breached"
			nt.Title = fmt.Sprintf("No good backup of %s", c.Name)
			if ev.Threshold > 0 {
				nt.Title += fmt.Sprintf(" for %d hours", ev.Threshold)
			}
		} else {
			nt.Event, nt.Status = notify.EventRPORecovered, "recovered"
			nt.Title = fmt.Sprintf("%s is within its recovery point objective again", c.Name)
		}
	case events.AlertAgentOffline:
		c, err := n.q.AgentAlertContext(ctx, n.Pool, object)
		if errors.Is(db.MapErr(err), db.ErrNotFound) || err == nil && c.UserID != user {
			return nil
		}
		if err != nil {
			return err
		}
		nt.Agent = &notify.Ref{ID: c.ID.String(), Name: c.Name}
		nt.Link = n.PublicURL + "/agents"
		if ev.LastSeenAt != nil {
			nt.Details = []notify.Detail{{Name: "Last heard from", Value: ev.LastSeenAt.UTC().Format(time.RFC1123)}}
		}
		if phase == events.PhaseBreached {
			nt.Event, nt.Status, nt.Title = notify.EventAgentOffline, "offline", fmt.Sprintf("Agent %s is offline", c.Name)
			if ev.Threshold > 0 {
				nt.Title += fmt.Sprintf(" for more than %d minutes", ev.Threshold)
			}
		} else {
			nt.Event, nt.Status, nt.Title = notify.EventAgentOnline, "online", fmt.Sprintf("Agent %s is back online", c.Name)
		}
	default:
		return fmt.Errorf("%w: alert kind %q", errPoison, kind)
	}
	nt.ID = nt.Event + ":" + ev.ID
	return n.enqueue(ctx, user, nt)
}

func (n *Notifier) enqueue(ctx context.Context, user uuid.UUID, nt notify.Notification) error {
	payload, err := json.Marshal(nt)
	if err != nil {
		return err
	}
	added, err := n.q.EnqueueDeliveries(ctx, n.Pool, db.EnqueueDeliveriesParams{EventKey: nt.ID, Kind: nt.Event,
		Payload: payload, UserID: user, WithEmail: n.Email})
	if err != nil {
		return err
	}
	if added > 0 && n.Kick != nil {
		n.Kick()
	}
	return nil
}
