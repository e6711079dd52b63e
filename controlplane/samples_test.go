package controlplane_test

import (
	"strings"
	"testing"
	"time"
)

// sampleTrip is one engine's round trip of a sample database through a
// running system, shared by the engines' sample tests.
type sampleTrip struct {
	base, token, srcID string
	engine             string           // the manifest's engine
	ext                string           // part of the backup's file name (".sql.zst")
	rows               map[string]int64 // the source's rows (documents) per table
	check              string           // a verification check that must pass too ("" none)
	// target creates database name and returns its id; compare fails t
	// unless database dst holds what the source does.
	target  func(t *testing.T, name string) string
	compare func(t *testing.T, dst string)
	// scratch counts the scratch databases (rahatback_verify_*) on the
	// source's server: FULL verification must leave none.
	scratch func(t *testing.T) int
}

// Checks each level adds, all of which must pass on a sound backup.
var (
	databaseChecks = []string{"completion marker", "tables", "content", "schema objects"}
	fullChecks     = []string{"scratch database", "test restore", "restored tables", "restored content", "restored schema objects", "cleanup"}
)

// verify runs a verification of backup run at level and waits for its
// result.
func (c client) verify(token, run, level string, within time.Duration) historyView {
	c.t.Helper()
	c.want(c.call("POST", "/v1/backups/history/"+run+"/verify", token, map[string]any{"verificationLevel": level}), 202)
	return c.waitHistory(token, run, within, level+" verification", func(h historyView) bool {
		return h.VerificationStatus != "PENDING" && h.VerificationStatus != "" && h.VerificationResult.VerificationMethod == level
	})
}

// passedChecks fails t unless v passed with every check named in want.
func passedChecks(t *testing.T, v historyView, want ...string) {
	t.Helper()
	checksPassed(t, v, want...)
	if v.VerificationStatus != "PASSED" {
		t.Fatalf("%s verification: %+v", v.VerificationResult.VerificationMethod, v.VerificationResult)
	}
}

// checksPassed fails t unless every check named in want is in v and
// passed, whatever v's other checks say.
func checksPassed(t *testing.T, v historyView, want ...string) {
	t.Helper()
	got := map[string]bool{}
	for _, ch := range v.VerificationResult.Checks {
		got[ch.Check] = ch.Passed
	}
	for _, w := range want {
		if !got[w] {
			t.Fatalf("%s verification: check %q missing or failed: %+v", v.VerificationResult.VerificationMethod, w, v.VerificationResult.Checks)
		}
	}
}

// run backs the source up with job (its databaseId set to srcID), checks the
// manifest's row counts, the download's checksum, and BASIC, DATABASE and
// FULL verifications (FULL leaving no scratch database),
// restores into a new database dst and compares it. It returns the job's id
// and the backup's history row.
func (s sampleTrip) run(t *testing.T, job map[string]any, dst string) (string, historyView) {
	t.Helper()
	c := client{t, s.base}
	var j struct{ ID string }
	job["databaseId"] = s.srcID
	c.want(c.call("POST", "/v1/backups/jobs", s.token, job), 201).decode(t, &j)
	run := c.runJob(s.token, j.ID)
	h := c.waitHistory(s.token, run, 3*time.Minute, "finished", func(h historyView) bool { return h.Status == "success" || h.Status == "failed" })
	if h.Status != "success" {
		t.Fatalf("backup: %s", h.ErrorMessage)
	}
	if h.Manifest.Engine != s.engine || !strings.Contains(h.FileName, s.ext) {
		t.Fatalf("backup %s: engine %q", h.FileName, h.Manifest.Engine)
	}
	counted := map[string]int64{}
	for _, tc := range h.Manifest.Tables {
		counted[tc.Name] = tc.Rows
	}
	for name, rows := range s.rows {
		if counted[name] != rows {
			t.Errorf("manifest: table %s has %d rows, the source %d", name, counted[name], rows)
		}
	}
	if sum, n := c.downloadSum(s.token, run); sum != h.ChecksumValue || n != h.FileSize {
		t.Fatalf("download %s/%d, recorded %s/%d", sum, n, h.ChecksumValue, h.FileSize)
	}
	c.want(c.call("POST", "/v1/backups/history/"+run+"/verify", s.token, map[string]any{"verificationLevel": "BASIC"}), 202)
	v := c.waitHistory(s.token, run, time.Minute, "verified", func(h historyView) bool { return h.VerificationStatus != "PENDING" && h.VerificationStatus != "" })
	checked := s.check == ""
	for _, ch := range v.VerificationResult.Checks {
		checked = checked || ch.Check == s.check && ch.Passed
	}
	if v.VerificationStatus != "PASSED" || !checked {
		t.Fatalf("verification: %+v", v.VerificationResult)
	}
	passedChecks(t, c.verify(s.token, run, "DATABASE", 2*time.Minute), databaseChecks...)
	full := c.verify(s.token, run, "FULL", 4*time.Minute)
	passedChecks(t, full, append(databaseChecks, fullChecks...)...)
	for _, ch := range full.VerificationResult.Checks {
		t.Logf("FULL %s: %s", ch.Check, ch.Message)
	}
	if s.scratch != nil {
		if n := s.scratch(t); n != 0 {
			t.Fatalf("%d scratch databases left after FULL verification", n)
		}
	}
	dstID := s.target(t, dst)
	var rs struct{ RestoreHistoryID string }
	c.want(c.call("POST", "/v1/backups/history/"+run+"/restore", s.token, map[string]any{"targetDatabaseId": dstID}), 202).decode(t, &rs)
	if r := c.waitRestore(s.token, rs.RestoreHistoryID, 3*time.Minute); r["status"] != "success" {
		t.Fatalf("restore: %v", r)
	}
	s.compare(t, dst)
	return j.ID, h
}
