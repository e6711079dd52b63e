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

func add(t testing.TB, pool *pgxpool.Pool, m []outbox.Message) {
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

// entry is one message of TestRelayStreamOrder's outbox.
type entry struct {
	outbox.Message
	agent   string
	command bool
	pos     int // in the outbox
}

// pairs writes, for each of n runs, an event (rahat.cp.<agent>.backup.queued)
// and a command (rahat.cmd.<agent>.backup), one agent per run, in
// transactions of varied sizes: some interleaved (event, command, event,
// command …), the others in the scheduler's shape (all events, then all
// commands). It returns the messages in outbox order.
func pairs(t *testing.T, pool *pgxpool.Pool, n int) []entry {
	t.Helper()
	var out []entry
	sizes := []int{1, 3, 1, 8, 2, 40, 5, 1, 17}
	for run, tx := 0, 0; run < n; tx++ {
		k := min(sizes[tx%len(sizes)], n-run)
		var evs, cmds []entry
		for i := run; i < run+k; i++ {
			agent := fmt.Sprintf("agent%04d", i)
			evs = append(evs, entry{Message: outbox.Message{Subject: events.ControlSubject(agent, events.KindBackup, events.PhaseQueued),
				MsgID: agent + ":queued", Data: []byte(agent + ":queued")}, agent: agent})
			cmds = append(cmds, entry{Message: outbox.Message{Subject: events.CommandSubject(agent, events.CommandBackup),
				MsgID: agent + ":backup", Data: []byte(agent + ":backup")}, agent: agent, command: true})
		}
		var es []entry
		if tx%2 == 0 {
			for i := range evs {
				es = append(es, evs[i], cmds[i])
			}
		} else {
			es = append(evs, cmds...)
		}
		m := make([]outbox.Message, len(es))
		for i := range es {
			m[i] = es[i].Message
			es[i].pos = len(out) + i
		}
		add(t, pool, m)
		out = append(out, es...)
		run += k
	}
	return out
}

// has reports whether stream holds a message on subject, failing t on
// anything but its absence.
func has(t *testing.T, s jetstream.Stream, subject string) bool {
	t.Helper()
	_, err := s.GetLastMsgForSubject(context.Background(), subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false
	}
	if err != nil {
		t.Fatalf("get %s: %v", subject, err)
	}
	return true
}

// TestRelayStreamOrder: relayed with many messages in flight, an event is
// stored before any command written after it (whichever shape the outbox
// has), even when EVENTS refuses a message midway; and every message ends
// up in its stream once.
//
// Two checks, neither depending on timing to pass: a subscriber sees each
// command as the relay publishes it and then requires the events ahead
// of it in the outbox to be in EVENTS already; and EVENTS is made to
// refuse messages beyond a limit (DiscardNew), after which the commands
// in COMMANDS must be exactly those ahead of the first refused event. The
// second fails for certain if the relay publishes a command without
// waiting for the events before it.
func TestRelayStreamOrder(t *testing.T) {
	_, pool := testsupport.NewDatabase(t)
	n := testsupport.StartNATS(t, nil)
	ctx := context.Background()
	const runs = 624
	out := pairs(t, pool, runs)
	evStream, err := n.JS.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	cmdStream, err := n.JS.Stream(ctx, events.StreamCommands)
	if err != nil {
		t.Fatal(err)
	}

	// ahead[subject of a command] is its own event and the last event
	// before it in the outbox.
	ahead := map[string][]string{}
	own := map[string]string{}
	lastEvent := ""
	for _, e := range out {
		if !e.command {
			lastEvent = e.Subject
			own[e.agent] = e.Subject
			continue
		}
		ahead[e.Subject] = []string{own[e.agent], lastEvent}
	}

	// The subscriber.
	monitor := connect(t, n)
	mon, err := monitor.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := monitor.Conn().SubscribeSync("rahat.cmd.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := monitor.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	var violations []string
	seen := 0
	go func() {
		defer close(stopped)
		for {
			m, err := sub.NextMsg(50 * time.Millisecond)
			if errors.Is(err, nats.ErrTimeout) {
				select {
				case <-stop:
					return
				default:
					continue
				}
			}
			if err != nil {
				violations = append(violations, err.Error())
				return
			}
			seen++
			for _, ev := range ahead[m.Subject] {
				_, err := mon.GetLastMsgForSubject(ctx, ev)
				if err != nil {
					violations = append(violations, fmt.Sprintf("%s published before %s was stored (%v)", m.Subject, ev, err))
				}
			}
		}
	}()

	r, err := outbox.New(outbox.Relay{Pool: pool, JS: n.JS, Logger: testsupport.Logger(t), Batch: 100, Window: 16,
		Interval: 50 * time.Millisecond, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	limit := func(lim int64) {
		t.Helper()
		info, err := evStream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cfg := info.Config
		cfg.MaxMsgs, cfg.Discard = lim, jetstream.DiscardNew
		if lim < 0 {
			cfg.Discard = jetstream.DiscardOld
		}
		if _, err := n.JS.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	for _, lim := range []int64{1, 50, 51, 200, 390, 500} {
		limit(lim)
		for i := 0; ; i++ {
			if i == 100 {
				t.Fatalf("limit %d: rounds do not fail", lim)
			}
			if _, err := r.Round(ctx); err != nil {
				t.Logf("limit %d: %v", lim, err)
				break
			}
		}
		// EVENTS holds the first lim events; COMMANDS, every command
		// ahead of the first event refused, and no other.
		refused := -1
		nEvents := 0
		for _, e := range out {
			if e.command {
				if want := refused < 0; has(t, cmdStream, e.Subject) != want {
					t.Fatalf("limit %d: command %d (%s) stored: %v, want %v", lim, e.pos, e.Subject, !want, want)
				}
				continue
			}
			stored := has(t, evStream, e.Subject)
			if want := int64(nEvents) < lim; stored != want {
				t.Fatalf("limit %d: event %d (%s) stored: %v, want %v", lim, e.pos, e.Subject, stored, want)
			}
			if !stored && refused < 0 {
				refused = e.pos
			}
			nEvents++
		}
	}
	limit(-1)
	run(t, r)
	waitEmpty(t, pool, 20*time.Second)

	if err := monitor.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-stopped
	for _, v := range violations {
		t.Error(v)
	}
	if seen < runs {
		t.Errorf("the subscriber saw %d commands published, want at least %d", seen, runs)
	}

	// Every message once, in its stream.
	for _, s := range []jetstream.Stream{evStream, cmdStream} {
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs != runs {
			t.Errorf("%s holds %d messages, want %d", info.Config.Name, info.State.Msgs, runs)
		}
	}
	for _, e := range out {
		s := evStream
		if e.command {
			s = cmdStream
		}
		m, err := s.GetLastMsgForSubject(ctx, e.Subject)
		if err != nil {
			t.Fatalf("%s: %v", e.Subject, err)
		}
		if string(m.Data) != string(e.Data) {
			t.Errorf("%s holds %q, want %q", e.Subject, m.Data, string(e.Data))
		}
	}
}

// addHeld writes m held for hold, in a transaction of its own.
func addHeld(t *testing.T, pool *pgxpool.Pool, hold time.Duration, m []outbox.Message) outbox.Held {
	t.Helper()
	var h outbox.Held
	err := db.WithTx(context.Background(), pool, func(tx pgx.Tx) (err error) {
		h, err = outbox.AddHeld(context.Background(), tx, hold, m...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestFlushHeld: messages written held are left alone by a running relay
// while held; Flush publishes them in order and they leave the outbox; a
// Flush during a broker outage hands them to the relay, which publishes
// them once the broker is back, each once.
func TestFlushHeld(t *testing.T) {
	ctx := context.Background()
	_, pool := testsupport.NewDatabase(t)
	n := testsupport.StartNATS(t, nil)
	r := relay(t, pool, n.JS)
	run(t, r)

	h := addHeld(t, pool, time.Hour, msgs("a", 0, 20))
	r.Kick()
	time.Sleep(500 * time.Millisecond) // a relay round or more
	if got := stored(t, n.JS); len(got) != 0 {
		t.Fatalf("the relay published held messages: %q", got)
	}
	if err := r.Flush(ctx, h); err != nil {
		t.Fatal(err)
	}
	equal(t, stored(t, n.JS), want("a", 20))
	waitEmpty(t, pool, 10*time.Second) // deleted by the running relay

	h = addHeld(t, pool, time.Hour, msgs("a", 20, 20))
	n.Stop()
	if err := r.Flush(ctx, h); err == nil {
		t.Fatal("Flush with the broker down reported no error")
	}
	if pending, err := db.New().OutboxPending(ctx, pool); err != nil || pending != 20 {
		t.Fatalf("after a failed Flush the outbox holds %d (%v), want 20", pending, err)
	}
	n.Restart()
	waitEmpty(t, pool, 40*time.Second) // released: the relay publishes them
	equal(t, stored(t, n.JS), want("a", 40))
}
