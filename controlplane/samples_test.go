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
}

// run backs the source up with job (its databaseId set to srcID), checks the
// manifest's row counts, the download's checksum and a BASIC verification,
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
	dstID := s.target(t, dst)
	var rs struct{ RestoreHistoryID string }
	c.want(c.call("POST", "/v1/backups/history/"+run+"/restore", s.token, map[string]any{"targetDatabaseId": dstID}), 202).decode(t, &rs)
	if r := c.waitRestore(s.token, rs.RestoreHistoryID, 3*time.Minute); r["status"] != "success" {
		t.Fatalf("restore: %v", r)
	}
	s.compare(t, dst)
	return j.ID, h
}
