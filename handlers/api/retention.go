package api

import (
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/retention"
)

type retentionItemJSON struct {
	HistoryID   uuid.UUID `json:"historyId"`
	CompletedAt time.Time `json:"completedAt"`
	FileName    *string   `json:"fileName"`
	FileSize    *int64    `json:"fileSize"`
	StorageType string    `json:"storageType"`
	BackupType  string    `json:"backupType"`
	Reasons     []string  `json:"reasons,omitempty"` // why it is kept
	Reason      string    `json:"reason,omitempty"`  // why it would go
	// Needs are the earlier backups of its chain it needs; NeededBy the
	// kept ones whose chain keeps it (then a reason says so too).
	Needs    []uuid.UUID `json:"needs,omitempty"`
	NeededBy []uuid.UUID `json:"neededBy,omitempty"`
}

// retentionPreview answers what the job's retention would do now:
// {policy, expire: [...], keep: [...]}, newest first; expire items carry
// the reason, keep items the rules that keep them. 404 for another
// user's job.
func (a *API) retentionPreview(w http.ResponseWriter, r *http.Request) error {
	j, err := a.loadJob(r)
	if err != nil {
		return err
	}
	rows, err := a.q.SuccessfulBackupsOfJob(r.Context(), a.pool, db.SuccessfulBackupsOfJobParams{BackupJobID: j.ID, UserID: j.UserID})
	if err != nil {
		return err
	}
	policy := retention.FromColumns(j.RetentionDays, j.KeepLast, j.KeepDaily, j.KeepWeekly, j.KeepMonthly, j.Timezone)
	var backups []retention.Backup
	var pinned []uuid.UUID
	byID := make(map[uuid.UUID]db.SuccessfulBackupsOfJobRow, len(rows))
	for _, row := range rows {
		if row.Status != "success" {
			pinned = append(pinned, row.DependsOn...)
			continue
		}
		backups = append(backups, retention.Backup{ID: row.ID, At: *row.CompletedAt, Needs: row.DependsOn})
		byID[row.ID] = row
	}
	expire, keep := []retentionItemJSON{}, []retentionItemJSON{}
	for _, d := range retention.Plan(policy, backups, time.Now(), pinned...) {
		row := byID[d.ID]
		item := retentionItemJSON{HistoryID: d.ID, CompletedAt: d.At.UTC(), FileName: row.FileName, FileSize: row.FileSize,
			StorageType: row.StorageType, BackupType: row.BackupType, Reasons: d.Reasons, Reason: d.Reason,
			Needs: d.Needs, NeededBy: d.NeededBy}
		if d.Keep {
			keep = append(keep, item)
		} else {
			expire = append(expire, item)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"policy": map[string]any{"retentionDays": j.RetentionDays, "keepLast": j.KeepLast, "keepDaily": j.KeepDaily,
			"keepWeekly": j.KeepWeekly, "keepMonthly": j.KeepMonthly, "timezone": j.Timezone},
		"expire": expire, "keep": keep,
	})
	return nil
}
