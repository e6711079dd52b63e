package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestSchedulesAPI(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tok := s.register(t, "sched@example.com").Tokens.Access.Token

	t.Run("PreviewDailyIstanbul", func(t *testing.T) {
		r := s.do(t, "POST", "/v1/schedules/preview", tok, map[string]any{"scheduleType": "daily",
			"timezone": "Europe/Istanbul", "from": "2026-03-01T00:00:00Z", "count": 3})
		wantCode(t, r, http.StatusOK)
		var out struct{ Runs []time.Time }
		r.JSON(t, &out)
		want := []string{"2026-03-01T23:00:00Z", "2026-03-02T23:00:00Z", "2026-03-03T23:00:00Z"}
		if len(out.Runs) != 3 {
			t.Fatalf("runs %v", out.Runs)
		}
		for i, w := range want {
			if out.Runs[i].UTC().Format(time.RFC3339) != w {
				t.Fatalf("run %d = %s, want %s", i, out.Runs[i].UTC().Format(time.RFC3339), w)
			}
		}
	})
	t.Run("PreviewNamesTheField", func(t *testing.T) {
		for body, field := range map[string]string{
			`{"scheduleType":"custom","cronExpression":"61 * * * *"}`:           "cronExpression",
			`{"scheduleType":"daily","timezone":"Mars/Olympus"}`:                "timezone",
			`{"scheduleType":"advanced","advancedScheduleConfig":{"rules":[]}}`: "advancedScheduleConfig",
			`{"scheduleType":"sometimes"}`:                                      "scheduleType",
		} {
			r := s.do(t, "POST", "/v1/schedules/preview", tok, body)
			wantCode(t, r, http.StatusBadRequest)
			if r.Fields(t)[field] == "" {
				t.Fatalf("%s: %s", body, r.Body)
			}
		}
		r := s.do(t, "POST", "/v1/schedules/preview", tok, `{"scheduleType":"custom","cronExpression":"61 * * * *"}`)
		if !strings.Contains(string(r.Body), "minute 61 out of range") {
			t.Fatalf("cron error not precise: %s", r.Body)
		}
	})
	t.Run("JobNextRunAt", func(t *testing.T) {
		r := s.do(t, "POST", "/v1/databases", tok, validDB())
		var d struct{ ID string }
		r.JSON(t, &d)
		r = s.do(t, "POST", "/v1/backups/jobs", tok, map[string]any{"databaseId": d.ID, "name": "h", "scheduleType": "hourly"})
		wantCode(t, r, http.StatusCreated)
		var j struct {
			ID        string
			NextRunAt *time.Time
		}
		r.JSON(t, &j)
		if j.NextRunAt == nil || j.NextRunAt.Minute() != 0 || time.Until(*j.NextRunAt) > time.Hour || time.Until(*j.NextRunAt) < 0 {
			t.Fatalf("hourly nextRunAt %v", j.NextRunAt)
		}
		r = s.do(t, "GET", "/v1/backups/jobs/"+j.ID+"/next-runs?count=3", tok, nil)
		wantCode(t, r, http.StatusOK)
		var out struct{ Runs []time.Time }
		r.JSON(t, &out)
		if len(out.Runs) != 3 || out.Runs[1].Sub(out.Runs[0]) != time.Hour {
			t.Fatalf("next runs %v", out.Runs)
		}
		r = s.do(t, "POST", "/v1/backups/jobs", tok, map[string]any{"databaseId": d.ID, "name": "m"})
		r.JSON(t, &j)
		if j.NextRunAt != nil {
			t.Fatalf("manual job has nextRunAt %v", j.NextRunAt)
		}
		r = s.do(t, "POST", "/v1/backups/jobs", tok, map[string]any{"databaseId": d.ID, "name": "c", "scheduleType": "custom", "cronExpression": "0 25 * * *"})
		wantCode(t, r, http.StatusBadRequest)
		if !strings.Contains(r.Fields(t)["cronExpression"], "hour 25") {
			t.Fatalf("%s", r.Body)
		}
	})
	t.Run("RetentionFields", func(t *testing.T) {
		r := s.do(t, "POST", "/v1/databases", tok, validDB())
		var d struct{ ID string }
		r.JSON(t, &d)
		r = s.do(t, "POST", "/v1/backups/jobs", tok, map[string]any{"databaseId": d.ID, "name": "g", "keepLast": 3, "keepMonthly": 12})
		wantCode(t, r, http.StatusCreated)
		var j struct {
			ID                                           string
			RetentionDays                                int
			KeepLast, KeepDaily, KeepWeekly, KeepMonthly *int
		}
		r.JSON(t, &j)
		if j.RetentionDays != 30 || j.KeepLast == nil || *j.KeepLast != 3 || j.KeepDaily != nil || *j.KeepMonthly != 12 {
			t.Fatalf("job %+v", j)
		}
		// Absent keeps, null clears, out of range names the field.
		r = s.do(t, "PATCH", "/v1/backups/jobs/"+j.ID, tok, map[string]any{"keepLast": nil, "keepWeekly": 4})
		wantCode(t, r, http.StatusOK)
		r.JSON(t, &j)
		if j.KeepLast != nil || *j.KeepWeekly != 4 || *j.KeepMonthly != 12 {
			t.Fatalf("after patch %+v", j)
		}
		for body, field := range map[string]string{`{"keepDaily":0}`: "keepDaily", `{"keepLast":"3"}`: "", `{"retentionDays":-1}`: "retentionDays"} {
			r = s.do(t, "PATCH", "/v1/backups/jobs/"+j.ID, tok, body)
			wantCode(t, r, http.StatusBadRequest)
			if field != "" && r.Fields(t)[field] == "" {
				t.Fatalf("%s: %s", body, r.Body)
			}
		}
		r = s.do(t, "GET", "/v1/backups/jobs/"+j.ID+"/retention-preview", tok, nil)
		wantCode(t, r, http.StatusOK)
		if !strings.Contains(string(r.Body), `"expire":[]`) {
			t.Fatalf("preview of a job without backups: %s", r.Body)
		}
		other := s.register(t, "sched-other@example.com").Tokens.Access.Token
		wantCode(t, s.do(t, "GET", "/v1/backups/jobs/"+j.ID+"/retention-preview", other, nil), http.StatusNotFound)
	})
	t.Run("ScheduleChangeRestartsFromNow", func(t *testing.T) {
		// The scheduler counts slots after scheduled_through as missed; a
		// new schedule or a resumed job must start from now, other edits
		// must not move it.
		r := s.do(t, "POST", "/v1/databases", tok, validDB())
		var d struct{ ID string }
		r.JSON(t, &d)
		r = s.do(t, "POST", "/v1/backups/jobs", tok, map[string]any{"databaseId": d.ID, "name": "s", "scheduleType": "hourly"})
		var j struct{ ID string }
		r.JSON(t, &j)
		past := time.Now().Add(-48 * time.Hour).UTC().Truncate(time.Second)
		through := func() time.Time {
			var at time.Time
			if err := s.pool.QueryRow(t.Context(), `SELECT scheduled_through FROM backup_jobs WHERE id = $1`, j.ID).Scan(&at); err != nil {
				t.Fatal(err)
			}
			return at
		}
		setPast := func() {
			if _, err := s.pool.Exec(t.Context(), `UPDATE backup_jobs SET scheduled_through = $2 WHERE id = $1`, j.ID, past); err != nil {
				t.Fatal(err)
			}
		}
		for _, step := range []struct {
			body  map[string]any
			moves bool
		}{
			{map[string]any{"name": "renamed"}, false},
			{map[string]any{"isActive": false}, false},
			{map[string]any{"isActive": true}, true},
			{map[string]any{"scheduleType": "daily"}, true},
			{map[string]any{"timezone": "Europe/Berlin"}, true},
			{map[string]any{"retentionDays": 3}, false},
		} {
			setPast()
			wantCode(t, s.do(t, "PATCH", "/v1/backups/jobs/"+j.ID, tok, step.body), http.StatusOK)
			if moved := through().After(past.Add(time.Hour)); moved != step.moves {
				t.Fatalf("PATCH %v: scheduled_through moved %v, want %v", step.body, moved, step.moves)
			}
		}
	})
}

// TestJobCloudStorageChoice: a job's cloudStorageId null means the
// default storage of its type, and changing storageType without naming a
// storage takes that type's default (not the old type's storage).
func TestJobCloudStorageChoice(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tok := s.register(t, "storage-choice@example.com").Tokens.Access.Token
	storage := func(name string, isDefault bool) string {
		r := s.do(t, "POST", "/v1/cloud-storage", tok, map[string]any{"name": name, "storageType": "s3",
			"s3AccessKeyId": "AKIAIOSFODNN7EXAMPLE", "s3SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "s3Region": "us-east-1", "s3Bucket": "b-" + name,
			"isDefault": isDefault})
		wantCode(t, r, http.StatusCreated)
		var c struct{ ID string }
		r.JSON(t, &c)
		return c.ID
	}
	def := storage("main", true)
	other := storage("other", false)
	r := s.do(t, "POST", "/v1/databases", tok, validDB())
	var d struct{ ID string }
	r.JSON(t, &d)
	r = s.do(t, "POST", "/v1/backups/jobs", tok, map[string]any{"databaseId": d.ID, "name": "j", "storageType": "s3", "cloudStorageId": other})
	wantCode(t, r, http.StatusCreated)
	var j struct {
		ID             string
		StorageType    string
		CloudStorageID *string
	}
	r.JSON(t, &j)
	if j.CloudStorageID == nil || *j.CloudStorageID != other {
		t.Fatalf("created with %v, want %s", j.CloudStorageID, other)
	}
	for _, step := range []struct {
		body map[string]any
		want *string
	}{
		{map[string]any{"name": "renamed"}, &other},       // absent: kept
		{map[string]any{"cloudStorageId": nil}, &def},     // null: the default
		{map[string]any{"storageType": "local"}, nil},     // local has none
		{map[string]any{"storageType": "s3"}, &def},       // back to s3: its default
		{map[string]any{"cloudStorageId": other}, &other}, // named
	} {
		r = s.do(t, "PATCH", "/v1/backups/jobs/"+j.ID, tok, step.body)
		wantCode(t, r, http.StatusOK)
		r.JSON(t, &j)
		if (j.CloudStorageID == nil) != (step.want == nil) || (step.want != nil && *j.CloudStorageID != *step.want) {
			t.Fatalf("PATCH %v: cloudStorageId %v, want %v", step.body, j.CloudStorageID, step.want)
		}
	}
	t.Run("VerifySchedule", func(t *testing.T) {
		r := s.do(t, "POST", "/v1/databases", tok, validDB())
		var d struct{ ID string }
		r.JSON(t, &d)
		r = s.do(t, "POST", "/v1/backups/jobs", tok, map[string]any{"databaseId": d.ID, "name": "v", "verifySchedule": "every tuesday"})
		wantCode(t, r, http.StatusBadRequest)
		if r.Fields(t)["verifySchedule"] == "" {
			t.Fatalf("%s", r.Body)
		}
		r = s.do(t, "POST", "/v1/backups/jobs", tok, map[string]any{"databaseId": d.ID, "name": "v", "verifySchedule": "weekly",
			"timezone": "Europe/Istanbul"})
		wantCode(t, r, http.StatusCreated)
		var j struct {
			ID             string
			VerifySchedule *string
			VerifyNextAt   *time.Time
		}
		r.JSON(t, &j)
		// weekly: Sundays 02:00 in the job's zone (23:00 UTC on Saturday).
		if j.VerifySchedule == nil || *j.VerifySchedule != "weekly" || j.VerifyNextAt == nil ||
			j.VerifyNextAt.UTC().Weekday() != time.Saturday || j.VerifyNextAt.UTC().Hour() != 23 || time.Until(*j.VerifyNextAt) > 7*24*time.Hour {
			t.Fatalf("weekly verification: %s", r.Body)
		}
		r = s.do(t, "PATCH", "/v1/backups/jobs/"+j.ID, tok, map[string]any{"verifySchedule": "30 4 * * *"})
		wantCode(t, r, http.StatusOK)
		r.JSON(t, &j)
		if j.VerifyNextAt == nil || j.VerifyNextAt.UTC().Hour() != 1 || j.VerifyNextAt.UTC().Minute() != 30 {
			t.Fatalf("cron verification: %s", r.Body)
		}
		r = s.do(t, "PATCH", "/v1/backups/jobs/"+j.ID, tok, map[string]any{"verifySchedule": nil})
		wantCode(t, r, http.StatusOK)
		r.JSON(t, &j)
		if j.VerifySchedule != nil || j.VerifyNextAt != nil {
			t.Fatalf("cleared verification schedule: %s", r.Body)
		}
	})
}
