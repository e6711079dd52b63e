package events

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultEventsMaxAge is how long StreamEvents keeps events by default.
const DefaultEventsMaxAge = 30 * 24 * time.Hour

// StreamOpts configures EnsureStreams.
type StreamOpts struct {
	// EventsMaxAge bounds how long events are kept; default DefaultEventsMaxAge.
	EventsMaxAge time.Duration
	// CommandsMaxAge bounds how long a command waits for its agent (a
	// stale one would be refused anyway); default 7 days.
	CommandsMaxAge time.Duration
	// Replicas of each stream; default 1.
	Replicas int
}

// CommandsDuplicateWindow is how long StreamCommands remembers a
// Nats-Msg-Id: a command published again within it is stored once.
const CommandsDuplicateWindow = time.Hour

// EnsureStreams creates or updates StreamCommands (work queue over
// rahat.cmd.>) and StreamEvents (limits retention over rahat.evt.> and
// rahat.cp.>). It is
// idempotent and safe to call at every start.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, o StreamOpts) error {
	if o.EventsMaxAge == 0 {
		o.EventsMaxAge = DefaultEventsMaxAge
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.CommandsMaxAge == 0 {
		o.CommandsMaxAge = 7 * 24 * time.Hour
	}
	cfgs := []jetstream.StreamConfig{
		{
			Name:        StreamCommands,
			Description: "RahatBack commands, control plane to one agent",
			Subjects:    []string{commandsPrefix + ">"},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    o.Replicas,
			Duplicates:  CommandsDuplicateWindow,
			MaxAge:      o.CommandsMaxAge,
		},
		{
			Name:        StreamEvents,
			Description: "RahatBack events: agents' own (rahat.evt.>), the control plane's (rahat.cp.>), its alerts (rahat.alert.>) and the audit trail (rahat.audit.>)",
			Subjects:    []string{eventsPrefix + ">", controlPrefix + ">", alertPrefix + ">", auditPrefix + ">"},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    o.Replicas,
			Duplicates:  10 * time.Minute,
			MaxAge:      o.EventsMaxAge,
		},
	}
	for _, cfg := range cfgs {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}

// EnsureAgentConsumer creates or updates the durable pull consumer through
// which agentID reads its commands. Commands not acked within AckWait are
// redelivered; the agent extends it with InProgress during long work.
func EnsureAgentConsumer(ctx context.Context, js jetstream.JetStream, agentID string) error {
	_, err := js.CreateOrUpdateConsumer(ctx, StreamCommands, jetstream.ConsumerConfig{
		Durable:       AgentConsumer(agentID),
		Description:   "commands of agent " + agentID,
		FilterSubject: commandsPrefix + agentID + ".>",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       time.Minute,
		MaxDeliver:    5,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("consumer for agent %s: %w", agentID, err)
	}
	return nil
}

// DeleteAgentConsumer removes agentID's consumer; a missing one is not an error.
func DeleteAgentConsumer(ctx context.Context, js jetstream.JetStream, agentID string) error {
	err := js.DeleteConsumer(ctx, StreamCommands, AgentConsumer(agentID))
	if err != nil && err != jetstream.ErrConsumerNotFound {
		return err
	}
	return nil
}

// Durable consumers of StreamEvents: the history projector, the notifier
// and the audit log's projector, each with its own place in the stream.
const (
	ProjectorConsumer = "projector"
	NotifierConsumer  = "notifier"
	AuditConsumer     = "audit"
)

// Filters of the StreamEvents consumers.
var (
	// RunEvents are agents' and the control plane's events about runs and
	// agents (what the history projector reads).
	RunEvents = []string{eventsPrefix + ">", controlPrefix + ">"}
	// NotifierEvents are RunEvents and the control plane's alerts.
	NotifierEvents = []string{eventsPrefix + ">", controlPrefix + ">", alertPrefix + ">"}
	// AuditEvents are the audit trail.
	AuditEvents = []string{auditPrefix + ">"}
)

// EnsureEventConsumer creates or updates a durable pull consumer over
// RunEvents, from the first event kept, and returns it.
func EnsureEventConsumer(ctx context.Context, js jetstream.JetStream, durable string) (jetstream.Consumer, error) {
	return EnsureConsumer(ctx, js, durable, RunEvents...)
}

// EnsureConsumer creates or updates a durable pull consumer of
// StreamEvents over the subjects filters, from the first event kept, and
// returns it. Unacknowledged events come back after 30 s.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, durable string, filters ...string) (jetstream.Consumer, error) {
	return ensureConsumer(ctx, js, durable, jetstream.DeliverAllPolicy, filters)
}

// EnsureLiveConsumer is EnsureConsumer for a consumer that, when it is
// first created, starts with the events published from then on: the
// notifier of an upgraded installation must not announce a month of
// history. Once created it keeps its place like any durable consumer.
func EnsureLiveConsumer(ctx context.Context, js jetstream.JetStream, durable string, filters ...string) (jetstream.Consumer, error) {
	return ensureConsumer(ctx, js, durable, jetstream.DeliverNewPolicy, filters)
}

func ensureConsumer(ctx context.Context, js jetstream.JetStream, durable string, from jetstream.DeliverPolicy, filters []string) (jetstream.Consumer, error) {
	if c, err := js.Consumer(ctx, StreamEvents, durable); err == nil {
		// Its deliver policy cannot change; keep the one it was made with.
		from = c.CachedInfo().Config.DeliverPolicy
	}
	c, err := js.CreateOrUpdateConsumer(ctx, StreamEvents, jetstream.ConsumerConfig{
		Durable:        durable,
		FilterSubjects: filters,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        30 * time.Second,
		DeliverPolicy:  from,
		MaxAckPending:  1000,
	})
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", durable, err)
	}
	return c, nil
}
