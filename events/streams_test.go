package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/testsupport"
)

// TestEventConsumerUpgrade: an installation whose projector consumer read
// only rahat.evt.> keeps its place in the stream and then reads the
// control plane's rahat.cp.> events too.
func TestEventConsumerUpgrade(t *testing.T) {
	n := testsupport.StartNATS(t, nil)
	ctx := context.Background()
	const agent = "0b6c3f52-6d5e-4c39-9d0e-2f1b5d1e7a10"
	old, err := n.JS.CreateOrUpdateConsumer(ctx, events.StreamEvents, jetstream.ConsumerConfig{
		Durable: events.ProjectorConsumer, FilterSubject: "rahat.evt.>", AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 30 * time.Second, DeliverPolicy: jetstream.DeliverAllPolicy, MaxAckPending: 1000,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := events.Publish(ctx, n.JS, events.EventSubject(agent, events.KindAgent, events.PhaseOnline), "1", map[string]any{"v": 1}); err != nil {
		t.Fatal(err)
	}
	b, err := old.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range b.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	c, err := events.EnsureEventConsumer(ctx, n.JS, events.ProjectorConsumer)
	if err != nil {
		t.Fatalf("updating the consumer of an earlier version: %v", err)
	}
	cp := events.ControlSubject(agent, events.KindBackup, events.PhaseQueued)
	if err := events.Publish(ctx, n.JS, cp, "2", map[string]any{"v": 1}); err != nil {
		t.Fatal(err)
	}
	b, err = c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	m, ok := <-b.Messages()
	if !ok || m.Subject() != cp {
		t.Fatalf("after the update the consumer delivered %v (%v), want the new %s and not the acked event again", m, b.Error(), cp)
	}
}
