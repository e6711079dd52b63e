package web

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// Backups of an incremental job's chain, and one of a full (single-object)
// job, as GET /v1/backups/history answers them.
const (
	chainFullID = "0f1e2d3c-aaaa-4bbb-8ccc-000000000001"
	chainIncrID = "1a2b3c4d-aaaa-4bbb-8ccc-000000000002"
	singleID    = "5e6f7a8b-aaaa-4bbb-8ccc-000000000003"
)

func chainIncremental() map[string]any {
	return map[string]any{"id": chainIncrID, "backupJobId": "j1", "databaseId": "d1", "agentId": "a1", "status": "success",
		"queuedAt": "2026-01-02T03:04:05Z", "completedAt": "2026-01-02T03:05:05Z", "fileName": "shop.idx", "fileSize": 13000000,
		"rawSize": 1073741824, "storageType": "local", "compression": "zstd", "verificationStatus": "PENDING",
		"backupType": "incremental", "chunked": true, "parentId": chainFullID, "baseId": chainFullID,
		"dependsOn": []string{chainFullID}, "newBytes": 12897484, "dedupRatio": 83.25}
}

func singleFull() map[string]any {
	return map[string]any{"id": singleID, "backupJobId": "j2", "databaseId": "d1", "agentId": "a1", "status": "success",
		"queuedAt": "2026-01-01T03:04:05Z", "fileName": "shop.sql.zst", "fileSize": 2048, "rawSize": 8192,
		"storageType": "local", "compression": "zstd", "verificationStatus": "PASSED",
		"backupType": "full", "chunked": false, "parentId": nil, "baseId": nil, "dependsOn": []string{}, "newBytes": nil, "dedupRatio": nil}
}

// historyRow is the <tr> of backup id in a history page.
func historyRow(t *testing.T, html, id string) string {
	t.Helper()
	_, rest, ok := strings.Cut(html, `<tr data-history="`+id+`">`)
	if !ok {
		t.Fatalf("no row for %s", id)
	}
	row, _, _ := strings.Cut(rest, "</tr>")
	return row
}

func TestWebChainPages(t *testing.T) {
	t.Run("HistoryList", func(t *testing.T) {
		b, api := signedIn(t)
		api.answer("/v1/backups/history", 200, map[string]any{"results": []any{chainIncremental(), singleFull()},
			"page": 1, "totalPages": 1, "totalResults": 2})
		api.answer("/v1/backups/jobs", 200, map[string]any{"results": []any{map[string]any{"id": "j1", "name": "nightly"}}})
		resp, html := b.do("GET", "/history", "", "", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("history: %d\n%s", resp.StatusCode, html)
		}
		if !strings.Contains(html, "<th>Type</th>") {
			t.Error("the history has no Type column")
		}
		incr := historyRow(t, html, chainIncrID)
		for _, want := range []string{`<td data-label="Type"><span class="badge type-incremental" data-backup-type>Incremental</span>`,
			"12.3 MB new of 1.0 GB", `data-dedup`, "×83.2"} {
			if !strings.Contains(incr, want) {
				t.Errorf("the incremental's row lacks %s:\n%s", want, incr)
			}
		}
		full := historyRow(t, html, singleID)
		if !strings.Contains(full, `<span class="badge type-full" data-backup-type>Full</span>`) {
			t.Errorf("the full's row does not say Full:\n%s", full)
		}
		if strings.Contains(full, " new of ") || strings.Contains(full, "data-dedup") {
			t.Errorf("a single-object backup shows chunk statistics:\n%s", full)
		}
	})

	t.Run("RunPageIncremental", func(t *testing.T) {
		b, api := signedIn(t)
		run := chainIncremental()
		run["manifest"] = map[string]any{"engine": "postgresql", "database": "shop", "chain": map[string]any{
			"type": "incremental", "parent": chainFullID, "base": chainFullID, "dependsOn": []string{chainFullID},
			"chunks": 4100, "newChunks": 51, "newRawBytes": 12897484, "packs": 2, "packBytes": 4200000, "indexSize": 90000,
			"dumpSha256": "ab12cd34"}}
		api.answer("/v1/backups/history/"+chainIncrID, 200, run)
		api.answer("/v1/backups/jobs/j1", 200, map[string]any{"id": "j1", "name": "nightly", "backupType": "incremental"})
		resp, html := b.do("GET", "/history/"+chainIncrID, "", "", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("run page: %d\n%s", resp.StatusCode, html)
		}
		for _, want := range []string{"<h2>Chain</h2>", `data-chain>`, ">Incremental</span>",
			`<a href="/history/` + chainFullID + `" data-chain-parent><code>0f1e2d3c</code></a>`,
			`<a href="/history/` + chainFullID + `" data-chain-base><code>0f1e2d3c</code></a>`,
			"1 earlier backup<", "12.3 MB new of 1.0 GB", `data-chain-dedup>×83.2<`, "4100 (51 new)", "2 packs", "ab12cd34"} {
			if !strings.Contains(html, want) {
				t.Errorf("the incremental's run page lacks %s", want)
			}
		}
		if strings.Contains(html, "data-chain-fallback") {
			t.Error("a fallback is shown without one")
		}
	})

	t.Run("RunPageFallback", func(t *testing.T) {
		b, api := signedIn(t)
		run := chainIncremental()
		run["backupType"], run["parentId"], run["baseId"], run["dependsOn"] = "full", nil, chainIncrID, []string{}
		run["newBytes"], run["dedupRatio"] = 1073741824, 1.0
		run["manifest"] = map[string]any{"engine": "postgresql", "chain": map[string]any{"type": "full", "base": chainIncrID,
			"chunks": 4100, "newChunks": 4100, "packs": 60, "fallback": "the parent's index could not be read"}}
		api.answer("/v1/backups/history/"+chainIncrID, 200, run)
		_, html := b.do("GET", "/history/"+chainIncrID, "", "", nil)
		for _, want := range []string{"<h2>Chain</h2>", "The full of a chain", ">Full</span>", "<dt>Parent</dt><dd>none<",
			"this backup", "no earlier backup", "×1.0", `data-chain-fallback>Stored as a full: the parent&#39;s index could not be read<`} {
			if !strings.Contains(html, want) {
				t.Errorf("a chain's fallback full lacks %s", want)
			}
		}
	})

	t.Run("RunPageAffected", func(t *testing.T) {
		b, api := signedIn(t)
		run := chainIncremental()
		run["verificationStatus"] = "FAILED"
		run["verificationResult"] = map[string]any{"overallStatus": "FAILED", "verificationMethod": "BASIC",
			"checks": []map[string]any{{"check": "chunks", "passed": false, "message": "pack x/0 written by backup x is missing"}}}
		run["affectedBackups"] = []string{chainFullID, chainIncrID}
		api.answer("/v1/backups/history/"+chainIncrID, 200, run)
		_, html := b.do("GET", "/history/"+chainIncrID, "", "", nil)
		want := `id="affected-backups">Unreadable because of the missing or damaged data: <a href="/history/` + chainFullID + `">`
		if !strings.Contains(html, want) || !strings.Contains(html, `<a href="/history/`+chainIncrID+`">`) {
			t.Errorf("the run page does not list the backups a lost pack makes unreadable:\n%s", html)
		}
	})

	t.Run("RunPageSingleFull", func(t *testing.T) {
		b, api := signedIn(t)
		api.answer("/v1/backups/history/"+singleID, 200, singleFull())
		resp, html := b.do("GET", "/history/"+singleID, "", "", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("run page: %d\n%s", resp.StatusCode, html)
		}
		if !strings.Contains(html, `<dt>Type</dt><dd data-run-type><span class="badge type-full" data-backup-type>Full</span></dd>`) {
			t.Error("a single-object backup's page does not say Type: Full")
		}
		for _, no := range []string{"<h2>Chain</h2>", "data-chain", " new of ", "Incremental", "Differential"} {
			if strings.Contains(html, no) {
				t.Errorf("a single-object backup's page shows %s", no)
			}
		}
	})

	t.Run("RetentionPreview", func(t *testing.T) {
		b, api := signedIn(t)
		api.answer("/v1/backups/jobs/j1", 200, map[string]any{"id": "j1", "name": "nightly", "backupType": "incremental"})
		api.answer("/v1/backups/jobs/j1/retention-preview", 200, map[string]any{
			"expire": []any{map[string]any{"historyId": singleID, "completedAt": "2025-11-01T03:00:00Z", "backupType": "full",
				"reason": "older than 30 days"}},
			"keep": []any{
				map[string]any{"historyId": chainIncrID, "completedAt": "2026-01-02T03:05:05Z", "backupType": "incremental",
					"reasons": []string{"newest backup"}, "needs": []string{chainFullID}},
				map[string]any{"historyId": chainFullID, "completedAt": "2025-12-01T03:05:05Z", "backupType": "full",
					"reasons": []string{"needed by the chain of " + chainIncrID}, "neededBy": []string{chainIncrID}},
			}})
		resp, html := b.do("GET", "/jobs/j1", "", "", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("job page: %d\n%s", resp.StatusCode, html)
		}
		for _, want := range []string{"<th>Type</th>", "older than 30 days", `data-retention-keep open`,
			"2 backups kept, 1 of them because a later backup's chain needs it",
			`<tr data-retention-item="` + chainFullID + `" class="chain-kept">`,
			`kept: needed by the chain of <a href="/history/` + chainIncrID + `"><code>1a2b3c4d</code></a>`,
			`<span class="tag">newest backup</span>`, ">Incremental</span>"} {
			if !strings.Contains(html, want) {
				t.Errorf("the retention preview lacks %s", want)
			}
		}
		_, keep, _ := strings.Cut(html, "data-retention-keep")
		if n := strings.Count(keep, "data-chain-kept"); n != 1 {
			t.Errorf("%d chain markers in the kept backups, want 1", n)
		}
	})

	t.Run("JobFormHelp", func(t *testing.T) {
		b, _ := signedIn(t)
		_, html := b.do("GET", "/jobs/new", "", "", nil)
		if !strings.Contains(html, "Incremental and differential backups store only the chunks that changed since the previous backup (incremental) or the last full (differential); a new full is made weekly, after 50 backups, or when storage, compression or encryption changes.") {
			t.Error("the job form has no help for the backup type")
		}
	})

	// The Delete button's error is the API's message (app.js shows
	// res.data.message): a 409 for a backup its chain needs comes through
	// the proxy as the API sent it.
	t.Run("DeleteConflict", func(t *testing.T) {
		b, api := signedIn(t)
		msg := "1 later backups of its chain need this backup's data (" + chainIncrID + "); delete them first, newest first"
		api.answer("/v1/backups/history/"+chainFullID, http.StatusConflict, map[string]any{"code": 409, "message": msg})
		_, page := b.do("GET", "/agents", "", "", nil)
		token := between(page, `name="csrf-token" content="`, `"`)
		resp, body := b.do("DELETE", "/ui/v1/backups/history/"+chainFullID, "", "", map[string]string{"X-CSRF-Token": token})
		var got struct{ Message string }
		_ = json.Unmarshal([]byte(body), &got)
		if resp.StatusCode != http.StatusConflict || got.Message != msg {
			t.Fatalf("delete of a needed backup: %d %s", resp.StatusCode, body)
		}
	})
}
