package events_test

import (
	"strings"
	"testing"

	"github.com/rahatback/rahatback/events"
)

const agentID = "0b6c3f52-6d5e-4c39-9d0e-2f1b5d1e7a10"

func TestParseEventSubject(t *testing.T) {
	t.Run("Success", func(t *testing.T) {
		for _, tc := range []struct{ subject, agent, kind, phase string }{
			{"rahat.evt." + agentID + ".backup.completed", agentID, "backup", "completed"},
			{"rahat.evt." + agentID + ".agent.online", agentID, "agent", "online"},
			{"rahat.evt.a.b.c", "a", "b", "c"},
			{events.EventSubject(agentID, events.KindVerify, events.PhaseFailed), agentID, events.KindVerify, events.PhaseFailed},
		} {
			a, k, p, ok := events.ParseEventSubject(tc.subject)
			if !ok || a != tc.agent || k != tc.kind || p != tc.phase {
				t.Errorf("ParseEventSubject(%q) = %q, %q, %q, %v; want %q, %q, %q, true",
					tc.subject, a, k, p, ok, tc.agent, tc.kind, tc.phase)
			}
		}
	})
	t.Run("Malformed", func(t *testing.T) {
		for _, s := range []string{
			"",
			"rahat.evt.",
			"rahat.evt",
			"rahat.evt." + agentID,
			"rahat.evt." + agentID + ".backup", // too few tokens
			"rahat.evt." + agentID + ".backup.completed.more", // too many tokens
			"rahat.cmd." + agentID + ".backup.completed",      // wrong prefix
			"rahat.rpc." + agentID + ".backup.completed",
			"xrahat.evt." + agentID + ".backup.completed",
			"RAHAT.EVT." + agentID + ".backup.completed",
			"rahat.evt..backup.completed", // empty tokens
			"rahat.evt." + agentID + "..completed",
			"rahat.evt." + agentID + ".backup.",
			"rahat.evt...",
			".rahat.evt." + agentID + ".backup.completed",
		} {
			if a, k, p, ok := events.ParseEventSubject(s); ok || a != "" || k != "" || p != "" {
				t.Errorf("ParseEventSubject(%q) = %q, %q, %q, %v; want rejected", s, a, k, p, ok)
			}
		}
	})
}

func TestSubjectBuilders(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{events.CommandSubject(agentID, events.CommandBackup), "rahat.cmd." + agentID + ".backup"},
		{events.CommandSubject(agentID, events.CommandRestore), "rahat.cmd." + agentID + ".restore"},
		{events.CommandSubject(agentID, events.CommandVerify), "rahat.cmd." + agentID + ".verify"},
		{events.RPCSubject(agentID, events.RPCDBTest), "rahat.rpc." + agentID + ".dbtest"},
		{events.EventSubject(agentID, events.KindBackup, events.PhaseStarted), "rahat.evt." + agentID + ".backup.started"},
		{events.EventSubject(agentID, events.KindRestore, events.PhaseProgress), "rahat.evt." + agentID + ".restore.progress"},
		{events.EventSubject(agentID, events.KindAgent, events.PhaseHeartbeat), "rahat.evt." + agentID + ".agent.heartbeat"},
		{events.AgentConsumer(agentID), "agent-" + agentID},
		{events.AgentNATSUser(agentID), "agent-" + agentID},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestAgentNATSUser(t *testing.T) {
	id, ok := events.AgentIDFromNATSUser(events.AgentNATSUser(agentID))
	if !ok || id != agentID {
		t.Fatalf("AgentIDFromNATSUser(AgentNATSUser(%s)) = %q, %v", agentID, id, ok)
	}
	for _, user := range []string{"", "agent-", "rahatback", agentID, "Agent-" + agentID, "agents-" + agentID} {
		if id, ok := events.AgentIDFromNATSUser(user); ok {
			t.Errorf("AgentIDFromNATSUser(%q) = %q, true; want rejected", user, id)
		}
	}
}

func TestAgentInboxPrefix(t *testing.T) {
	other := "7e0c1c9a-5c0e-4d5e-8f8e-8e6a4b0e1f22"
	p := events.AgentInboxPrefix(agentID)
	if p != "_INBOX_0b6c3f526d5e4c399d0e2f1b5d1e7a10" {
		t.Fatalf("AgentInboxPrefix = %q", p)
	}
	// One token, distinct per agent, and not under the default _INBOX.
	if strings.ContainsAny(p, ".*>") || strings.HasPrefix(p, "_INBOX.") {
		t.Fatalf("inbox prefix %q is not a single literal token", p)
	}
	if p == events.AgentInboxPrefix(other) {
		t.Fatal("two agents share an inbox prefix")
	}
}

func TestDecodeVersion(t *testing.T) {
	var p events.AgentPresence
	if err := events.Decode([]byte(`{"v":1,"agentId":"`+agentID+`","hostname":"db1"}`), &p); err != nil {
		t.Fatalf("decode v1: %v", err)
	}
	if p.AgentID != agentID || p.Hostname != "db1" {
		t.Fatalf("decoded %+v", p)
	}
	for _, data := range []string{`{"v":2,"agentId":"x"}`, `{"v":0}`, `{"agentId":"x"}`, `not json`, `{"v":1,"hostname":5}`} {
		if err := events.Decode([]byte(data), &p); err == nil {
			t.Errorf("Decode(%s) accepted", data)
		}
	}
}

func TestParseSubject(t *testing.T) {
	for _, tc := range []struct {
		subject string
		want    events.Subject
		ok      bool
	}{
		{events.EventSubject(agentID, events.KindBackup, events.PhaseCompleted), events.Subject{AgentID: agentID, Kind: "backup", Phase: "completed"}, true},
		{events.ControlSubject(agentID, events.KindBackup, events.PhaseExpired), events.Subject{AgentID: agentID, Kind: "backup", Phase: "expired", Control: true}, true},
		{"rahat.cp." + agentID + ".backup", events.Subject{}, false},
		{"rahat.cp." + agentID + ".backup.queued.x", events.Subject{}, false},
		{"rahat.cmd." + agentID + ".backup.queued", events.Subject{}, false},
	} {
		got, ok := events.ParseSubject(tc.subject)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseSubject(%q) = %+v, %v; want %+v, %v", tc.subject, got, ok, tc.want, tc.ok)
		}
	}
	// An agent's own-event parser does not take the control plane's subjects.
	if _, _, _, ok := events.ParseEventSubject(events.ControlSubject(agentID, events.KindBackup, events.PhaseQueued)); ok {
		t.Error("ParseEventSubject accepted a rahat.cp subject")
	}
}

// TestPhaseAuthority: the phases the control plane decides are never an
// agent's, and an agent's permissions do not reach rahat.cp.>.
func TestPhaseAuthority(t *testing.T) {
	for _, kind := range []string{events.KindBackup, events.KindRestore, events.KindVerify} {
		for _, phase := range []string{events.PhaseQueued, events.PhaseSkipped, events.PhaseLost, events.PhaseDeleted, events.PhaseExpired} {
			if events.AgentPhase(kind, phase) {
				t.Errorf("an agent may publish %s.%s", kind, phase)
			}
		}
	}
	if !events.ControlPhase(events.KindBackup, events.PhaseLost) || events.ControlPhase(events.KindBackup, events.PhaseCompleted) {
		t.Error("control-plane phases of backups are wrong")
	}
	for _, p := range events.AgentPermissions(agentID).Publish {
		if strings.HasPrefix(p, "rahat.cp.") || p == ">" || strings.HasPrefix(p, "rahat.>") {
			t.Errorf("agent may publish %q", p)
		}
	}
}
