package retention

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

var now = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// daily returns one backup a day at 02:00 UTC for n days before now, newest first.
func dailyBackups(n int) []Backup {
	var out []Backup
	for i := 0; i < n; i++ {
		out = append(out, Backup{ID: uuid.New(), At: time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC).AddDate(0, 0, -i)})
	}
	return out
}

func kept(ds []Decision) []string {
	var out []string
	for _, d := range ds {
		if d.Keep {
			out = append(out, d.At.Format(time.DateOnly))
		}
	}
	return out
}

func TestRetentionDays(t *testing.T) {
	bs := dailyBackups(10)
	ds := Plan(Policy{Days: 3}, bs, now)
	if got, want := kept(ds), []string{"2026-11-26", "2026-11-25", "2026-11-24"}; !slices.Equal(got, want) {
		t.Fatalf("kept %v, want %v", got, want)
	}
	for _, d := range ds[3:] {
		if d.Reason != "older than 3 days" {
			t.Fatalf("reason %q", d.Reason)
		}
	}
	// retentionDays 0 without GFS keeps all.
	if got := kept(Plan(Policy{}, bs, now)); len(got) != 10 {
		t.Fatalf("retentionDays 0 kept %v", got)
	}
}

func TestNewestAlwaysKept(t *testing.T) {
	old := []Backup{{ID: uuid.New(), At: now.AddDate(-1, 0, 0)}, {ID: uuid.New(), At: now.AddDate(-2, 0, 0)}}
	ds := Plan(Policy{Days: 7}, old, now)
	if !ds[0].Keep || ds[0].Reasons[0] != "newest backup" || ds[1].Keep {
		t.Fatalf("decisions %+v", ds)
	}
}

func TestGFS(t *testing.T) {
	// 100 days of daily backups plus an extra one on the newest day.
	bs := append(dailyBackups(100), Backup{ID: uuid.New(), At: time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)})
	ds := Plan(Policy{KeepLast: 2, KeepDaily: 3, KeepWeekly: 2, KeepMonthly: 3}, bs, now)
	want := []string{
		"2026-11-26", // newest, keepLast, daily, weekly, monthly
		"2026-11-26", // keepLast (same day, older)
		"2026-11-25", // daily
		"2026-11-24", // daily
		"2026-11-22", // weekly: Sunday, newest of ISO week 47
		"2026-10-31", // monthly: newest of October
		"2026-09-30", // monthly: newest of September
	}
	if got := kept(ds); !slices.Equal(got, want) {
		t.Fatalf("kept %v\nwant %v", got, want)
	}
	for _, d := range ds {
		if !d.Keep && d.Reason != "not kept by keepLast 2, keepDaily 3, keepWeekly 2, keepMonthly 3" {
			t.Fatalf("reason %q", d.Reason)
		}
	}
	// With an age limit too, younger ones stay as well.
	ds = Plan(Policy{Days: 5, KeepMonthly: 2}, bs, now)
	if got := kept(ds); len(got) != 7 || got[6] != "2026-10-31" {
		t.Fatalf("kept %v", got)
	}
	if d := ds[len(ds)-1]; d.Reason != "older than 5 days and not kept by keepMonthly 2" {
		t.Fatalf("reason %q", d.Reason)
	}
}

func TestGFSTimeZone(t *testing.T) {
	ist, err := time.LoadLocation("Europe/Istanbul")
	if err != nil {
		t.Fatal(err)
	}
	// 22:30 UTC on the 24th is 01:30 on the 25th in Istanbul.
	a := Backup{ID: uuid.New(), At: time.Date(2026, 11, 24, 22, 30, 0, 0, time.UTC)}
	b := Backup{ID: uuid.New(), At: time.Date(2026, 11, 24, 20, 0, 0, 0, time.UTC)}
	ds := Plan(Policy{KeepDaily: 2, Location: ist}, []Backup{a, b}, now)
	if !ds[0].Keep || !ds[1].Keep {
		t.Fatalf("in Istanbul these are two days: %+v", ds)
	}
	ds = Plan(Policy{KeepDaily: 1}, []Backup{a, b, {ID: uuid.New(), At: a.At.Add(-48 * time.Hour)}}, now)
	if ds[0].ID != a.ID || !ds[0].Keep || ds[1].Keep {
		t.Fatalf("in UTC they are one day: %+v", ds)
	}
}

// TestAgainstReference compares Plan with a direct reading of the rules
// on random histories.
func TestAgainstReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 500; iter++ {
		var bs []Backup
		n := r.IntN(60)
		for i := 0; i < n; i++ {
			bs = append(bs, Backup{ID: uuid.New(), At: now.Add(-time.Duration(r.Int64N(int64(400 * 24 * time.Hour))))})
		}
		p := Policy{Days: r.IntN(3) * r.IntN(60), KeepLast: r.IntN(4), KeepDaily: r.IntN(8), KeepWeekly: r.IntN(5), KeepMonthly: r.IntN(13)}
		got := map[uuid.UUID]bool{}
		for _, d := range Plan(p, bs, now) {
			got[d.ID] = d.Keep
		}
		want := reference(p, bs)
		for _, b := range bs {
			if got[b.ID] != want[b.ID] {
				t.Fatalf("policy %+v, backup %s: keep %v, reference %v", p, b.At, got[b.ID], want[b.ID])
			}
		}
	}
}

func reference(p Policy, bs []Backup) map[uuid.UUID]bool {
	keep := map[uuid.UUID]bool{}
	sorted := slices.Clone(bs)
	slices.SortFunc(sorted, func(a, b Backup) int {
		if c := b.At.Compare(a.At); c != 0 {
			return c
		}
		return strings.Compare(b.ID.String(), a.ID.String())
	})
	if len(sorted) > 0 {
		keep[sorted[0].ID] = true
	}
	for i, b := range sorted {
		if (p.Days > 0 && now.Sub(b.At) < time.Duration(p.Days)*24*time.Hour) || (!p.GFS() && p.Days == 0) || i < p.KeepLast {
			keep[b.ID] = true
		}
	}
	period := func(n int, key func(time.Time) string) {
		newest := map[string]Backup{}
		var order []string
		for _, b := range sorted {
			k := key(b.At)
			if _, ok := newest[k]; !ok {
				newest[k] = b
				order = append(order, k)
			}
		}
		for i, k := range order {
			if i < n {
				keep[newest[k].ID] = true
			}
		}
	}
	period(p.KeepDaily, func(t time.Time) string { return t.Format("2006-01-02") })
	period(p.KeepWeekly, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprint(y, w) })
	period(p.KeepMonthly, func(t time.Time) string { return t.Format("2006-01") })
	return keep
}
