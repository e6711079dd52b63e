package natsd_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/events/natsd"
	"github.com/rahatback/rahatback/testsupport"
)

// agentDB is the test's registry of agent NATS secrets, the role the agents
// table plays for the control plane.
type agentDB struct {
	mu sync.Mutex
	pw map[string]string
}

func (d *agentDB) authenticate(agentID, password string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.pw[agentID]
	return ok && p == password
}

func (d *agentDB) revoke(agentID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.pw, agentID)
}

type env struct {
	n        *testsupport.NATS
	agents   *agentDB
	a, b     string // agent ids
	pwA, pwB string
}

// setup starts NATS with two registered agents A and B and their command
// consumers.
func setup(t *testing.T) *env {
	t.Helper()
	e := &env{a: uuid.NewString(), b: uuid.NewString(), pwA: testsupport.RandomString(16), pwB: testsupport.RandomString(16)}
	e.agents = &agentDB{pw: map[string]string{e.a: e.pwA, e.b: e.pwB}}
	e.n = testsupport.StartNATS(t, e.agents.authenticate)
	ctx := context.Background()
	for _, id := range []string{e.a, e.b} {
		if err := events.EnsureAgentConsumer(ctx, e.n.JS, id); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// agentConn is an agent's connection that records the asynchronous errors
// the server reports (permissions violations).
type agentConn struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	errs chan error
}

// connectAgent connects the way the agent does: its NATS user and its
// private inbox prefix.
func (e *env) connectAgent(t *testing.T, id, password string, opts ...nats.Option) (*agentConn, error) {
	t.Helper()
	c := &agentConn{errs: make(chan error, 256)}
	opts = append([]nats.Option{
		nats.UserInfo(events.AgentNATSUser(id), password),
		nats.CustomInboxPrefix(events.AgentInboxPrefix(id)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case c.errs <- err:
			default:
			}
		}),
	}, opts...)
	nc, err := nats.Connect(e.n.Server.ClientURL(), opts...)
	if err != nil {
		return nil, err
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	if c.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return c, nil
}

func (e *env) mustConnectAgent(t *testing.T, id, password string, opts ...nats.Option) *agentConn {
	t.Helper()
	c, err := e.connectAgent(t, id, password, opts...)
	if err != nil {
		t.Fatalf("connect as agent %s: %v", id, err)
	}
	return c
}

// waitViolation waits until the server reports a permissions violation whose
// text contains want.
func (c *agentConn) waitViolation(t *testing.T, want string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	var seen []string
	for {
		select {
		case err := <-c.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), want) {
				return
			}
			seen = append(seen, err.Error())
		case <-timeout:
			t.Fatalf("no permissions violation containing %s reported; errors seen: %q", want, seen)
		}
	}
}

func pubViolation(subject string) string {
	return fmt.Sprintf("Permissions Violation for Publish to %q", subject)
}

func subViolation(subject string) string {
	return fmt.Sprintf("Permissions Violation for Subscription to %q", subject)
}

// deniedCall runs call, which must be refused by the server with a publish
// permissions violation containing want, and then must fail (its context is
// cancelled once the violation is seen, so a call waiting for an answer that
// never comes returns).
func (c *agentConn) deniedCall(t *testing.T, want string, call func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- call(ctx) }()
	c.waitViolation(t, want)
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("call refused with %s succeeded anyway", want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("call did not return after its context was cancelled")
	}
}

// deniedSubscribe subscribes to subject, expects the server to refuse it,
// then has the control plane publish on publishOn (a subject matching
// subject) followed by a sentinel on the agent's own RPC subject, and checks
// the agent received the sentinel but nothing on the refused subscription.
func (e *env) deniedSubscribe(t *testing.T, c *agentConn, agentID, subject, publishOn string) {
	t.Helper()
	sentinelSubj := events.RPCSubject(agentID, "sentinel")
	sentinel, err := c.nc.SubscribeSync(sentinelSubj)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := c.nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c.waitViolation(t, subViolation(subject))
	if err := e.n.NC.Publish(publishOn, []byte("secret")); err != nil {
		t.Fatal(err)
	}
	if err := e.n.NC.Publish(sentinelSubj, []byte("sentinel")); err != nil {
		t.Fatal(err)
	}
	if _, err := sentinel.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("sentinel on own subject not received: %v", err)
	}
	// The server delivers one publisher's messages in order, so the refused
	// subscription would already hold the earlier message.
	if m, err := sub.NextMsg(10 * time.Millisecond); err == nil {
		t.Fatalf("agent received %q on %s through a refused subscription", m.Data, m.Subject)
	}
}

func TestAgentDenied(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	cmdB := events.CommandSubject(e.b, events.CommandBackup)

	t.Run("SubscribeOtherAgentCommands", func(t *testing.T) {
		c := e.mustConnectAgent(t, e.a, e.pwA)
		e.deniedSubscribe(t, c, e.a, "rahat.cmd."+e.b+".>", "rahat.cmd."+e.b+".probe")
	})
	t.Run("SubscribeAllCommands", func(t *testing.T) {
		c := e.mustConnectAgent(t, e.a, e.pwA)
		e.deniedSubscribe(t, c, e.a, "rahat.cmd.>", "rahat.cmd."+e.b+".probe")
	})
	t.Run("SubscribeOtherAgentRPC", func(t *testing.T) {
		c := e.mustConnectAgent(t, e.a, e.pwA)
		e.deniedSubscribe(t, c, e.a, "rahat.rpc."+e.b+".>", events.RPCSubject(e.b, events.RPCDBTest))
	})
	t.Run("SubscribeOtherAgentEvents", func(t *testing.T) {
		c := e.mustConnectAgent(t, e.a, e.pwA)
		e.deniedSubscribe(t, c, e.a, "rahat.evt."+e.b+".>", events.EventSubject(e.b, events.KindAgent, events.PhaseHeartbeat))
	})
	t.Run("SubscribeDefaultInbox", func(t *testing.T) {
		c := e.mustConnectAgent(t, e.a, e.pwA)
		e.deniedSubscribe(t, c, e.a, "_INBOX.>", "_INBOX.abc.def")
	})
	t.Run("SubscribeOtherAgentInbox", func(t *testing.T) {
		c := e.mustConnectAgent(t, e.a, e.pwA)
		inboxB := events.AgentInboxPrefix(e.b)
		e.deniedSubscribe(t, c, e.a, inboxB+".>", inboxB+".abc.def")
	})
	t.Run("SubscribeEverything", func(t *testing.T) {
		c := e.mustConnectAgent(t, e.a, e.pwA)
		e.deniedSubscribe(t, c, e.a, ">", cmdB)
	})

	t.Run("FetchOtherAgentCommands", func(t *testing.T) {
		e := setup(t) // B's queue holds exactly one command
		cmdB := events.CommandSubject(e.b, events.CommandBackup)
		if err := events.Publish(ctx, e.n.JS, cmdB, uuid.NewString(), map[string]any{"v": 1, "for": "B"}); err != nil {
			t.Fatal(err)
		}
		c := e.mustConnectAgent(t, e.a, e.pwA)
		// Through the client library: looking the consumer up is refused.
		c.deniedCall(t, pubViolation("$JS.API.CONSUMER.INFO.COMMANDS."+events.AgentConsumer(e.b)), func(ctx context.Context) error {
			_, err := c.js.Consumer(ctx, events.StreamCommands, events.AgentConsumer(e.b))
			return err
		})
		// On the wire: a pull request for B's next message is refused.
		next := "$JS.API.CONSUMER.MSG.NEXT.COMMANDS." + events.AgentConsumer(e.b)
		inbox := c.nc.NewRespInbox()
		got, err := c.nc.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.nc.PublishRequest(next, inbox, []byte(`{"batch":1,"expires":1000000000}`)); err != nil {
			t.Fatal(err)
		}
		c.waitViolation(t, pubViolation(next))
		if m, err := got.NextMsg(50 * time.Millisecond); err == nil {
			t.Fatalf("agent A received %q from B's consumer", m.Data)
		}
		// B's command is still waiting for B, never delivered to anyone.
		cons, err := e.n.JS.Consumer(ctx, events.StreamCommands, events.AgentConsumer(e.b))
		if err != nil {
			t.Fatal(err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumPending != 1 || info.NumAckPending != 0 || info.Delivered.Stream != 0 {
			t.Fatalf("B's consumer: pending %d, ack pending %d, delivered %d; want 1, 0, 0",
				info.NumPending, info.NumAckPending, info.Delivered.Stream)
		}
		// B itself gets it.
		cb := e.mustConnectAgent(t, e.b, e.pwB)
		consB, err := cb.js.Consumer(ctx, events.StreamCommands, events.AgentConsumer(e.b))
		if err != nil {
			t.Fatal(err)
		}
		batch, err := consB.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		m, ok := <-batch.Messages()
		if !ok {
			t.Fatalf("B fetched nothing: %v", batch.Error())
		}
		if m.Subject() != cmdB {
			t.Fatalf("B fetched %s, want %s", m.Subject(), cmdB)
		}
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("AckOtherAgentCommands", func(t *testing.T) {
		c := e.mustConnectAgent(t, e.a, e.pwA)
		subj := "$JS.ACK.COMMANDS." + events.AgentConsumer(e.b) + ".1.1.1.1700000000000000000.0"
		if err := c.nc.Publish(subj, []byte("+ACK")); err != nil {
			t.Fatal(err)
		}
		c.waitViolation(t, pubViolation(subj))
	})

	t.Run("CreateConsumer", func(t *testing.T) {
		c := e.mustConnectAgent(t, e.a, e.pwA)
		c.deniedCall(t, `Permissions Violation for Publish to "$JS.API.CONSUMER.CREATE.COMMANDS.evil.rahat.cmd.`, func(ctx context.Context) error {
			_, err := c.js.CreateOrUpdateConsumer(ctx, events.StreamCommands, jetstream.ConsumerConfig{
				Durable: "evil", FilterSubject: "rahat.cmd." + e.b + ".>", AckPolicy: jetstream.AckExplicitPolicy,
			})
			return err
		})
		c.deniedCall(t, pubViolation("$JS.API.CONSUMER.CREATE.COMMANDS.evil2"), func(ctx context.Context) error {
			_, err := c.js.CreateOrUpdateConsumer(ctx, events.StreamCommands, jetstream.ConsumerConfig{
				Durable: "evil2", AckPolicy: jetstream.AckExplicitPolicy,
			})
			return err
		})
		for _, name := range []string{"evil", "evil2"} {
			if _, err := e.n.JS.Consumer(ctx, events.StreamCommands, name); !errors.Is(err, jetstream.ErrConsumerNotFound) {
				t.Errorf("consumer %s after refused creation: %v, want not found", name, err)
			}
		}
	})

	t.Run("StreamAndAPIRequests", func(t *testing.T) {
		if err := events.Publish(ctx, e.n.JS, cmdB, uuid.NewString(), map[string]any{"v": 1, "for": "B"}); err != nil {
			t.Fatal(err)
		}
		getLast, _ := json.Marshal(map[string]string{"last_by_subj": cmdB})
		for _, tc := range []struct {
			name, subject string
			body          []byte
		}{
			{"MsgGet", "$JS.API.STREAM.MSG.GET.COMMANDS", getLast},
			{"DirectGet", "$JS.API.DIRECT.GET.COMMANDS", getLast},
			{"DirectGetLastBySubject", "$JS.API.DIRECT.GET.COMMANDS." + cmdB, nil},
			{"StreamInfo", "$JS.API.STREAM.INFO.COMMANDS", nil},
			{"StreamNames", "$JS.API.STREAM.NAMES", nil},
			{"StreamPurge", "$JS.API.STREAM.PURGE.COMMANDS", nil},
			{"StreamDelete", "$JS.API.STREAM.DELETE.EVENTS", nil},
			{"ConsumerDelete", "$JS.API.CONSUMER.DELETE.COMMANDS." + events.AgentConsumer(e.b), nil},
			{"ConsumerList", "$JS.API.CONSUMER.LIST.COMMANDS", nil},
			{"DurableCreate", "$JS.API.CONSUMER.DURABLE.CREATE.COMMANDS.evil", []byte(`{"stream_name":"COMMANDS","config":{"durable_name":"evil","ack_policy":"explicit"}}`)},
			{"EphemeralCreate", "$JS.API.CONSUMER.CREATE.COMMANDS", []byte(`{"stream_name":"COMMANDS","config":{"ack_policy":"explicit"}}`)},
			{"AccountInfo", "$JS.API.INFO", nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c := e.mustConnectAgent(t, e.a, e.pwA)
				c.deniedCall(t, pubViolation(tc.subject), func(ctx context.Context) error {
					_, err := c.nc.RequestWithContext(ctx, tc.subject, tc.body)
					return err
				})
			})
		}
		// Nothing above took effect.
		stream, err := e.n.JS.Stream(ctx, events.StreamCommands)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.GetLastMsgForSubject(ctx, cmdB); err != nil {
			t.Errorf("B's command after refused requests: %v", err)
		}
		if _, err := e.n.JS.Consumer(ctx, events.StreamCommands, events.AgentConsumer(e.b)); err != nil {
			t.Errorf("B's consumer after refused requests: %v", err)
		}
		if _, err := e.n.JS.Stream(ctx, events.StreamEvents); err != nil {
			t.Errorf("EVENTS after refused requests: %v", err)
		}
	})

	t.Run("PublishOtherAgentEvent", func(t *testing.T) {
		c := e.mustConnectAgent(t, e.a, e.pwA)
		subj := events.EventSubject(e.b, events.KindAgent, events.PhaseOnline)
		c.deniedCall(t, pubViolation(subj), func(ctx context.Context) error {
			_, err := c.js.Publish(ctx, subj, []byte(`{"v":1}`), jetstream.WithMsgID(uuid.NewString()))
			return err
		})
		stream, err := e.n.JS.Stream(ctx, events.StreamEvents)
		if err != nil {
			t.Fatal(err)
		}
		if m, err := stream.GetLastMsgForSubject(ctx, subj); !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Fatalf("EVENTS holds %v on %s (err %v), want nothing", m, subj, err)
		}
	})

	t.Run("PublishCommand", func(t *testing.T) {
		// An agent cannot queue commands, not even for itself.
		c := e.mustConnectAgent(t, e.a, e.pwA)
		for _, subj := range []string{events.CommandSubject(e.a, events.CommandBackup), cmdB} {
			if err := c.nc.Publish(subj, []byte(`{"v":1}`)); err != nil {
				t.Fatal(err)
			}
			c.waitViolation(t, pubViolation(subj))
		}
	})

	t.Run("PublishRPC", func(t *testing.T) {
		c := e.mustConnectAgent(t, e.a, e.pwA)
		subj := events.RPCSubject(e.b, events.RPCDBTest)
		c.deniedCall(t, pubViolation(subj), func(ctx context.Context) error {
			_, err := c.nc.RequestWithContext(ctx, subj, []byte(`{"v":1}`))
			return err
		})
	})
}

func TestAgentOwnPath(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	c := e.mustConnectAgent(t, e.a, e.pwA)

	t.Run("PublishEvent", func(t *testing.T) {
		subj := events.EventSubject(e.a, events.KindAgent, events.PhaseHeartbeat)
		data := []byte(`{"v":1,"agentId":"` + e.a + `"}`)
		ack, err := c.js.Publish(ctx, subj, data, jetstream.WithMsgID(uuid.NewString()))
		if err != nil {
			t.Fatalf("publish own event: %v", err)
		}
		if ack.Stream != events.StreamEvents || ack.Duplicate {
			t.Fatalf("ack %+v, want a new message in %s", ack, events.StreamEvents)
		}
		stream, err := e.n.JS.Stream(ctx, events.StreamEvents)
		if err != nil {
			t.Fatal(err)
		}
		m, err := stream.GetMsg(ctx, ack.Sequence)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject != subj || string(m.Data) != string(data) {
			t.Fatalf("stored %s %q, want %s %q", m.Subject, m.Data, subj, data)
		}
	})

	t.Run("FetchAndAckOwnCommand", func(t *testing.T) {
		subj := events.CommandSubject(e.a, events.CommandBackup)
		payload := map[string]any{"v": 1, "runId": "run-1"}
		if err := events.Publish(ctx, e.n.JS, subj, "run-1", payload); err != nil {
			t.Fatal(err)
		}
		cons, err := c.js.Consumer(ctx, events.StreamCommands, events.AgentConsumer(e.a))
		if err != nil {
			t.Fatalf("look up own consumer: %v", err)
		}
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		m, ok := <-batch.Messages()
		if !ok {
			t.Fatalf("fetched nothing: %v", batch.Error())
		}
		if m.Subject() != subj {
			t.Fatalf("fetched %s, want %s", m.Subject(), subj)
		}
		var got map[string]any
		if err := json.Unmarshal(m.Data(), &got); err != nil || got["runId"] != "run-1" {
			t.Fatalf("fetched %q (%v)", m.Data(), err)
		}
		if err := m.InProgress(); err != nil {
			t.Fatalf("in progress: %v", err)
		}
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("ack: %v", err)
		}
		// The work queue forgets an acked command.
		stream, err := e.n.JS.Stream(ctx, events.StreamCommands)
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subj))
			if err != nil {
				t.Fatal(err)
			}
			if info.State.Msgs == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("COMMANDS still holds %d messages after ack", info.State.Msgs)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})

	t.Run("ServeOwnRPC", func(t *testing.T) {
		sub, err := c.nc.Subscribe(events.RPCSubject(e.a, events.RPCDBTest), func(m *nats.Msg) {
			var req events.DBTestRequest
			if err := events.Decode(m.Data, &req); err != nil {
				return
			}
			data, _ := json.Marshal(events.DBTestReply{V: 1, Success: true, Message: "ok " + req.RequestID, Version: "16.4"})
			_ = m.Respond(data)
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := c.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		var reply events.DBTestReply
		err = events.Request(ctx, e.n.NC, events.RPCSubject(e.a, events.RPCDBTest),
			events.DBTestRequest{V: 1, RequestID: "req-1"}, &reply, 5*time.Second)
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		if !reply.Success || reply.Message != "ok req-1" || reply.Version != "16.4" {
			t.Fatalf("reply %+v", reply)
		}
	})

	t.Run("ReplyOnlyOnce", func(t *testing.T) {
		// The permission to answer a request covers one reply: an agent
		// cannot keep writing to the requester's inbox.
		replyTo := make(chan string, 1)
		sub, err := c.nc.Subscribe(events.RPCSubject(e.a, "once"), func(m *nats.Msg) {
			_ = m.Respond([]byte(`{"v":1,"success":true}`))
			replyTo <- m.Reply
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := c.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		if _, err := e.n.NC.Request(events.RPCSubject(e.a, "once"), nil, 5*time.Second); err != nil {
			t.Fatalf("request: %v", err)
		}
		reply := <-replyTo
		if err := c.nc.Publish(reply, []byte("again")); err != nil {
			t.Fatal(err)
		}
		c.waitViolation(t, pubViolation(reply))
	})
}

func TestAuthentication(t *testing.T) {
	e := setup(t)
	url := e.n.Server.ClientURL()
	for _, tc := range []struct {
		name, user, password string
	}{
		{"WrongPassword", events.AgentNATSUser(e.a), "wrong-password-0123456789"},
		{"OtherAgentPassword", events.AgentNATSUser(e.a), e.pwB},
		{"EmptyPassword", events.AgentNATSUser(e.a), ""},
		{"UnknownAgent", events.AgentNATSUser(uuid.NewString()), e.pwA},
		{"EmptyAgentID", "agent-", e.pwA},
		{"AgentIDWithoutPrefix", e.a, e.pwA},
		{"UnknownUser", "admin", e.pwA},
		{"ControlPlaneWrongPassword", natsd.ControlPlaneUser, "wrong-password-0123456789"},
		{"ControlPlaneAgentPassword", natsd.ControlPlaneUser, e.pwA},
		{"ControlPlaneEmptyPassword", natsd.ControlPlaneUser, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := nats.Connect(url, nats.UserInfo(tc.user, tc.password), nats.NoReconnect())
			if err == nil {
				nc.Close()
				t.Fatalf("user %q connected with a bad password", tc.user)
			}
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("connect: %v, want %v", err, nats.ErrAuthorization)
			}
		})
	}
	t.Run("NoCredentials", func(t *testing.T) {
		nc, err := nats.Connect(url, nats.NoReconnect())
		if err == nil {
			nc.Close()
			t.Fatal("connected without credentials")
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("connect: %v, want %v", err, nats.ErrAuthorization)
		}
	})
	t.Run("Success", func(t *testing.T) {
		cp, err := nats.Connect(url, nats.UserInfo(natsd.ControlPlaneUser, e.n.ControlPlanePassword), nats.NoReconnect())
		if err != nil {
			t.Fatalf("control plane connects: %v", err)
		}
		cp.Close()
		for _, ag := range []struct{ id, pw string }{{e.a, e.pwA}, {e.b, e.pwB}} {
			c := e.mustConnectAgent(t, ag.id, ag.pw)
			if !c.nc.IsConnected() {
				t.Fatalf("agent %s not connected", ag.id)
			}
		}
	})
}

// watchedConn is an agent connection whose state changes are observable.
type watchedConn struct {
	*agentConn
	disconnected, reconnected, closed chan struct{}
}

func (e *env) connectWatched(t *testing.T, id, password string) *watchedConn {
	t.Helper()
	w := &watchedConn{
		disconnected: make(chan struct{}, 16), reconnected: make(chan struct{}, 16), closed: make(chan struct{}),
	}
	w.agentConn = e.mustConnectAgent(t, id, password,
		nats.ReconnectWait(20*time.Millisecond), nats.ReconnectJitter(0, 0), nats.MaxReconnects(10),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { w.disconnected <- struct{}{} }),
		nats.ReconnectHandler(func(*nats.Conn) { w.reconnected <- struct{}{} }),
		nats.ClosedHandler(func(*nats.Conn) { close(w.closed) }),
	)
	return w
}

func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting until %s", what)
	}
}

func TestDisconnectAgent(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	a := e.connectWatched(t, e.a, e.pwA)
	b := e.connectWatched(t, e.b, e.pwB)

	t.Run("StillAuthorizedReconnects", func(t *testing.T) {
		e.n.Server.DisconnectAgent(e.a)
		wait(t, a.disconnected, "A is disconnected")
		wait(t, a.reconnected, "A reconnects")
		if _, err := a.js.Publish(ctx, events.EventSubject(e.a, events.KindAgent, events.PhaseOnline), []byte(`{"v":1}`)); err != nil {
			t.Fatalf("A publishes after reconnecting: %v", err)
		}
	})

	t.Run("RevokedCannotReconnect", func(t *testing.T) {
		e.agents.revoke(e.a)
		e.n.Server.DisconnectAgent(e.a)
		wait(t, a.disconnected, "A is disconnected")
		wait(t, a.closed, "A gives up reconnecting")
		select {
		case <-a.reconnected:
			t.Fatal("revoked agent A reconnected")
		default:
		}
		if _, err := e.connectAgent(t, e.a, e.pwA, nats.NoReconnect()); !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("revoked agent connects: %v, want %v", err, nats.ErrAuthorization)
		}
	})

	t.Run("OtherAgentUntouched", func(t *testing.T) {
		select {
		case <-b.disconnected:
			t.Fatal("B was disconnected by DisconnectAgent(A)")
		default:
		}
		if _, err := b.js.Publish(ctx, events.EventSubject(e.b, events.KindAgent, events.PhaseHeartbeat), []byte(`{"v":1}`)); err != nil {
			t.Fatalf("B publishes: %v", err)
		}
	})

	t.Run("UnknownAgentIsNoOp", func(t *testing.T) {
		e.n.Server.DisconnectAgent(uuid.NewString())
		if err := b.nc.FlushTimeout(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		select {
		case <-b.disconnected:
			t.Fatal("B was disconnected by DisconnectAgent of an unknown agent")
		default:
		}
	})
}

// TestAgentReplySubjectsConfined: a reply subject is the requester's
// choice, and JetStream answers it with its account's rights. Agent A points
// the replies of everything it may request (its own event's
// acknowledgement, its consumer's info, a pull request, an ack) at agent
// B's subjects and the control plane's. Nothing reaches them: not B, not
// the control plane, not the streams.
func TestAgentReplySubjectsConfined(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	targets := []string{
		events.EventSubject(e.b, events.KindBackup, events.PhaseCompleted),
		events.ControlSubject(e.b, events.KindBackup, events.PhaseExpired),
		events.CommandSubject(e.b, events.CommandBackup),
		events.RPCSubject(e.b, events.RPCDBTest),
	}
	// What lands on a target: B's own subscription (its RPC), and the
	// control plane's view of every target.
	var mu sync.Mutex
	var landed []string
	record := func(m *nats.Msg) {
		mu.Lock()
		landed = append(landed, m.Subject+" "+string(m.Data))
		mu.Unlock()
	}
	b := e.mustConnectAgent(t, e.b, e.pwB)
	if _, err := b.nc.Subscribe(events.RPCSubject(e.b, ">"), record); err != nil {
		t.Fatal(err)
	}
	if err := b.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, target := range targets {
		if _, err := e.n.NC.Subscribe(target, record); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.n.NC.Flush(); err != nil {
		t.Fatal(err)
	}

	// A's queue holds two commands: one fetched as A would (to get an ack
	// subject), one left for the pull request below.
	cmdA := events.CommandSubject(e.a, events.CommandBackup)
	for _, id := range []string{"a-1", "a-2"} {
		if err := events.Publish(ctx, e.n.JS, cmdA, id, map[string]any{"v": 1, "runId": id}); err != nil {
			t.Fatal(err)
		}
	}
	a := e.mustConnectAgent(t, e.a, e.pwA)
	cons, err := a.js.Consumer(ctx, events.StreamCommands, events.AgentConsumer(e.a))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	first, ok := <-batch.Messages()
	if !ok {
		t.Fatalf("A fetched nothing: %v", batch.Error())
	}
	ackSubject := first.Reply()

	for _, target := range targets {
		for _, m := range []*nats.Msg{
			{Subject: events.EventSubject(e.a, events.KindAgent, events.PhaseHeartbeat), Reply: target,
				Data: []byte(`{"v":1,"agentId":"` + e.a + `"}`), Header: nats.Header{jetstream.MsgIDHeader: {uuid.NewString()}}},
			{Subject: "$JS.API.CONSUMER.INFO." + events.StreamCommands + "." + events.AgentConsumer(e.a), Reply: target},
			{Subject: "$JS.API.CONSUMER.MSG.NEXT." + events.StreamCommands + "." + events.AgentConsumer(e.a), Reply: target,
				Data: []byte(`{"batch":1,"expires":500000000}`)},
			{Subject: ackSubject, Reply: target, Data: []byte("+WPI")},
		} {
			if err := a.nc.PublishMsg(m); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := a.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Every answer has had time to arrive (the pull requests expire after
	// 0.5 s); a sentinel through the same server path shows the
	// subscriptions are live.
	time.Sleep(1500 * time.Millisecond)
	sentinel := events.RPCSubject(e.b, "sentinel")
	if err := e.n.NC.Publish(sentinel, []byte("end")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		got := slices.Clone(landed)
		mu.Unlock()
		if len(got) > 0 && strings.HasPrefix(got[len(got)-1], sentinel+" ") {
			if len(got) > 1 {
				t.Fatalf("replies chosen by agent A landed on other subjects:\n%s", strings.Join(got[:len(got)-1], "\n"))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sentinel did not arrive; seen %q", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, stream := range []string{events.StreamEvents, events.StreamCommands} {
		s, err := e.n.JS.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		for _, target := range targets[:3] {
			if m, err := s.GetLastMsgForSubject(ctx, target); !errors.Is(err, jetstream.ErrMsgNotFound) {
				t.Fatalf("%s holds %s %q (err %v), want nothing", stream, target, m.Data, err)
			}
		}
	}

	// A's own path still works: the first command acks, the second is
	// fetched.
	if err := first.DoubleAck(ctx); err != nil {
		t.Fatalf("A acks its command: %v", err)
	}
	if _, err := a.js.Publish(ctx, events.EventSubject(e.a, events.KindAgent, events.PhaseHeartbeat),
		[]byte(`{"v":1,"agentId":"`+e.a+`"}`), jetstream.WithMsgID(uuid.NewString())); err != nil {
		t.Fatalf("A publishes its own event: %v", err)
	}
}
