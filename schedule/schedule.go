// Package schedule parses a backup job's schedule (SPEC §2.5-2.6) and
// computes when it runs.
//
// A schedule is a set of local wall-clock slots (a date and an HH:MM) in
// the job's time zone. A slot runs at the first instant the job's wall
// clock reaches it:
//   - an ordinary local time runs at that time;
//   - a local time repeated when clocks fall back runs once, at its first
//     occurrence;
//   - a local time skipped when clocks spring forward runs once, at the
//     end of the gap (02:30 in a 02:00→03:00 gap runs at 03:00); several
//     skipped slots, and a slot at the gap's end, collapse to one run.
//
// The package is pure: no I/O besides loading the time zone in Parse, no
// global state, no clock; callers pass the times. A *Schedule is
// immutable and safe for concurrent use.
package schedule

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Spec is a job's schedule as stored.
type Spec struct {
	Type     string          // manual | hourly | daily | weekly | monthly | custom | advanced
	Cron     string          // for custom: 5 fields
	Advanced json.RawMessage // for advanced: {"rules":[{"daysOfWeek":[1,2],"times":["02:00"],"exclusions":["2024-12-25"],"startDate":"2024-01-01","endDate":"2024-12-31"}]}
	Timezone string          // IANA; "" = UTC
}

// FieldError names the bad field (scheduleType, cronExpression,
// advancedScheduleConfig or timezone) and the reason.
type FieldError struct{ Field, Reason string }

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Types returns the schedule types in the order of the API contract.
func Types() []string {
	return []string{"manual", "hourly", "daily", "weekly", "monthly", "custom", "advanced"}
}

// presets maps the preset schedule types to their cron expressions.
var presets = map[string]string{
	"hourly":  "0 * * * *",
	"daily":   "0 2 * * *",
	"weekly":  "0 2 * * 0",
	"monthly": "0 2 1 * *",
}

// Preset returns the cron expression of a preset type (hourly, daily,
// weekly, monthly) and whether typ is one.
func Preset(typ string) (string, bool) {
	c, ok := presets[typ]
	return c, ok
}

// VerifySpec is the Spec of a job's verification schedule expr: a preset
// name (hourly, daily, weekly, monthly) or a 5-field cron expression, in
// time zone tz.
func VerifySpec(expr, tz string) Spec {
	if _, ok := Preset(expr); ok {
		return Spec{Type: expr, Timezone: tz}
	}
	return Spec{Type: "custom", Cron: expr, Timezone: tz}
}

type kind uint8

const (
	kindManual kind = iota
	kindCron
	kindRules
)

// Schedule is a parsed, validated schedule.
type Schedule struct {
	kind  kind
	loc   *time.Location
	cron  *cronSpec
	rules []rule
	// For rules: no rule runs before firstDay or after lastDay.
	firstDay, lastDay int64
}

// Parse validates spec and compiles it. A bad spec yields a *FieldError.
// The time zone is loaded with time.LoadLocation; see ParseWith to
// share loaded zones between many jobs.
func Parse(spec Spec) (*Schedule, error) {
	return ParseWith(spec, time.LoadLocation)
}

// ParseWith is Parse with a caller-supplied zone loader (for example a
// LocationCache's Load).
func ParseWith(spec Spec, loadLocation func(name string) (*time.Location, error)) (*Schedule, error) {
	s := &Schedule{kind: kindManual}
	cronExpr := ""
	switch spec.Type {
	case "manual":
	case "hourly", "daily", "weekly", "monthly":
		cronExpr = presets[spec.Type]
		s.kind = kindCron
	case "custom":
		cronExpr = spec.Cron
		s.kind = kindCron
	case "advanced":
		s.kind = kindRules
	default:
		reason := "must be one of " + strings.Join(Types(), ", ")
		if spec.Type != "" {
			reason = fmt.Sprintf("%q: %s", spec.Type, reason)
		}
		return nil, &FieldError{"scheduleType", reason}
	}
	switch s.kind {
	case kindCron:
		c, reason := parseCron(cronExpr)
		if reason != "" {
			return nil, &FieldError{"cronExpression", reason}
		}
		s.cron = c
	case kindRules:
		rules, reason := parseAdvanced(spec.Advanced)
		if reason != "" {
			return nil, &FieldError{"advancedScheduleConfig", reason}
		}
		s.rules = rules
		s.firstDay, s.lastDay = maxDay, minDay
		for _, r := range rules {
			s.firstDay = min(s.firstDay, r.start)
			s.lastDay = max(s.lastDay, r.end)
		}
	}
	loc, err := loadZone(spec.Timezone, loadLocation)
	if err != nil {
		return nil, err
	}
	s.loc = loc
	return s, nil
}

func loadZone(name string, load func(string) (*time.Location, error)) (*time.Location, error) {
	switch name {
	case "", "UTC":
		return time.UTC, nil
	case "Local":
		return nil, &FieldError{"timezone", `"Local" is not allowed: use an IANA time zone such as Europe/Istanbul or UTC`}
	}
	loc, err := load(name)
	if err != nil || loc == nil {
		return nil, &FieldError{"timezone", fmt.Sprintf("%q is not an IANA time zone such as Europe/Istanbul or UTC", name)}
	}
	return loc, nil
}

// LocationCache loads each time zone once. The zero value is ready; it
// is safe for concurrent use.
type LocationCache struct {
	mu sync.Mutex
	m  map[string]*time.Location
}

// Load is time.LoadLocation, remembered.
func (c *LocationCache) Load(name string) (*time.Location, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if loc, ok := c.m[name]; ok {
		return loc, nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, err
	}
	if c.m == nil {
		c.m = map[string]*time.Location{}
	}
	c.m[name] = loc
	return loc, nil
}

// Manual reports whether the schedule never fires.
func (s *Schedule) Manual() bool { return s.kind == kindManual }

// Location returns the job's time zone.
func (s *Schedule) Location() *time.Location { return s.loc }

// horizonDays bounds a search for the next run: every (month, day,
// weekday) combination recurs within the 400-year Gregorian cycle.
const horizonDays = 146097 + 366

// Next returns the next n firing instants strictly after `after`, in
// UTC, in order. Fewer come back only when the schedule ends (advanced
// rules with end dates) or is manual.
func (s *Schedule) Next(after time.Time, n int) []time.Time {
	if s.kind == kindManual || n <= 0 {
		return nil
	}
	out := make([]time.Time, 0, min(n, 1024))
	s.walk(after, maxDay, func(u int64) bool {
		out = append(out, time.Unix(u, 0).UTC())
		return len(out) < n
	})
	return out
}

// Between returns every firing instant in (from, to], in UTC, in order.
func (s *Schedule) Between(from, to time.Time) []time.Time {
	if s.kind == kindManual || !to.After(from) {
		return nil
	}
	toSec := to.Unix()
	_, off := to.In(s.loc).Zone()
	lastDay := floorDiv(toSec+int64(off), 86400) + 1
	var out []time.Time
	s.walk(from, lastDay, func(u int64) bool {
		if u > toSec {
			return false
		}
		out = append(out, time.Unix(u, 0).UTC())
		return true
	})
	return out
}

// walk calls emit with each firing instant (Unix seconds) after `after`,
// in order, until emit returns false, the local date passes lastDay or
// the schedule can run no more.
func (s *Schedule) walk(after time.Time, lastDay int64, emit func(u int64) bool) {
	afterSec := after.Unix() // a slot at afterSec itself is not after `after`
	_, off := after.In(s.loc).Zone()
	wallAfter := afterSec + int64(off)
	day := floorDiv(wallAfter, 86400)
	if s.kind == kindRules {
		// Rules end by themselves: past its start a rule runs at least
		// weekly but for its finitely many exclusions.
		lastDay = min(lastDay, s.lastDay)
		day = max(day, s.firstDay)
	} else {
		lastDay = min(lastDay, day+horizonDays)
	}
	res := resolver{loc: s.loc}
	last := afterSec
	var buf []int16
	c := newCal(day)
	for ; c.day <= lastDay; c.next() {
		var slots []int16
		if s.kind == kindCron {
			for s.cron.months&(1<<c.m) == 0 && c.day <= lastDay {
				c.nextMonth()
			}
			if c.day > lastDay {
				return
			}
			if !s.cron.matchDay(c.m, c.d, c.weekday) {
				continue
			}
			slots = s.cron.slots
		} else if slots, buf = s.rulesSlots(&c, buf); slots == nil {
			// No rule runs today; skip to where one starts, if later.
			next, ok := s.nextActiveDay(c.day + 1)
			if !ok {
				return
			}
			if next > c.day+1 {
				c = newCal(next - 1) // the loop's c.next() lands on next
			}
			continue
		}
		base := c.day * 86400
		for _, slot := range slots {
			wall := base + int64(slot)*60
			if wall <= wallAfter {
				continue // the clock reached it by `after`
			}
			u := res.instant(wall)
			if u <= last {
				continue // repeated hour, or collapsed into a gap's end
			}
			last = u
			if !emit(u) {
				return
			}
		}
	}
}

// nextActiveDay returns the first day on or after day inside some
// rule's date range.
func (s *Schedule) nextActiveDay(day int64) (int64, bool) {
	best, ok := int64(maxDay), false
	for i := range s.rules {
		r := &s.rules[i]
		switch {
		case day > r.end:
		case day >= r.start:
			return day, true
		default:
			best, ok = min(best, r.start), true
		}
	}
	return best, ok
}

// rulesSlots returns the union of the times of the rules that run on
// c's date, ascending.
func (s *Schedule) rulesSlots(c *cal, buf []int16) ([]int16, []int16) {
	var one []int16
	n := 0
	buf = buf[:0]
	for i := range s.rules {
		r := &s.rules[i]
		if !r.matchDay(c.day, c.weekday) {
			continue
		}
		n++
		if n == 1 {
			one = r.times
			continue
		}
		if n == 2 {
			buf = append(buf, one...)
		}
		buf = append(buf, r.times...)
	}
	switch n {
	case 0:
		return nil, buf
	case 1:
		return one, buf
	}
	sortUnique(&buf)
	return buf, buf
}

func sortUnique(p *[]int16) {
	b := *p
	if len(b) > 32 {
		slices.Sort(b)
	}
	// insertion sort: a handful of rules with a handful of times each
	for i := 1; i < len(b); i++ {
		for j := i; j > 0 && b[j] < b[j-1]; j-- {
			b[j], b[j-1] = b[j-1], b[j]
		}
	}
	w := 0
	for i := range b {
		if w == 0 || b[i] != b[w-1] {
			b[w] = b[i]
			w++
		}
	}
	*p = b[:w]
}
