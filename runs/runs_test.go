package runs_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/runs"
)

func TestPick(t *testing.T) {
	off1 := runs.Agent{ID: uuid.New(), Name: "off1"}
	on1 := runs.Agent{ID: uuid.New(), Name: "on1", Online: true}
	on2 := runs.Agent{ID: uuid.New(), Name: "on2", Online: true}
	agents := []runs.Agent{off1, on1, on2}
	gone := uuid.New()
	for _, tc := range []struct {
		name     string
		agents   []runs.Agent
		assigned *uuid.UUID
		want     runs.Agent
		ok       bool
	}{
		{"AssignedOnline", agents, &on2.ID, on2, true},
		{"AssignedOffline", agents, &off1.ID, off1, true}, // the run is then skipped, not moved
		{"AssignedNotTheUsers", agents, &gone, on1, true},
		{"NoneAssigned", agents, nil, on1, true},
		{"NoneOnline", []runs.Agent{off1}, nil, runs.Agent{}, false},
		{"NoAgents", nil, &gone, runs.Agent{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := runs.Pick(tc.agents, tc.assigned)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("Pick = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	busy := uuid.New()
	on := runs.Agent{ID: uuid.New(), Name: "db-host", Online: true}
	off := runs.Agent{ID: uuid.New(), Name: "db-host"}
	for _, tc := range []struct {
		name          string
		agent         runs.Agent
		ok            bool
		busy          *uuid.UUID
		phase, prefix string
	}{
		{"Queued", on, true, nil, events.PhaseQueued, ""},
		{"Busy", on, true, &busy, events.PhaseSkipped, runs.ReasonBusy + " (run " + busy.String() + ")"},
		{"NoAgent", runs.Agent{}, false, nil, events.PhaseSkipped, runs.ReasonNoAgent},
		{"Offline", off, true, nil, events.PhaseSkipped, runs.ReasonOffline + `: agent "db-host"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			phase, reason := runs.Decide(tc.agent, tc.ok, tc.busy)
			if phase != tc.phase || !strings.HasPrefix(reason, tc.prefix) || (tc.prefix == "") != (reason == "") {
				t.Fatalf("Decide = %q, %q; want %q, %q…", phase, reason, tc.phase, tc.prefix)
			}
		})
	}
}

func TestEvent(t *testing.T) {
	cloud := uuid.New()
	j := db.BackupJob{ID: uuid.New(), UserID: uuid.New(), DatabaseID: uuid.New(), StorageType: "s3", CloudStorageID: &cloud,
		Compression: "zstd", IsEncrypted: true}
	run := uuid.New()
	at := time.Date(2026, 11, 30, 3, 0, 0, 0, time.FixedZone("+03", 3*3600))
	ev := runs.Event(j, run, events.PhaseSkipped, "why", at, nil)
	if ev.ID != run.String()+":skipped" || ev.RunID != run.String() || !ev.At.Equal(at) || ev.At.Location() != time.UTC ||
		ev.UserID != j.UserID.String() || ev.JobID != j.ID.String() || ev.DatabaseID != j.DatabaseID.String() ||
		ev.CloudStorageID != cloud.String() || ev.Error != "why" || !ev.IsEncrypted || ev.ScheduledFor != nil {
		t.Fatalf("event %+v", ev)
	}
	j.StorageType = "local"
	if ev := runs.Event(j, run, events.PhaseQueued, "", at, nil); ev.CloudStorageID != "" {
		t.Fatalf("a local run names cloud storage %s", ev.CloudStorageID)
	}
}
