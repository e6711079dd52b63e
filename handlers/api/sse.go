package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/events"
)

// Defaults of the event stream.
const (
	sseKeepAlive    = 15 * time.Second // comment line that keeps proxies from closing an idle stream
	sseAgentRefresh = 5 * time.Second  // how often newly enrolled or revoked agents are noticed
	sseWriteTimeout = 30 * time.Second // a write not done by then ends the stream
	sseBuffer       = 256              // events buffered per client; beyond, NATS drops the newest (slow consumer)
)

// streamEvents streams the signed-in user's events as Server-Sent Events: every
// backup, restore and verify phase, and agent online/offline, of the user's
// own agents only. Each message is "event: <kind>.<phase>" with the agent's
// JSON payload as data (payload types in package events) plus the agent id
// in an "agentId" wrapper: {"agentId": …, "payload": …}. Agents enrolled or
// revoked while streaming are picked up within sseAgentRefresh. Heartbeats
// are not sent; a comment line every sseKeepAlive keeps the stream open.
// 500 when the response cannot be streamed.
func (a *API) streamEvents(w http.ResponseWriter, r *http.Request) error {
	flusher, ok := w.(http.Flusher)
	if !ok {
		return fmt.Errorf("events: response writer %T cannot flush", w)
	}
	ctx := r.Context()
	user := userID(ctx)

	msgs := make(chan *nats.Msg, sseBuffer)
	subs := map[string]*nats.Subscription{}
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	// follow subscribes to the user's current agents and drops revoked ones.
	follow := func() error {
		rows, err := a.q.ListAgents(ctx, a.pool, db.ListAgentsParams{UserID: user, OfflineAfterSecs: a.offlineSecs()})
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, row := range rows {
			id := row.ID.String()
			seen[id] = true
			if subs[id] != nil {
				continue
			}
			own, err := a.opts.NC.ChanSubscribe(events.EventSubject(id, "*", "*"), msgs)
			if err != nil {
				return err
			}
			subs[id] = own
			cp, err := a.opts.NC.ChanSubscribe(events.ControlSubject(id, "*", "*"), msgs)
			if err != nil {
				return err
			}
			subs["cp:"+id] = cp
		}
		for key, s := range subs {
			if !seen[strings.TrimPrefix(key, "cp:")] {
				_ = s.Unsubscribe()
				delete(subs, key)
			}
		}
		return nil
	}
	if err := follow(); err != nil {
		if ctx.Err() != nil {
			return nil // the client left
		}
		return err
	}
	// The subscriptions are live at the server before the client hears
	// that the stream is open.
	if err := a.opts.NC.FlushTimeout(a.opts.RPCTimeout); err != nil && ctx.Err() == nil {
		return err
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 2000\n\n")
	flusher.Flush()

	// A client that stops reading must not hold the handler and its
	// subscriptions until TCP gives up: every write has a deadline.
	rc := http.NewResponseController(w)
	deadline := func() { _ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout)) }
	keepAlive := time.NewTicker(sseKeepAlive)
	defer keepAlive.Stop()
	refresh := time.NewTicker(sseAgentRefresh)
	defer refresh.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.closing:
			return nil // the server is shutting down; the browser reconnects
		case <-keepAlive.C:
			deadline()
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
			flusher.Flush()
		case <-refresh.C:
			if err := follow(); err != nil && ctx.Err() == nil {
				a.log.Warn("event stream: listing agents", "err", err)
			}
		case m := <-msgs:
			sub, ok := events.ParseSubject(m.Subject)
			if !ok || sub.Kind == events.KindAgent && sub.Phase == events.PhaseHeartbeat {
				continue
			}
			agentID, kind, phase := sub.AgentID, sub.Kind, sub.Phase
			if !oneLineJSON(m.Data) {
				continue
			}
			deadline()
			_, err := fmt.Fprintf(w, "event: %s.%s\ndata: {\"agentId\":%q,\"payload\":%s}\n\n", kind, phase, agentID, m.Data)
			if err != nil {
				return nil
			}
			flusher.Flush()
		}
	}
}

// oneLineJSON reports whether data is a JSON object that fits on one SSE
// data line: agents publish compact JSON, but an agent is not trusted to.
func oneLineJSON(data []byte) bool {
	return len(data) > 0 && data[0] == '{' && !bytes.ContainsAny(data, "\r\n") && json.Valid(data)
}
