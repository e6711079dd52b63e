// Package runs holds the rules of a backup run that every way of starting
// one shares ("run now" in the API, a slot in the scheduler): which agent
// takes it, when it is skipped and why, and the event that records it.
package runs

import (
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/events"
)

// Reasons recorded on skipped runs; each is the start of the message.
const (
	ReasonDown    = "control plane was down at the scheduled time; the slot was not run"
	ReasonBusy    = "previous run still running"
	ReasonOffline = "agent offline"
	ReasonNoAgent = "no agent can run this backup: connect an agent and assign it to the database"
)

// Agent is one of a user's agents as the choice of a run sees it.
type Agent struct {
	ID     uuid.UUID
	Name   string
	Online bool
}

// Pick is the agent that runs a backup of a database assigned to agent
// assigned (nil: none), among the user's agents in their order: the
// assigned one while it is still the user's, online or not, else the
// user's first online agent. ok is false when there is none.
func Pick(agents []Agent, assigned *uuid.UUID) (agent Agent, ok bool) {
	if assigned != nil {
		for _, a := range agents {
			if a.ID == *assigned {
				return a, true
			}
		}
	}
	for _, a := range agents {
		if a.Online {
			return a, true
		}
	}
	return Agent{}, false
}

// Decide is how a run goes: events.PhaseQueued on agent, or
// events.PhaseSkipped with the reason. busy, when not nil, is the job's run
// still queued or running.
func Decide(agent Agent, ok bool, busy *uuid.UUID) (phase, reason string) {
	switch {
	case busy != nil:
		return events.PhaseSkipped, fmt.Sprintf("%s (run %s)", ReasonBusy, busy)
	case !ok:
		return events.PhaseSkipped, ReasonNoAgent
	case !agent.Online:
		return events.PhaseSkipped, fmt.Sprintf("%s: agent %q was not connected", ReasonOffline, agent.Name)
	default:
		return events.PhaseQueued, ""
	}
}

// Event is the control plane's event that records run of job j in phase
// (queued or skipped, with reason), at at; slot is the scheduled slot, nil
// for "run now". Its id is "<run>:<phase>".
func Event(j db.BackupJob, run uuid.UUID, phase, reason string, at time.Time, slot *time.Time) events.BackupEvent {
	ev := events.BackupEvent{V: events.Version, ID: run.String() + ":" + phase, RunID: run.String(), At: at.UTC(),
		UserID: j.UserID.String(), JobID: j.ID.String(), DatabaseID: j.DatabaseID.String(), StorageType: j.StorageType,
		Compression: j.Compression, IsEncrypted: j.IsEncrypted, ScheduledFor: slot, Error: reason}
	if j.StorageType != "local" && j.CloudStorageID != nil {
		ev.CloudStorageID = j.CloudStorageID.String()
	}
	return ev
}
