// Package retention decides which of a job's successful backups to keep
// (pure: no I/O).
//
// A policy has an age limit (retentionDays) and optional
// grandfather-father-son counts: keepLast (the newest N backups),
// keepDaily, keepWeekly and keepMonthly (the newest backup of each of the
// N most recent days, ISO weeks and months that have one, in the job's
// time zone). A backup is kept when any rule keeps it:
//
//   - without GFS counts, a backup older than retentionDays expires;
//     retentionDays 0 keeps everything;
//   - with GFS counts, a backup is kept while it is younger than
//     retentionDays (when above 0) or a count selects it;
//   - the newest backup is always kept, whatever the policy;
//   - a backup another kept backup needs (an earlier backup of its
//     incremental or differential chain, Backup.Needs), or one a backup
//     being made needs (Plan's pinned), is kept too, with the reason
//     "needed by the chain of <id>": so the newest backup, a good restore
//     point, always stays restorable.
package retention

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Policy is a job's retention.
type Policy struct {
	Days                                         int // 0: no age limit
	KeepLast, KeepDaily, KeepWeekly, KeepMonthly int // 0: rule unused
	// Location is where days, weeks and months begin; nil means UTC.
	Location *time.Location
}

// GFS reports whether any count is set.
func (p Policy) GFS() bool {
	return p.KeepLast > 0 || p.KeepDaily > 0 || p.KeepWeekly > 0 || p.KeepMonthly > 0
}

// Backup is one successful backup: its id, when it completed, and the
// earlier backups it needs (its chain's; none for a single-object backup).
type Backup struct {
	ID    uuid.UUID
	At    time.Time
	Needs []uuid.UUID
}

// Decision is the fate of one backup: kept, with the rules that keep it,
// or expired, with the reason. NeededBy lists the kept backups (or ones
// being made) whose chain keeps it.
type Decision struct {
	Backup
	Keep     bool
	Reasons  []string // why it is kept
	Reason   string   // why it expires
	NeededBy []uuid.UUID
}

// Plan decides every backup at now; pinned are the needs of backups being
// made. Decisions come newest first.
func Plan(p Policy, backups []Backup, now time.Time, pinned ...uuid.UUID) []Decision {
	out := plan(p, backups, now)
	at := make(map[uuid.UUID]int, len(out))
	for i, d := range out {
		at[d.ID] = i
	}
	need := func(id, by uuid.UUID) {
		i, ok := at[id]
		if !ok {
			return
		}
		d := &out[i]
		if !d.Keep {
			d.Keep, d.Reason = true, ""
		}
		if by == uuid.Nil {
			if !slices.Contains(d.Reasons, "needed by a backup being made") {
				d.Reasons = append(d.Reasons, "needed by a backup being made")
			}
			return
		}
		d.NeededBy = append(d.NeededBy, by)
		d.Reasons = append(d.Reasons, "needed by the chain of "+by.String())
	}
	// Needs are transitive (a backup lists its parent's needs too), so
	// one pass over the backups kept by a rule suffices.
	for _, d := range slices.Clone(out) {
		if d.Keep {
			for _, n := range d.Needs {
				need(n, d.ID)
			}
		}
	}
	for _, n := range pinned {
		need(n, uuid.Nil)
	}
	return out
}

func plan(p Policy, backups []Backup, now time.Time) []Decision {
	loc := p.Location
	if loc == nil {
		loc = time.UTC
	}
	sorted := slices.Clone(backups)
	slices.SortFunc(sorted, func(a, b Backup) int {
		if c := b.At.Compare(a.At); c != 0 {
			return c
		}
		return strings.Compare(b.ID.String(), a.ID.String())
	})
	out := make([]Decision, len(sorted))
	daily := bucketer{n: p.KeepDaily, name: "keepDaily", key: func(t time.Time) string { return t.Format(time.DateOnly) }}
	weekly := bucketer{n: p.KeepWeekly, name: "keepWeekly", key: func(t time.Time) string {
		y, w := t.ISOWeek()
		return fmt.Sprintf("%d-W%02d", y, w)
	}}
	monthly := bucketer{n: p.KeepMonthly, name: "keepMonthly", key: func(t time.Time) string { return t.Format("2006-01") }}
	cutoff := now.AddDate(0, 0, -p.Days)
	for i, b := range sorted {
		d := Decision{Backup: b}
		if i == 0 {
			d.Reasons = append(d.Reasons, "newest backup")
		}
		if p.Days > 0 && b.At.After(cutoff) {
			d.Reasons = append(d.Reasons, fmt.Sprintf("younger than %d days", p.Days))
		}
		if !p.GFS() && p.Days == 0 {
			d.Reasons = append(d.Reasons, "retentionDays 0 keeps every backup")
		}
		if p.KeepLast > 0 && i < p.KeepLast {
			d.Reasons = append(d.Reasons, fmt.Sprintf("keepLast %d", p.KeepLast))
		}
		local := b.At.In(loc)
		for _, bk := range []*bucketer{&daily, &weekly, &monthly} {
			if r := bk.take(local); r != "" {
				d.Reasons = append(d.Reasons, r)
			}
		}
		d.Keep = len(d.Reasons) > 0
		if !d.Keep {
			d.Reason = expireReason(p)
		}
		out[i] = d
	}
	return out
}

// bucketer keeps the newest backup of each of the n most recent periods.
type bucketer struct {
	n    int
	name string
	key  func(time.Time) string
	seen []string
}

// take returns the rule's reason when t (visited newest first) is the
// newest backup of a period still within the count.
func (b *bucketer) take(t time.Time) string {
	if b.n <= 0 {
		return ""
	}
	k := b.key(t)
	if len(b.seen) > 0 && b.seen[len(b.seen)-1] == k {
		return "" // an older backup of a period already kept
	}
	if len(b.seen) >= b.n {
		return ""
	}
	b.seen = append(b.seen, k)
	return fmt.Sprintf("%s %d (%s)", b.name, b.n, k)
}

func expireReason(p Policy) string {
	var rules []string
	for _, r := range []struct {
		name string
		n    int
	}{{"keepLast", p.KeepLast}, {"keepDaily", p.KeepDaily}, {"keepWeekly", p.KeepWeekly}, {"keepMonthly", p.KeepMonthly}} {
		if r.n > 0 {
			rules = append(rules, fmt.Sprintf("%s %d", r.name, r.n))
		}
	}
	switch {
	case p.Days > 0 && len(rules) > 0:
		return fmt.Sprintf("older than %d days and not kept by %s", p.Days, strings.Join(rules, ", "))
	case p.Days > 0:
		return fmt.Sprintf("older than %d days", p.Days)
	default:
		return "not kept by " + strings.Join(rules, ", ")
	}
}

// FromColumns is the policy of a job's columns: retention_days, the GFS
// counts (NULL: unused) and its time zone (an unknown zone means UTC).
func FromColumns(days int32, last, daily, weekly, monthly *int32, timezone string) Policy {
	n := func(v *int32) int {
		if v == nil {
			return 0
		}
		return int(*v)
	}
	loc, err := time.LoadLocation(timezone)
	if err != nil {
		loc = time.UTC
	}
	return Policy{Days: int(days), KeepLast: n(last), KeepDaily: n(daily), KeepWeekly: n(weekly),
		KeepMonthly: n(monthly), Location: loc}
}
