package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/events/natsd"
	"github.com/rahatback/rahatback/outbox"
	"github.com/rahatback/rahatback/testsupport"
)

func TestMain(m *testing.M) { os.Exit(testsupport.Main(m)) }

// connect is another control plane's connection to n.
func connect(t *testing.T, n *testsupport.NATS) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(n.Server.ClientURL(), nats.UserInfo(natsd.ControlPlaneUser, n.ControlPlanePassword),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// msgs are n events of agent, numbered from first.
func msgs(agent string, first, n int) []outbox.Message {
	out := make([]outbox.Message, n)
	for i := range out {
		id := fmt.Sprintf("%s:%d", agent, first+i)
		out[i] = outbox.Message{Subject: events.ControlSubject(agent, events.KindBackup, events.PhaseQueued), MsgID: id, Data: []byte(id)}
	}
	return out
}

func add(t *testing.T, pool *pgxpool.Pool, m []outbox.Message) {
	t.Helper()
	if err := db.WithTx(context.Background(), pool, func(tx pgx.Tx) error { return outbox.Add(context.Background(), tx, m...) }); err != nil {
		t.Fatal(err)
	}
}

func relay(t *testing.T, pool *pgxpool.Pool, js jetstream.JetStream) *outbox.Relay {
	t.Helper()
	r, err := outbox.New(outbox.Relay{Pool: pool, JS: js, Logger: testsupport.Logger(t), Batch: 50,
		Interval: 50 * time.Millisecond, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func run(t *testing.T, r *outbox.Relay) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Run(ctx); err != nil {
			t.Errorf("relay: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// stored returns the data of every message in EVENTS, in stream order.
func stored(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(m.Data))
	}
	return out
}

// waitEmpty waits until the outbox is empty.
func waitEmpty(t *testing.T, pool *pgxpool.Pool, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		n, err := db.New().OutboxPending(context.Background(), pool)
		if err == nil && n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox still holds %d messages (%v) after %s", n, err, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func want(agent string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s:%d", agent, i)
	}
	return out
}

func equal(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("stream holds %d messages, want %d: %q", len(got), len(want), got)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("message %d is %q, want %q", i, got[i], want[i])
		}
	}
}

// TestRelay: committed messages are published once, in order, and leave
// the outbox; a rolled-back transaction's never are.
func TestRelay(t *testing.T) {
	_, pool := testsupport.NewDatabase(t)
	n := testsupport.StartNATS(t, nil)
	js := n.JS
	add(t, pool, msgs("a", 0, 120))
	rolledBack := errors.New("rolled back")
	err := db.WithTx(context.Background(), pool, func(tx pgx.Tx) error {
		if err := outbox.Add(context.Background(), tx, msgs("rolled-back", 0, 3)...); err != nil {
			return err
		}
		return rolledBack
	})
	if !errors.Is(err, rolledBack) {
		t.Fatal(err)
	}
	add(t, pool, msgs("a", 120, 80))
	run(t, relay(t, pool, js))
	waitEmpty(t, pool, 10*time.Second)
	equal(t, stored(t, js), want("a", 200))
}

// TestRelayBrokerOutage: messages committed while NATS is down, and while
// the control plane that wrote them is not running, reach the stream once
// NATS and a relay are back, once each.
func TestRelayBrokerOutage(t *testing.T) {
	_, pool := testsupport.NewDatabase(t)
	n := testsupport.StartNATS(t, nil)
	js := n.JS
	r := relay(t, pool, js)
	run(t, r)
	add(t, pool, msgs("a", 0, 10))
	waitEmpty(t, pool, 10*time.Second)

	n.Stop()
	add(t, pool, msgs("a", 10, 30))
	r.Kick()
	time.Sleep(3 * time.Second) // rounds fail meanwhile
	if n, err := db.New().OutboxPending(context.Background(), pool); err != nil || n != 30 {
		t.Fatalf("during the outage the outbox holds %d (%v), want 30", n, err)
	}
	n.Restart()
	waitEmpty(t, pool, 30*time.Second)
	equal(t, stored(t, js), want("a", 40))
}

// TestRelayAfterRestart: a control plane stopped between its commit and
// the publish; the next one's relay publishes what it left. One stopped
// after JetStream stored a message but before deleting it has it
// published again, and the stream keeps it once.
func TestRelayAfterRestart(t *testing.T) {
	_, pool := testsupport.NewDatabase(t)
	n := testsupport.StartNATS(t, nil)
	js := n.JS
	add(t, pool, msgs("a", 0, 20))
	// The first ten were acknowledged before the stop.
	for _, m := range msgs("a", 0, 10) {
		msg := nats.NewMsg(m.Subject)
		msg.Data = m.Data
		msg.Header.Set(jetstream.MsgIDHeader, m.MsgID)
		if _, err := js.PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
	}
	run(t, relay(t, pool, js))
	waitEmpty(t, pool, 10*time.Second)
	equal(t, stored(t, js), want("a", 20))
}

// TestRelayReplicas: two control planes relay one outbox while writers
// add to it: every message is in the stream once, each writer's in its
// order.
func TestRelayReplicas(t *testing.T) {
	_, pool := testsupport.NewDatabase(t)
	n := testsupport.StartNATS(t, nil)
	run(t, relay(t, pool, connect(t, n)))
	run(t, relay(t, pool, connect(t, n)))
	var wg sync.WaitGroup
	const writers, each = 8, 40
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i += 5 {
				add(t, pool, msgs(fmt.Sprint("w", w), i, 5))
			}
		}()
	}
	wg.Wait()
	waitEmpty(t, pool, 20*time.Second)
	got := stored(t, n.JS)
	if len(got) != writers*each {
		t.Fatalf("stream holds %d messages, want %d", len(got), writers*each)
	}
	next := map[string]int{}
	for _, m := range got {
		var w string
		var i int
		if _, err := fmt.Sscanf(m, "%2s:%d", &w, &i); err != nil {
			t.Fatalf("message %q: %v", m, err)
		}
		if i != next[w] {
			t.Fatalf("writer %s: message %d after %d", w, i, next[w]-1)
		}
		next[w]++
	}
}
