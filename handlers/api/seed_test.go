package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSeedPayloads posts every request body the seed document shows, as
// its frontend sends them (section numbers are the seed's), with only the
// ids of objects made here put in place of the seed's numeric ones.
func TestSeedPayloads(t *testing.T) {
	t.Parallel()
	s := newServer(t)

	// 2.2: register.
	r := s.do(t, "POST", "/v1/auth/register", "", `{"email": "seed@example.com", "password": "seed-password-1", "name": "Seed User"}`)
	wantCode(t, r, http.StatusCreated)
	var me authResp
	r.JSON(t, &me)
	tok := me.Tokens.Access.Token
	agent := enrollAgent(t, s, tok)
	announce(t, s, agent)
	waitAgentStatus(t, s, tok, agent, "online", 10*time.Second)

	// 3.2 and 3.3: the database form, tested then saved.
	dbForm := `{"name": "Production DB", "type": "postgresql", "host": "127.0.0.1", "port": 5432,
		"username": "postgres", "password": "secret", "database": "shop"}`
	// No agent process serves this test's agent: the form is accepted and
	// the test then fails for want of the agent, not of a field.
	r = s.do(t, "POST", "/v1/databases/test-connection", tok, dbForm)
	if r.Code == http.StatusBadRequest || r.Code >= 500 && r.Code != http.StatusServiceUnavailable && r.Code != http.StatusGatewayTimeout {
		t.Fatalf("test-connection with the seed's form: %d %s", r.Code, r.Body)
	}
	r = s.do(t, "POST", "/v1/databases", tok, dbForm)
	wantCode(t, r, http.StatusCreated)
	var db struct{ ID string }
	r.JSON(t, &db)

	// 4.2: the S3 form.
	r = s.do(t, "POST", "/v1/cloud-storage", tok, `{
  "storageType": "s3",
  "name": "Production S3",
  "s3AccessKeyId": "AKIAIOSFODNN7EXAMPLE",
  "s3SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
  "s3Region": "eu-west-1",
  "s3Bucket": "my-backups",
  "isDefault": true
}`)
	wantCode(t, r, http.StatusCreated)
	var cs struct{ ID string }
	r.JSON(t, &cs)

	// 5.2: the job form, with 6.4's advanced schedule config.
	job := strings.NewReplacer("DB-ID", db.ID, "CS-ID", cs.ID).Replace(`{
  "databaseId": "DB-ID",
  "name": "Gunluk Production Backup",
  "scheduleType": "daily",
  "cronExpression": "0 2 * * *",
  "advancedScheduleConfig": {
    "type": "complex",
    "rules": [
      {
        "daysOfWeek": [1, 2, 3, 4, 5],
        "times": ["02:00", "14:00"],
        "exclusions": ["2024-01-01", "2024-12-25"]
      }
    ]
  },
  "backupType": "full",
  "compression": true,
  "isEncrypted": true,
  "encryptionPassword": "gizli123",
  "autoVerifyAfterBackup": true,
  "verificationLevel": "BASIC",
  "storageType": "s3",
  "cloudStorageId": "CS-ID",
  "retentionDays": 30
}`)
	r = s.do(t, "POST", "/v1/backups/jobs", tok, job)
	if r.Code != http.StatusCreated {
		t.Fatalf("the seed's job form: %d %s", r.Code, r.Body)
	}
	var created struct {
		ID, Name, ScheduleType, BackupType, Compression, VerificationLevel, StorageType string
		CloudStorageID                                                                  *string
		IsEncrypted, AutoVerifyAfterBackup                                              bool
		RetentionDays                                                                   *int
		NextRunAt                                                                       *time.Time
	}
	r.JSON(t, &created)
	if created.Name != "Gunluk Production Backup" || created.ScheduleType != "daily" || created.BackupType != "full" ||
		created.Compression != "zstd" || !created.IsEncrypted || !created.AutoVerifyAfterBackup ||
		created.VerificationLevel != "BASIC" || created.StorageType != "s3" || created.CloudStorageID == nil ||
		*created.CloudStorageID != cs.ID || created.RetentionDays == nil || *created.RetentionDays != 30 || created.NextRunAt == nil {
		t.Fatalf("created %s", r.Body)
	}
	if strings.Contains(string(r.Body), "gizli123") {
		t.Fatalf("the response holds the encryption password: %s", r.Body)
	}

	// Eight characters, as the seed's password has, is the least taken.
	r = s.do(t, "PATCH", "/v1/backups/jobs/"+created.ID, tok, `{"encryptionPassword": "gizli12"}`)
	if got := r.Fields(t)["encryptionPassword"]; r.Code != http.StatusBadRequest || !strings.Contains(got, "at least 8") {
		t.Fatalf("a 7-character encryption password: %d %s", r.Code, r.Body)
	}

	// compression: false is "none"; names are still taken and answered.
	for _, tc := range []struct{ in, want string }{{`false`, "none"}, {`true`, "zstd"}, {`"gzip"`, "gzip"}, {`null`, "gzip"}} {
		r = s.do(t, "PATCH", "/v1/backups/jobs/"+created.ID, tok, `{"compression": `+tc.in+`}`)
		wantCode(t, r, http.StatusOK)
		var j struct{ Compression string }
		r.JSON(t, &j)
		if j.Compression != tc.want {
			t.Fatalf("compression %s answered %q, want %q", tc.in, j.Compression, tc.want)
		}
	}
	r = s.do(t, "PATCH", "/v1/backups/jobs/"+created.ID, tok, `{"compression": 1}`)
	if got := r.Fields(t)["compression"]; r.Code != http.StatusBadRequest || got == "" {
		t.Fatalf("compression 1: %d %s", r.Code, r.Body)
	}

	// 7.2, 9 and 10: run it, then restore (the seed posts no body) and
	// verify the backup it made.
	r = s.do(t, "POST", "/v1/backups/jobs/"+created.ID+"/run", tok, nil)
	wantCode(t, r, http.StatusAccepted)
	var run struct{ HistoryID string }
	r.JSON(t, &run)
	completeRun(t, s, agent, run.HistoryID)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var h struct{ Status string }
		s.do(t, "GET", "/v1/backups/history/"+run.HistoryID, tok, nil).JSON(t, &h)
		if h.Status == "success" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s is %s", run.HistoryID, h.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r = s.do(t, "POST", "/v1/backups/history/"+run.HistoryID+"/restore", tok, nil)
	if r.Code != http.StatusAccepted {
		t.Fatalf("restore with no body: %d %s", r.Code, r.Body)
	}
	r = s.do(t, "POST", "/v1/backups/history/"+run.HistoryID+"/verify", tok, `{"verificationLevel": "BASIC"}`)
	if r.Code != http.StatusAccepted {
		t.Fatalf("verify: %d %s", r.Code, r.Body)
	}
}
