package projector_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/handlers/projector"
	"github.com/rahatback/rahatback/testsupport"
)

// presence is one row of agent_presence.
type presence struct {
	Online   bool
	LastSeen time.Time
	Hostname string
	OS       string
	Version  string
}

func (p presence) String() string {
	return fmt.Sprintf("{online=%v lastSeen=%s host=%q os=%q version=%q}",
		p.Online, p.LastSeen.UTC().Format(time.RFC3339Nano), p.Hostname, p.OS, p.Version)
}

// rows reads the whole agent_presence table, by agent id.
func rows(t *testing.T, pool *pgxpool.Pool) map[string]presence {
	t.Helper()
	rs, err := pool.Query(context.Background(),
		`SELECT agent_id::text, online, last_seen_at, hostname, os, version FROM agent_presence`)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	out := map[string]presence{}
	for rs.Next() {
		var id string
		var p presence
		if err := rs.Scan(&id, &p.Online, &p.LastSeen, &p.Hostname, &p.OS, &p.Version); err != nil {
			t.Fatal(err)
		}
		p.LastSeen = p.LastSeen.UTC()
		out[id] = p
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitRow polls agentID's row until ok accepts it.
func waitRow(t *testing.T, pool *pgxpool.Pool, agentID, what string, ok func(presence) bool) presence {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, found := rows(t, pool)[agentID]
		if found && ok(p) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s: row never became %s; last %v (found %v)", agentID, what, p, found)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitDrained waits until the projector consumer durable has applied (acked
// or terminated) every event in the stream, and returns its info.
func waitDrained(t *testing.T, js jetstream.JetStream, durable string) *jetstream.ConsumerInfo {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for {
		cons, err := js.Consumer(ctx, events.StreamEvents, durable)
		if err == nil {
			info, err := cons.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// Drained: everything the stream holds was delivered and
			// acknowledged (a just-created consumer may still report
			// nothing pending before it has looked at the stream).
			si, err := js.Stream(ctx, events.StreamEvents)
			if err != nil {
				t.Fatal(err)
			}
			last := si.CachedInfo().State.LastSeq
			if info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Stream >= last {
				return info
			}
		} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("projector %s did not drain the stream", durable)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startProjector runs projector.Run until the test ends.
func startProjector(t *testing.T, pool *pgxpool.Pool, js jetstream.JetStream, durable string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- projector.Run(ctx, projector.Opts{Pool: pool, JS: js, Logger: testsupport.Logger(t), Durable: durable})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("projector %s: %v", durable, err)
		}
	})
}

type fixture struct {
	pool *pgxpool.Pool
	n    *testsupport.NATS
}

// setup starts NATS, a fresh database and the default projector on them.
func setup(t *testing.T) *fixture {
	t.Helper()
	_, pool := testsupport.NewDatabase(t)
	n := testsupport.StartNATS(t, nil)
	startProjector(t, pool, n.JS, "")
	return &fixture{pool: pool, n: n}
}

// agentPastClock is what agents write in At; the projector must ignore it.
var agentPastClock = time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)

func presenceEvent(agentID, host, version string) events.AgentPresence {
	return events.AgentPresence{
		V: 1, ID: uuid.NewString(), AgentID: agentID,
		Hostname: host, OS: "linux/amd64", Version: version, At: agentPastClock,
	}
}

// publish sends ev on the presence subject of agentID and phase with
// Nats-Msg-Id ev.ID, and returns the time the stream stored for the
// subject's last message (that of this event unless it was a duplicate).
func (f *fixture) publish(t *testing.T, agentID, phase string, ev events.AgentPresence) time.Time {
	t.Helper()
	ctx := context.Background()
	subj := events.EventSubject(agentID, events.KindAgent, phase)
	if err := events.Publish(ctx, f.n.JS, subj, ev.ID, ev); err != nil {
		t.Fatal(err)
	}
	stream, err := f.n.JS.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.GetLastMsgForSubject(ctx, subj)
	if err != nil {
		t.Fatal(err)
	}
	return m.Time
}

// publishRaw sends data as is on subject, with a fresh Nats-Msg-Id.
func (f *fixture) publishRaw(t *testing.T, subject string, data []byte) {
	t.Helper()
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, uuid.NewString())
	if _, err := f.n.JS.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
}

// stored is the time as PostgreSQL keeps it (microseconds).
func stored(ts time.Time) time.Time { return ts.Truncate(time.Microsecond).UTC() }

func TestPresence(t *testing.T) {
	f := setup(t)
	agent := uuid.NewString()

	t.Run("Online", func(t *testing.T) {
		at := f.publish(t, agent, events.PhaseOnline, presenceEvent(agent, "db-host-1", "1.0.0"))
		p := waitRow(t, f.pool, agent, "online", func(p presence) bool { return p.Online })
		want := presence{Online: true, LastSeen: stored(at), Hostname: "db-host-1", OS: "linux/amd64", Version: "1.0.0"}
		if p != want {
			t.Fatalf("row %v, want %v", p, want)
		}
	})

	t.Run("Heartbeat", func(t *testing.T) {
		at := f.publish(t, agent, events.PhaseHeartbeat, presenceEvent(agent, "db-host-1", "1.0.1"))
		p := waitRow(t, f.pool, agent, "updated by the heartbeat", func(p presence) bool { return p.Version == "1.0.1" })
		want := presence{Online: true, LastSeen: stored(at), Hostname: "db-host-1", OS: "linux/amd64", Version: "1.0.1"}
		if p != want {
			t.Fatalf("row %v, want %v", p, want)
		}
	})

	t.Run("Offline", func(t *testing.T) {
		at := f.publish(t, agent, events.PhaseOffline, presenceEvent(agent, "db-host-1", "1.0.1"))
		p := waitRow(t, f.pool, agent, "offline", func(p presence) bool { return !p.Online })
		want := presence{Online: false, LastSeen: stored(at), Hostname: "db-host-1", OS: "linux/amd64", Version: "1.0.1"}
		if p != want {
			t.Fatalf("row %v, want %v", p, want)
		}
	})

	t.Run("OtherAgentsApart", func(t *testing.T) {
		other := uuid.NewString()
		f.publish(t, other, events.PhaseOnline, presenceEvent(other, "db-host-2", "2.0.0"))
		waitRow(t, f.pool, other, "online", func(p presence) bool { return p.Online })
		waitDrained(t, f.n.JS, events.ProjectorConsumer)
		all := rows(t, f.pool)
		if len(all) != 2 || all[agent].Online || all[agent].Hostname != "db-host-1" {
			t.Fatalf("rows %v", all)
		}
	})
}

func TestDuplicatePublish(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	agent := uuid.NewString()
	ev := presenceEvent(agent, "db-host-1", "1.0.0")
	at := f.publish(t, agent, events.PhaseOnline, ev)
	f.publish(t, agent, events.PhaseOnline, ev) // a retried publish
	// The same message id on another subject is still the same message.
	if err := events.Publish(ctx, f.n.JS, events.EventSubject(agent, events.KindAgent, events.PhaseOffline), ev.ID, ev); err != nil {
		t.Fatal(err)
	}

	stream, err := f.n.JS.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter("rahat.evt."+agent+".>"))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.State.Subjects) != 1 || info.State.Subjects[events.EventSubject(agent, events.KindAgent, events.PhaseOnline)] != 1 {
		t.Fatalf("stream holds %v for the agent, want the online event once", info.State.Subjects)
	}

	cinfo := waitDrained(t, f.n.JS, events.ProjectorConsumer)
	if cinfo.Delivered.Consumer != 1 {
		t.Fatalf("projector received %d events, want 1", cinfo.Delivered.Consumer)
	}
	want := presence{Online: true, LastSeen: stored(at), Hostname: "db-host-1", OS: "linux/amd64", Version: "1.0.0"}
	if all := rows(t, f.pool); len(all) != 1 || all[agent] != want {
		t.Fatalf("rows %v, want only %s: %v", all, agent, want)
	}
}

func TestBadEventsDropped(t *testing.T) {
	f := setup(t)
	agent, impostor := uuid.NewString(), uuid.NewString()

	at := f.publish(t, agent, events.PhaseOnline, presenceEvent(agent, "db-host-1", "1.0.0"))
	waitRow(t, f.pool, agent, "online", func(p presence) bool { return p.Online })
	want := presence{Online: true, LastSeen: stored(at), Hostname: "db-host-1", OS: "linux/amd64", Version: "1.0.0"}

	published := 1
	bad := func(name string, publish func()) {
		t.Run(name, func(t *testing.T) {
			publish()
			published++
			info := waitDrained(t, f.n.JS, events.ProjectorConsumer)
			// Delivered once and given up on, not retried.
			if int(info.Delivered.Consumer) != published {
				t.Fatalf("projector got %d deliveries for %d events", info.Delivered.Consumer, published)
			}
			if all := rows(t, f.pool); len(all) != 1 || all[agent] != want {
				t.Fatalf("rows %v, want only %s: %v", all, agent, want)
			}
		})
	}
	bad("PayloadOfOtherAgent", func() {
		f.publish(t, agent, events.PhaseOffline, presenceEvent(impostor, "evil", "6.6.6"))
	})
	bad("PayloadWithoutAgent", func() {
		f.publish(t, agent, events.PhaseOffline, presenceEvent("", "evil", "6.6.6"))
	})
	bad("NewerPayloadVersion", func() {
		ev := presenceEvent(agent, "evil", "6.6.6")
		ev.V = events.Version + 1
		f.publish(t, agent, events.PhaseOffline, ev)
	})
	bad("NotJSON", func() {
		f.publishRaw(t, events.EventSubject(agent, events.KindAgent, events.PhaseOffline), []byte("offline!"))
	})
	bad("UnknownPhase", func() {
		f.publish(t, agent, "sleeping", presenceEvent(agent, "evil", "6.6.6"))
	})
	bad("AgentIDNotUUID", func() {
		f.publish(t, "not-a-uuid", events.PhaseOffline, presenceEvent("not-a-uuid", "evil", "6.6.6"))
	})
	bad("MalformedSubject", func() {
		f.publishRaw(t, "rahat.evt."+agent+".agent.offline.extra", []byte(`{"v":1,"agentId":"`+agent+`"}`))
	})

	t.Run("LaterEventsApply", func(t *testing.T) {
		at := f.publish(t, agent, events.PhaseOffline, presenceEvent(agent, "db-host-1", "1.0.1"))
		p := waitRow(t, f.pool, agent, "offline", func(p presence) bool { return !p.Online })
		want := presence{Online: false, LastSeen: stored(at), Hostname: "db-host-1", OS: "linux/amd64", Version: "1.0.1"}
		if p != want {
			t.Fatalf("row %v, want %v", p, want)
		}
		if _, found := rows(t, f.pool)[impostor]; found {
			t.Fatal("a row was made for the agent named only in a payload")
		}
	})
}

func TestReplay(t *testing.T) {
	f := setup(t)
	a, b, c := uuid.NewString(), uuid.NewString(), uuid.NewString()
	lastAt := map[string]time.Time{}
	pub := func(agent, phase, version string) {
		lastAt[agent] = f.publish(t, agent, phase, presenceEvent(agent, "host-"+agent[:8], version))
	}
	pub(a, events.PhaseOnline, "1.0.0")
	pub(b, events.PhaseOnline, "1.0.0")
	pub(a, events.PhaseHeartbeat, "1.0.0")
	pub(c, events.PhaseOnline, "0.9.0")
	dup := presenceEvent(b, "host-"+b[:8], "1.0.0")
	lastAt[b] = f.publish(t, b, events.PhaseOffline, dup)
	f.publish(t, b, events.PhaseOffline, dup)
	f.publish(t, c, events.PhaseOffline, presenceEvent(a, "evil", "6.6.6")) // dropped
	pub(a, events.PhaseHeartbeat, "1.1.0")
	pub(c, events.PhaseHeartbeat, "0.9.1")

	waitDrained(t, f.n.JS, events.ProjectorConsumer)
	first := rows(t, f.pool)
	want := map[string]presence{
		a: {Online: true, LastSeen: stored(lastAt[a]), Hostname: "host-" + a[:8], OS: "linux/amd64", Version: "1.1.0"},
		b: {Online: false, LastSeen: stored(lastAt[b]), Hostname: "host-" + b[:8], OS: "linux/amd64", Version: "1.0.0"},
		c: {Online: true, LastSeen: stored(lastAt[c]), Hostname: "host-" + c[:8], OS: "linux/amd64", Version: "0.9.1"},
	}
	if !maps.Equal(first, want) {
		t.Fatalf("projected rows\n%v\nwant\n%v", first, want)
	}

	t.Run("IntoEmptyDatabase", func(t *testing.T) {
		_, pool2 := testsupport.NewDatabase(t)
		startProjector(t, pool2, f.n.JS, "replay")
		waitDrained(t, f.n.JS, "replay")
		if got := rows(t, pool2); !maps.Equal(got, first) {
			t.Fatalf("replayed rows\n%v\nwant\n%v", got, first)
		}
	})

	t.Run("OverExistingRows", func(t *testing.T) {
		// Applying every event a second time changes nothing, and events
		// older than a row (late ones) never move it back.
		newer := presence{Online: false, LastSeen: stored(time.Now().Add(time.Hour)), Hostname: "newer", OS: "newer", Version: "newer"}
		if _, err := f.pool.Exec(context.Background(),
			`UPDATE agent_presence SET online = $2, last_seen_at = $3, hostname = $4, os = $5, version = $6 WHERE agent_id = $1`,
			a, newer.Online, newer.LastSeen, newer.Hostname, newer.OS, newer.Version); err != nil {
			t.Fatal(err)
		}
		startProjector(t, f.pool, f.n.JS, "replay-again")
		waitDrained(t, f.n.JS, "replay-again")
		want := maps.Clone(first)
		want[a] = newer
		if got := rows(t, f.pool); !maps.Equal(got, want) {
			t.Fatalf("rows after a second application\n%v\nwant\n%v", got, want)
		}
	})
}

func TestRunRequiresPoolAndJS(t *testing.T) {
	_, pool := testsupport.NewDatabase(t)
	n := testsupport.StartNATS(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for name, o := range map[string]projector.Opts{
		"NoPool": {JS: n.JS},
		"NoJS":   {Pool: pool},
	} {
		if err := projector.Run(ctx, o); err == nil || !strings.Contains(err.Error(), "required") {
			t.Errorf("%s: Run returned %v, want a missing-option error", name, err)
		}
	}
}
