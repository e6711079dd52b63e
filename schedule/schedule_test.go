package schedule

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // hermetic zone data

	"github.com/adhocore/gronx"
)

var testZones = []string{"Europe/Istanbul", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "UTC"}

func mustLoc(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func mustParse(t testing.TB, spec Spec) *Schedule {
	t.Helper()
	s, err := Parse(spec)
	if err != nil {
		t.Fatalf("Parse(%+v): %v", spec, err)
	}
	return s
}

// ---------------------------------------------------------------------
// Brute force: walk every minute of a window, watch the local wall clock
// and fire at the first instant the wall clock reaches (or jumps over) a
// matching local minute. This is the definition of the DST rules, with
// nothing shared with the package's day-by-day code.

// reach is a stretch of the walk: regular (instant u+60k first reaches
// wall minute lo+k, for lo+k <= hi) or a jump (instant u first reaches
// every wall minute lo..hi at once: a spring-forward gap).
type reach struct {
	u, lo, hi int64
	jump      bool
}

type window struct {
	loc      *time.Location
	from, to time.Time
	events   []reach
}

func newWindow(loc *time.Location, from, to time.Time) *window {
	w := &window{loc: loc, from: from, to: to}
	_, off := from.In(loc).Zone()
	maxWall := (from.Unix() + int64(off)) / 60 // wall minutes reached by `from`
	for u := from.Unix() + 60; u <= to.Unix(); u += 60 {
		_, off := time.Unix(u, 0).In(loc).Zone()
		wall := (u + int64(off)) / 60
		switch {
		case wall <= maxWall: // the clock went back: nothing new
			continue
		case wall > maxWall+1:
			w.events = append(w.events, reach{u: u, lo: maxWall + 1, hi: wall, jump: true})
		default:
			if n := len(w.events); n > 0 && !w.events[n-1].jump && w.events[n-1].hi == wall-1 && w.events[n-1].u+60*(wall-w.events[n-1].lo) == u {
				w.events[n-1].hi = wall
			} else {
				w.events = append(w.events, reach{u: u, lo: wall, hi: wall})
			}
		}
		maxWall = wall
	}
	return w
}

// fire returns the instants at which a schedule matching the local
// minutes reported by dayMatch runs.
func (w *window) fire(dayMatch func(y int, m time.Month, d int, wd time.Weekday) []int) []time.Time {
	days := map[int64][]int64{} // local day -> matching wall minutes
	matches := func(day int64) []int64 {
		if ms, ok := days[day]; ok {
			return ms
		}
		t := time.Unix(day*86400, 0).UTC()
		var ms []int64
		for _, m := range dayMatch(t.Year(), t.Month(), t.Day(), t.Weekday()) {
			ms = append(ms, day*1440+int64(m))
		}
		days[day] = ms
		return ms
	}
	var out []time.Time
	for _, e := range w.events {
		var hits []int64
		for day := e.lo / 1440; day <= e.hi/1440; day++ {
			for _, wm := range matches(day) {
				if wm >= e.lo && wm <= e.hi {
					hits = append(hits, wm)
				}
			}
		}
		switch {
		case e.jump && len(hits) > 0:
			out = append(out, time.Unix(e.u, 0).UTC())
		case !e.jump:
			for _, wm := range hits {
				out = append(out, time.Unix(e.u+60*(wm-e.lo), 0).UTC())
			}
		}
	}
	return out
}

// ---------------------------------------------------------------------
// Random cron expressions, generated together with their value sets.

type genCron struct {
	expr                   string
	sets                   [5][]bool // minute, hour, dom, month, dow (0-7)
	domStar, dowStar, safe bool      // safe: gronx agrees on the syntax
}

func genField(r *rand.Rand, lo, hi int, names []string, nameBase int, bias []int) (string, []bool, bool) {
	set := make([]bool, hi+1)
	safe := true
	maxStep := hi - lo + 1
	if hi == 7 {
		maxStep = 7
	}
	pick := func() int {
		if len(bias) > 0 && r.IntN(3) > 0 {
			return bias[r.IntN(len(bias))]
		}
		return lo + r.IntN(hi-lo+1)
	}
	show := func(v int) string {
		if names != nil && v-nameBase < len(names) && v-nameBase >= 0 && r.IntN(3) == 0 {
			n := names[v-nameBase]
			if r.IntN(2) == 0 {
				n = strings.ToLower(n)
			}
			return n
		}
		return strconv.Itoa(v)
	}
	item := func() string {
		switch r.IntN(6) {
		case 0: // */n
			n := 1 + r.IntN(min(maxStep, 16))
			top := hi
			if hi == 7 {
				top = 6
			}
			for v := lo; v <= top; v += n {
				set[v] = true
			}
			return "*/" + strconv.Itoa(n)
		case 1: // a-b
			a, b := pick(), pick()
			if a > b {
				a, b = b, a
			}
			for v := a; v <= b; v++ {
				set[v] = true
			}
			return show(a) + "-" + show(b)
		case 2: // a-b/n
			a, b := pick(), pick()
			if a > b {
				a, b = b, a
			}
			n := 1 + r.IntN(min(maxStep, 11))
			for v := a; v <= b; v += n {
				set[v] = true
			}
			return strconv.Itoa(a) + "-" + strconv.Itoa(b) + "/" + strconv.Itoa(n)
		case 3: // a/n = a-max/n
			a := pick()
			if hi == 7 && a == 7 {
				safe = false // gronx reads "7/n" as Sunday onwards, wrapping
			}
			n := 1 + r.IntN(min(maxStep, 11))
			top := hi
			if hi == 7 && a < 7 {
				top = 6
			}
			for v := a; v <= top; v += n {
				set[v] = true
			}
			return strconv.Itoa(a) + "/" + strconv.Itoa(n)
		default:
			v := pick()
			set[v] = true
			return show(v)
		}
	}
	if r.IntN(4) == 0 {
		for v := lo; v <= hi; v++ {
			set[v] = true
		}
		if hi == 7 {
			set[7] = false
		}
		return "*", set, true
	}
	parts := []string{item()}
	for r.IntN(3) == 0 {
		parts = append(parts, item())
	}
	return strings.Join(parts, ","), set, safe
}

func randCron(r *rand.Rand) genCron {
	var g genCron
	var fields [5]string
	for {
		// keep the year's run count modest (dense ones are tested on
		// short windows in TestDenseAroundDST)
		fields[0], g.sets[0], _ = genField(r, 0, 59, nil, 0, []int{0, 15, 30, 45, 59})
		fields[1], g.sets[1], _ = genField(r, 0, 23, nil, 0, []int{0, 1, 2, 3})
		n := 0
		for h := range 24 {
			for m := range 60 {
				if g.sets[1][h] && g.sets[0][m] {
					n++
				}
			}
		}
		if n <= 120 {
			break
		}
	}
	if r.IntN(3) == 0 {
		fields[2], g.sets[2], _ = genField(r, 1, 31, nil, 0, []int{1, 8, 15, 29, 30, 31})
	} else {
		fields[2], g.sets[2] = "*", make([]bool, 32)
		for v := 1; v <= 31; v++ {
			g.sets[2][v] = true
		}
	}
	if r.IntN(2) == 0 {
		fields[3], g.sets[3], _ = genField(r, 1, 12, monthNames, 1, []int{3, 4, 10, 11})
	} else {
		fields[3], g.sets[3] = "*", make([]bool, 13)
		for v := 1; v <= 12; v++ {
			g.sets[3][v] = true
		}
	}
	if r.IntN(3) == 0 {
		var safe bool
		fields[4], g.sets[4], safe = genField(r, 0, 7, dayNames, 0, []int{0, 7})
		g.safe = safe
	} else {
		fields[4], g.sets[4] = "*", make([]bool, 8)
		for v := 0; v <= 6; v++ {
			g.sets[4][v] = true
		}
	}
	g.domStar = strings.HasPrefix(fields[2], "*")
	g.dowStar = strings.HasPrefix(fields[4], "*")
	if fields[4] == "*" {
		g.safe = true
	}
	g.safe = g.safe && (fields[2] == "*" || fields[4] == "*")
	g.expr = strings.Join(fields[:], " ")
	return g
}

func (g genCron) possible() bool {
	if !g.domStar && !g.dowStar {
		return true
	}
	for m := 1; m <= 12; m++ {
		for d := 1; d <= maxDaysIn[m]; d++ {
			if g.sets[3][m] && g.sets[2][d] {
				return true
			}
		}
	}
	return false
}

// dayMatch returns the local minutes at which g runs on a date.
func (g genCron) dayMatch(_ int, m time.Month, d int, wd time.Weekday) []int {
	if !g.sets[3][m] {
		return nil
	}
	dom := g.sets[2][d]
	dow := g.sets[4][wd] || (wd == time.Sunday && g.sets[4][7])
	ok := dom && dow
	if !g.domStar && !g.dowStar {
		ok = dom || dow
	}
	if !ok {
		return nil
	}
	var mins []int
	for h := 0; h < 24; h++ {
		for mi := 0; mi < 60; mi++ {
			if g.sets[1][h] && g.sets[0][mi] {
				mins = append(mins, h*60+mi)
			}
		}
	}
	return mins
}

// ---------------------------------------------------------------------
// Random advanced rule sets.

type genRules struct{ cfg advancedJSON }

func randRules(r *rand.Rand, year int, loc *time.Location) genRules {
	// dates around this zone's transitions, plus random ones
	var special []string
	for u := time.Date(year, 1, 1, 0, 0, 0, 0, loc); u.Year() == year; u = u.Add(24 * time.Hour) {
		if _, o1 := u.Zone(); true {
			if _, o2 := u.Add(24 * time.Hour).Zone(); o1 != o2 {
				special = append(special, u.Format("2006-01-02"), u.Add(24*time.Hour).Format("2006-01-02"))
			}
		}
	}
	date := func() string {
		if len(special) > 0 && r.IntN(2) == 0 {
			return special[r.IntN(len(special))]
		}
		return time.Date(year, 1, 1+r.IntN(365), 0, 0, 0, 0, time.UTC).Format("2006-01-02")
	}
	var g genRules
	for range 1 + r.IntN(3) {
		var rj ruleJSON
		if r.IntN(3) > 0 {
			for d := 0; d < 7; d++ {
				if r.IntN(2) == 0 {
					rj.DaysOfWeek = append(rj.DaysOfWeek, d)
				}
			}
		}
		for range 1 + r.IntN(4) {
			h := []int{0, 1, 2, 3, r.IntN(24)}[r.IntN(5)]
			m := []int{0, 15, 30, 45, r.IntN(60)}[r.IntN(5)]
			rj.Times = append(rj.Times, fmt.Sprintf("%02d:%02d", h, m))
		}
		for range r.IntN(4) {
			rj.Exclusions = append(rj.Exclusions, date())
		}
		if r.IntN(3) == 0 {
			rj.StartDate = date()
		}
		if r.IntN(3) == 0 {
			rj.EndDate = date()
			if rj.StartDate > rj.EndDate {
				rj.StartDate, rj.EndDate = rj.EndDate, rj.StartDate
			}
		}
		g.cfg.Rules = append(g.cfg.Rules, rj)
	}
	return g
}

func (g genRules) json() json.RawMessage {
	b, _ := json.Marshal(g.cfg)
	return b
}

// dayMatch returns the local minutes at which g runs on a date.
func (g genRules) dayMatch(y int, m time.Month, d int, wd time.Weekday) []int {
	date := fmt.Sprintf("%04d-%02d-%02d", y, m, d)
	var mins []int
	for _, rj := range g.cfg.Rules {
		if rj.StartDate != "" && date < rj.StartDate || rj.EndDate != "" && date > rj.EndDate {
			continue
		}
		if slices.Contains(rj.Exclusions, date) {
			continue
		}
		if len(rj.DaysOfWeek) > 0 && !slices.Contains(rj.DaysOfWeek, int(wd)) {
			continue
		}
		for _, t := range rj.Times {
			h, _ := strconv.Atoi(t[:2])
			mi, _ := strconv.Atoi(t[3:])
			mins = append(mins, h*60+mi)
		}
	}
	slices.Sort(mins)
	return slices.Compact(mins)
}

// ---------------------------------------------------------------------

// checkAgainst compares Between and Next with the brute-force list.
func checkAgainst(t *testing.T, r *rand.Rand, w *window, s *Schedule, want []time.Time, what string) {
	t.Helper()
	got := s.Between(w.from, w.to)
	if !slices.Equal(got, want) {
		t.Fatalf("%s in %s: Between differs\n%s", what, w.loc, diff(got, want, w.loc))
	}
	if len(want) > 0 {
		k := min(len(want), 50)
		if got := s.Next(w.from, k); !slices.Equal(got, want[:k]) {
			t.Fatalf("%s in %s: Next(from, %d) differs\n%s", what, w.loc, k, diff(got, want[:k], w.loc))
		}
	}
	// Next from random points: arbitrary instants, firing instants
	// themselves, and instants a second or less around them.
	for range 40 {
		var after time.Time
		switch r.IntN(3) {
		case 0:
			span := w.to.Sub(w.from)
			after = w.from.Add(time.Duration(r.Int64N(int64(span))))
		default:
			if len(want) == 0 {
				continue
			}
			after = want[r.IntN(len(want))].Add(time.Duration(r.IntN(3)-1) * time.Duration(r.Int64N(int64(time.Second))+1))
		}
		i := sort.Search(len(want), func(i int) bool { return want[i].After(after) })
		exp := want[i:min(len(want), i+3)]
		got := s.Next(after, 3)
		// beyond the window the brute force knows nothing
		got = slices.DeleteFunc(got, func(x time.Time) bool { return x.After(w.to) })
		if !slices.Equal(got, exp) {
			t.Fatalf("%s in %s: Next(%s, 3) differs\n%s", what, w.loc, after.In(w.loc), diff(got, exp, w.loc))
		}
	}
}

func diff(got, want []time.Time, loc *time.Location) string {
	var b strings.Builder
	n := max(len(got), len(want))
	shown := 0
	for i := 0; i < n && shown < 12; i++ {
		var g, w string
		if i < len(got) {
			g = got[i].In(loc).Format("2006-01-02 15:04 MST")
		}
		if i < len(want) {
			w = want[i].In(loc).Format("2006-01-02 15:04 MST")
		}
		if g != w || shown > 0 {
			fmt.Fprintf(&b, "  #%d got %-24s want %s\n", i, g, w)
			shown++
		}
	}
	return fmt.Sprintf("got %d want %d\n%s", len(got), len(want), b.String())
}

func TestAgainstBruteForce(t *testing.T) {
	cases := 40
	if testing.Short() {
		cases = 8
	}
	for zi, zone := range testZones {
		t.Run(strings.ReplaceAll(zone, "/", "_"), func(t *testing.T) {
			t.Parallel()
			loc := mustLoc(t, zone)
			r := rand.New(rand.NewPCG(uint64(zi), 2026))
			from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			to := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
			w := newWindow(loc, from, to)
			var fired int
			for range cases {
				g := randCron(r)
				if !g.possible() {
					continue
				}
				s := mustParse(t, Spec{Type: "custom", Cron: g.expr, Timezone: zone})
				want := w.fire(g.dayMatch)
				fired += len(want)
				checkAgainst(t, r, w, s, want, "cron "+strconv.Quote(g.expr))
			}
			for range cases {
				g := randRules(r, 2026, loc)
				s := mustParse(t, Spec{Type: "advanced", Advanced: g.json(), Timezone: zone})
				want := w.fire(g.dayMatch)
				fired += len(want)
				checkAgainst(t, r, w, s, want, "rules "+string(g.json()))
			}
			for _, typ := range []string{"hourly", "daily", "weekly", "monthly"} {
				s := mustParse(t, Spec{Type: typ, Timezone: zone})
				c, _ := Preset(typ)
				g := genCronFromString(t, c)
				checkAgainst(t, r, w, s, w.fire(g.dayMatch), typ)
			}
			if fired == 0 {
				t.Fatal("nothing fired")
			}
		})
	}
}

// Every-minute and every-few-minutes schedules across the DST days,
// on windows of a few days.
func TestDenseAroundDST(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	windows := []struct {
		zone     string
		from, to string // UTC
	}{
		{"America/New_York", "2026-03-07T00:00:00Z", "2026-03-10T00:00:00Z"},
		{"America/New_York", "2026-10-31T00:00:00Z", "2026-11-03T00:00:00Z"},
		{"Australia/Lord_Howe", "2026-04-03T00:00:00Z", "2026-04-06T00:00:00Z"},
		{"Australia/Lord_Howe", "2026-10-02T00:00:00Z", "2026-10-05T00:00:00Z"},
		{"Europe/Berlin", "2026-03-28T00:00:00Z", "2026-03-31T00:00:00Z"},
		{"Europe/Berlin", "2026-10-24T00:00:00Z", "2026-10-27T00:00:00Z"},
	}
	for _, win := range windows {
		loc := mustLoc(t, win.zone)
		from, _ := time.Parse(time.RFC3339, win.from)
		to, _ := time.Parse(time.RFC3339, win.to)
		w := newWindow(loc, from, to)
		for _, expr := range []string{"* * * * *", "*/7 * * * *", "0-40/3 1-3 * * *", "*/15 * * * *", "29,30,31 * * * *"} {
			s := mustParse(t, Spec{Type: "custom", Cron: expr, Timezone: win.zone})
			checkAgainst(t, r, w, s, w.fire(genCronSets(t, expr).dayMatch), expr)
		}
	}
}

// genCronSets builds the sets of an expression with the package's own
// field parser (the day and DST logic under test stays independent).
func genCronSets(t *testing.T, expr string) genCron {
	var g genCron
	f := strings.Fields(expr)
	for i, s := range f {
		m, reason := parseField(&cronFields[i], s)
		if reason != "" {
			t.Fatal(reason)
		}
		g.sets[i] = make([]bool, 64)
		for v := range 64 {
			g.sets[i][v] = m&(1<<v) != 0
		}
	}
	g.domStar, g.dowStar = strings.HasPrefix(f[2], "*"), strings.HasPrefix(f[4], "*")
	return g
}

// genCronFromString builds the sets of a plain preset expression.
func genCronFromString(t *testing.T, expr string) genCron {
	var g genCron
	f := strings.Fields(expr)
	lims := [5][2]int{{0, 59}, {0, 23}, {1, 31}, {1, 12}, {0, 6}}
	for i, s := range f {
		g.sets[i] = make([]bool, lims[i][1]+2)
		if s == "*" {
			for v := lims[i][0]; v <= lims[i][1]; v++ {
				g.sets[i][v] = true
			}
			continue
		}
		v, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		g.sets[i][v] = true
	}
	g.domStar, g.dowStar = f[2] == "*", f[4] == "*"
	g.expr = expr
	return g
}

// The parser agrees with gronx where both define the same thing.
func TestCronAgreesWithGronx(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	gx := gronx.New()
	checked := 0
	for range 150 {
		g := randCron(r)
		if !g.safe || !g.possible() {
			continue
		}
		if !gronx.IsValid(g.expr) {
			t.Fatalf("gronx rejects %q", g.expr)
		}
		c, reason := parseCron(g.expr)
		if reason != "" {
			t.Fatalf("%q: %s", g.expr, reason)
		}
		for range 40 {
			tm := time.Date(2026, time.Month(1+r.IntN(12)), 1+r.IntN(31), r.IntN(24), r.IntN(60), 0, 0, time.UTC)
			due, err := gx.IsDue(g.expr, tm)
			if err != nil {
				t.Fatalf("gronx %q: %v", g.expr, err)
			}
			mine := c.matchDay(int(tm.Month()), tm.Day(), int(tm.Weekday())) && slices.Contains(c.slots, int16(tm.Hour()*60+tm.Minute()))
			if due != mine {
				t.Fatalf("%q at %s: gronx %v, schedule %v", g.expr, tm, due, mine)
			}
			checked++
		}
	}
	if checked < 1500 {
		t.Fatalf("only %d checks", checked)
	}
}

func TestDSTDays(t *testing.T) {
	ny := mustLoc(t, "America/New_York")
	lh := mustLoc(t, "Australia/Lord_Howe")
	local := func(loc *time.Location, s string) time.Time {
		tm, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	fmtAll := func(ts []time.Time, loc *time.Location) string {
		var out []string
		for _, x := range ts {
			out = append(out, x.In(loc).Format("2006-01-02 15:04 -0700"))
		}
		return strings.Join(out, ", ")
	}
	cases := []struct {
		name, zone, cron string
		adv              string
		from, to         string // local, Between(from, to]
		want             string
	}{
		{"NY spring-forward 02:30 runs at 03:00 once", "America/New_York", "30 2 * * *", "",
			"2026-03-07 12:00", "2026-03-09 12:00",
			"2026-03-08 03:00 -0400, 2026-03-09 02:30 -0400"},
		{"NY gap slots collapse with 03:00", "America/New_York", "0,15,30,45 2,3 * * *", "",
			"2026-03-08 01:50", "2026-03-08 03:50",
			"2026-03-08 03:00 -0400, 2026-03-08 03:15 -0400, 2026-03-08 03:30 -0400, 2026-03-08 03:45 -0400"},
		{"NY fall-back 01:30 runs once", "America/New_York", "30 1 * * *", "",
			"2026-10-31 12:00", "2026-11-02 12:00",
			"2026-11-01 01:30 -0400, 2026-11-02 01:30 -0500"},
		{"NY fall-back hourly skips the repeated 01:00", "America/New_York", "0 * * * *", "",
			"2026-10-31 23:30", "2026-11-01 03:30",
			"2026-11-01 00:00 -0400, 2026-11-01 01:00 -0400, 2026-11-01 02:00 -0500, 2026-11-01 03:00 -0500"},
		{"Lord Howe spring-forward 02:15 runs at 02:30", "Australia/Lord_Howe", "15 2 * * *", "",
			"2026-10-03 12:00", "2026-10-05 12:00",
			"2026-10-04 02:30 +1100, 2026-10-05 02:15 +1100"},
		{"Lord Howe fall-back 01:45 runs once", "Australia/Lord_Howe", "45 1 * * *", "",
			"2026-04-04 12:00", "2026-04-06 12:00",
			"2026-04-05 01:45 +1100, 2026-04-06 01:45 +1030"},
		{"advanced NY gap and rule union", "America/New_York", "",
			`{"rules":[{"times":["02:10","02:50"]},{"daysOfWeek":[0],"times":["03:00","02:50"]}]}`,
			"2026-03-08 00:00", "2026-03-08 23:59",
			"2026-03-08 03:00 -0400"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			loc := mustLoc(t, c.zone)
			spec := Spec{Type: "custom", Cron: c.cron, Timezone: c.zone}
			if c.adv != "" {
				spec = Spec{Type: "advanced", Advanced: json.RawMessage(c.adv), Timezone: c.zone}
			}
			s := mustParse(t, spec)
			got := s.Between(local(loc, c.from), local(loc, c.to))
			if g := fmtAll(got, loc); g != c.want {
				t.Fatalf("Between:\n got %s\nwant %s", g, c.want)
			}
			for _, x := range got {
				if x.Location() != time.UTC {
					t.Fatalf("%v not in UTC", x)
				}
			}
			if next := s.Next(local(loc, c.from), len(got)); !slices.Equal(next, got) {
				t.Fatalf("Next: %s", fmtAll(next, loc))
			}
		})
	}

	// From inside the repeated hour (01:10 EST, the second 01:10), the
	// 01:30 slot has already run (at 01:30 EDT) and the hourly 02:00 is
	// next.
	after := time.Date(2026, 11, 1, 6, 10, 0, 0, time.UTC) // 01:10 EST
	if got := mustParse(t, Spec{Type: "custom", Cron: "30 1 * * *", Timezone: "America/New_York"}).Next(after, 1); got[0].In(ny).Format("01-02 15:04 MST") != "11-02 01:30 EST" {
		t.Fatalf("after repeated 01:10: %v", got[0].In(ny))
	}
	if got := mustParse(t, Spec{Type: "hourly", Timezone: "America/New_York"}).Next(after, 1); got[0].In(ny).Format("01-02 15:04 MST") != "11-01 02:00 EST" {
		t.Fatalf("hourly after repeated 01:10: %v", got[0].In(ny))
	}
	// Strictly after: a firing instant is not its own next run.
	d := mustParse(t, Spec{Type: "daily", Timezone: "Australia/Lord_Howe"})
	first := d.Next(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC), 2)
	if again := d.Next(first[0], 1); !again[0].Equal(first[1]) {
		t.Fatalf("Next(first) = %v, want %v", again, first[1])
	}
	_ = lh
}

func TestPresetsAndManual(t *testing.T) {
	from := time.Date(2026, 1, 1, 0, 30, 0, 0, time.UTC) // Thursday
	cases := map[string]string{
		"hourly":  "2026-01-01T01:00:00Z 2026-01-01T02:00:00Z",
		"daily":   "2026-01-01T02:00:00Z 2026-01-02T02:00:00Z",
		"weekly":  "2026-01-04T02:00:00Z 2026-01-11T02:00:00Z",
		"monthly": "2026-01-01T02:00:00Z 2026-02-01T02:00:00Z",
	}
	for typ, want := range cases {
		var got []string
		for _, x := range mustParse(t, Spec{Type: typ}).Next(from, 2) {
			got = append(got, x.Format(time.RFC3339))
		}
		if strings.Join(got, " ") != want {
			t.Errorf("%s: %v, want %s", typ, got, want)
		}
	}
	m := mustParse(t, Spec{Type: "manual", Timezone: "Europe/Istanbul"})
	if !m.Manual() || m.Next(from, 5) != nil || m.Between(from, from.AddDate(1, 0, 0)) != nil {
		t.Fatal("manual schedule fires")
	}
	if mustParse(t, Spec{Type: "daily"}).Manual() {
		t.Fatal("daily is manual")
	}
	// Istanbul is UTC+3 all year: daily 02:00 is 23:00Z the day before.
	ist := mustParse(t, Spec{Type: "daily", Timezone: "Europe/Istanbul"}).Next(from, 1)
	if ist[0].Format(time.RFC3339) != "2026-01-01T23:00:00Z" {
		t.Fatalf("Istanbul daily: %v", ist)
	}
	// Sparse: Feb 29 on a Sunday ("*/7" keeps AND semantics) is 2032.
	feb := mustParse(t, Spec{Type: "custom", Cron: "0 0 29 2 */7"}).Next(from, 2)
	if feb[0].Format("2006-01-02") != "2032-02-29" || feb[1].Format("2006-01-02") != "2060-02-29" {
		t.Fatalf("Feb 29 on Sunday: %v", feb)
	}
	// Both day fields restricted: either matches (the 13th or Fridays).
	or := mustParse(t, Spec{Type: "custom", Cron: "0 0 13 * FRI"}).Next(from, 4)
	var days []string
	for _, x := range or {
		days = append(days, x.Format("01-02"))
	}
	if strings.Join(days, " ") != "01-02 01-09 01-13 01-16" {
		t.Fatalf("13th or Friday: %v", days)
	}
	// 7 is Sunday, as is SUN closing a range.
	for _, expr := range []string{"0 0 * * 7", "0 0 * * SAT-SUN", "0 0 * * 6-7"} {
		got := mustParse(t, Spec{Type: "custom", Cron: expr}).Next(from, 2)
		if got[0].Weekday() != time.Saturday && got[0].Weekday() != time.Sunday || got[1].Weekday() != time.Sunday {
			t.Fatalf("%s: %v", expr, got)
		}
	}
	// Advanced rules end: fewer results than asked.
	adv := mustParse(t, Spec{Type: "advanced", Advanced: json.RawMessage(`{"rules":[{"times":["10:00"],"startDate":"2026-01-01","endDate":"2026-01-03"}]}`)})
	if got := adv.Next(from, 10); len(got) != 3 {
		t.Fatalf("bounded rule: %v", got)
	}
	if got := adv.Next(from.AddDate(1, 0, 0), 1); len(got) != 0 {
		t.Fatalf("after the end: %v", got)
	}
	if got := adv.Between(from, from); got != nil {
		t.Fatalf("empty range: %v", got)
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		spec        Spec
		field, want string
	}{
		{Spec{Type: "yearly"}, "scheduleType", `"yearly": must be one of manual, hourly, daily, weekly, monthly, custom, advanced`},
		{Spec{}, "scheduleType", "must be one of manual, hourly, daily, weekly, monthly, custom, advanced"},
		{Spec{Type: "custom"}, "cronExpression", "is required when scheduleType is custom"},
		{Spec{Type: "custom", Cron: "61 * * * *"}, "cronExpression", "minute 61 out of range"},
		{Spec{Type: "custom", Cron: "0 24 * * *"}, "cronExpression", "hour 24 out of range"},
		{Spec{Type: "custom", Cron: "0 0 0 * *"}, "cronExpression", "day-of-month 0 out of range"},
		{Spec{Type: "custom", Cron: "0 0 * 13 *"}, "cronExpression", "month 13 out of range"},
		{Spec{Type: "custom", Cron: "0 0 * * 8"}, "cronExpression", "day-of-week 8 out of range"},
		{Spec{Type: "custom", Cron: "0 0 * * 1-9"}, "cronExpression", "day-of-week 9 out of range"},
		{Spec{Type: "custom", Cron: "*/0 * * * *"}, "cronExpression", "minute step 0 out of range (1-60)"},
		{Spec{Type: "custom", Cron: "*/x * * * *"}, "cronExpression", `minute step "x" is not a number`},
		{Spec{Type: "custom", Cron: "0 */25 * * *"}, "cronExpression", "hour step 25 out of range (1-24)"},
		{Spec{Type: "custom", Cron: "0 1/2/3 * * *"}, "cronExpression", `hour "1/2/3" has more than one step`},
		{Spec{Type: "custom", Cron: "0 0 * FOO *"}, "cronExpression", `month name "FOO" is unknown (use JAN-DEC or a number)`},
		{Spec{Type: "custom", Cron: "0 0 * * FUN"}, "cronExpression", `day-of-week name "FUN" is unknown (use SUN-SAT or a number)`},
		{Spec{Type: "custom", Cron: "0 MON * * *"}, "cronExpression", `hour "MON" is not a number`},
		{Spec{Type: "custom", Cron: "30-10 * * * *"}, "cronExpression", "minute range 30-10 goes backwards"},
		{Spec{Type: "custom", Cron: "1,,2 * * * *"}, "cronExpression", `minute "1,,2" has an empty list element`},
		{Spec{Type: "custom", Cron: "-5 * * * *"}, "cronExpression", `minute range "-5" is missing a number`},
		{Spec{Type: "custom", Cron: "0 0 * *"}, "cronExpression", "expected 5 fields (minute hour day-of-month month day-of-week), got 4"},
		{Spec{Type: "custom", Cron: "0 0 * * * 2026"}, "cronExpression", "expected 5 fields (minute hour day-of-month month day-of-week), got 6"},
		{Spec{Type: "custom", Cron: "@daily"}, "cronExpression", "expected 5 fields (minute hour day-of-month month day-of-week), got 1"},
		{Spec{Type: "custom", Cron: "0 0 L * *"}, "cronExpression", `day-of-month "L" is not a number`},
		{Spec{Type: "custom", Cron: "0 0 31 2,4 *"}, "cronExpression", `day-of-month "31" never occurs in month "2,4": the expression would never run`},
		{Spec{Type: "custom", Cron: "0 0 99999999999999999999 * *"}, "cronExpression", "day-of-month 99999999999999999999 out of range"},
		{Spec{Type: "daily", Timezone: "Mars/Olympus"}, "timezone", `"Mars/Olympus" is not an IANA time zone such as Europe/Istanbul or UTC`},
		{Spec{Type: "daily", Timezone: "Local"}, "timezone", `"Local" is not allowed: use an IANA time zone such as Europe/Istanbul or UTC`},
		{Spec{Type: "advanced"}, "advancedScheduleConfig", "is required when scheduleType is advanced"},
		{Spec{Type: "advanced", Advanced: json.RawMessage(`null`)}, "advancedScheduleConfig", "is required when scheduleType is advanced"},
		{Spec{Type: "advanced", Advanced: json.RawMessage(`{"rules":[]}`)}, "advancedScheduleConfig", "rules: at least one rule is required"},
		{Spec{Type: "advanced", Advanced: json.RawMessage(`{}`)}, "advancedScheduleConfig", "rules: at least one rule is required"},
		{Spec{Type: "advanced", Advanced: json.RawMessage(`{"rules":[{"times":["02:00"],"every":2}]}`)}, "advancedScheduleConfig", `unknown field "every"; allowed: rules[].daysOfWeek, times, exclusions, startDate, endDate`},
		{Spec{Type: "advanced", Advanced: json.RawMessage(`{"rule":[]}`)}, "advancedScheduleConfig", `unknown field "rule"; allowed: rules[].daysOfWeek, times, exclusions, startDate, endDate`},
		{Spec{Type: "advanced", Advanced: json.RawMessage(`{"rules":[{}]}`)}, "advancedScheduleConfig", "rules[0].times: at least one HH:MM time is required"},
		{Spec{Type: "advanced", Advanced: json.RawMessage(`{"rules":[{"times":["02:00","24:00"]}]}`)}, "advancedScheduleConfig", `rules[0].times[1]: "24:00" is not an HH:MM time (00:00 to 23:59)`},
		{Spec{Type: "advanced", Advanced: json.RawMessage(`{"rules":[{"times":["2:00"]}]}`)}, "advancedScheduleConfig", `rules[0].times[0]: "2:00" is not an HH:MM time (00:00 to 23:59)`},
		{Spec{Type: "advanced", Advanced: json.RawMessage(`{"rules":[{"times":["02:00"]},{"times":["03:00"],"daysOfWeek":[7]}]}`)}, "advancedScheduleConfig", "rules[1].daysOfWeek: 7 out of range (0 = Sunday to 6 = Saturday)"},
		{Spec{Type: "advanced", Advanced: json.RawMessage(`{"rules":[{"times":["02:00"],"daysOfWeek":[-1]}]}`)}, "advancedScheduleConfig", "rules[0].daysOfWeek: -1 out of range (0 = Sunday to 6 = Saturday)"},
		{Spec{Type: "advanced", Advanced: json.RawMessage(`{"rules":[{"times":["02:00"],"daysOfWeek":["MON"]}]}`)}, "advancedScheduleConfig", "rules.daysOfWeek: expected an integer, got JSON string"},
		{Spec{Type: "advanced", Advanced: json.RawMessage(`{"rules":[{"times":["02:00"],"exclusions":["2024-02-30"]}]}`)}, "advancedScheduleConfig", `rules[0].exclusions[0]: "2024-02-30" is not a YYYY-MM-DD date`},
		{Spec{Type: "advanced", Advanced: json.RawMessage(`{"rules":[{"times":["02:00"],"startDate":"2024-1-01"}]}`)}, "advancedScheduleConfig", `rules[0].startDate: "2024-1-01" is not a YYYY-MM-DD date`},
		{Spec{Type: "advanced", Advanced: json.RawMessage(`{"rules":[{"times":["02:00"],"endDate":"12/31/2024"}]}`)}, "advancedScheduleConfig", `rules[0].endDate: "12/31/2024" is not a YYYY-MM-DD date`},
		{Spec{Type: "advanced", Advanced: json.RawMessage(`{"rules":[{"times":["02:00"],"startDate":"2024-06-01","endDate":"2024-05-31"}]}`)}, "advancedScheduleConfig", "rules[0].endDate: 2024-05-31 is before startDate 2024-06-01"},
		{Spec{Type: "advanced", Advanced: json.RawMessage(`{"rules":[{"times":["02:00"]}]} {}`)}, "advancedScheduleConfig", "unexpected data after the JSON object"},
	}
	for _, c := range cases {
		_, err := Parse(c.spec)
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Errorf("%+v: error %v is not a *FieldError", c.spec, err)
			continue
		}
		if fe.Field != c.field || fe.Reason != c.want {
			t.Errorf("%+v:\n got %s\nwant %s: %s", c.spec, err, c.field, c.want)
		}
		if err.Error() != c.field+": "+c.want {
			t.Errorf("Error() = %q", err.Error())
		}
	}
	// Syntax errors point at the offending byte.
	_, err := Parse(Spec{Type: "advanced", Advanced: json.RawMessage(`{"rules":[{"times":["02:00"],}]}`)})
	if err == nil || !strings.HasPrefix(err.Error(), "advancedScheduleConfig: invalid JSON at byte ") {
		t.Errorf("syntax error: %v", err)
	}
}

func TestAccepts(t *testing.T) {
	for _, expr := range []string{
		"0 2 * * *", "*/5 * * * *", "0-59/15 0-23/6 1-31/10 JAN-DEC/3 SUN-SAT/2",
		"5/15 * * * *", "0 0 * * 0-7", "0 0 1,15 * mon-fri", "  0\t2 *  * * ", "0 0 31 * *", "0 0 29 2 *",
	} {
		if _, err := Parse(Spec{Type: "custom", Cron: expr}); err != nil {
			t.Errorf("%q: %v", expr, err)
		}
	}
	// Type decides: a stale cron or config on another type is ignored.
	if _, err := Parse(Spec{Type: "daily", Cron: "garbage", Advanced: json.RawMessage(`x`)}); err != nil {
		t.Error(err)
	}
	var lc LocationCache
	a, err := ParseWith(Spec{Type: "daily", Timezone: "Europe/Berlin"}, lc.Load)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ParseWith(Spec{Type: "hourly", Timezone: "Europe/Berlin"}, lc.Load)
	if a.Location() != b.Location() || a.Location().String() != "Europe/Berlin" {
		t.Fatal("LocationCache does not share zones")
	}
	if _, err := ParseWith(Spec{Type: "daily", Timezone: "Nowhere/Land"}, lc.Load); err == nil {
		t.Fatal("cache accepted a bad zone")
	}
}

func TestCivil(t *testing.T) {
	for day := int64(-800000); day < 800000; day += 13 {
		y, m, d := civilFromDays(day)
		want := time.Unix(day*86400, 0).UTC()
		if int(y) != want.Year() || time.Month(m) != want.Month() || d != want.Day() || daysFromCivil(y, m, d) != day {
			t.Fatalf("day %d: %d-%d-%d, want %s", day, y, m, d, want)
		}
		if c := newCal(day); c.weekday != int(want.Weekday()) {
			t.Fatalf("day %d weekday %d, want %v", day, c.weekday, want.Weekday())
		}
	}
}

// BenchmarkNext100kJobs computes the next run of 100,000 parsed
// schedules of mixed types and zones; ns/job is the figure that matters.
func BenchmarkNext100kJobs(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	var lc LocationCache
	zones := append(testZones, "Asia/Tokyo", "America/Los_Angeles", "Asia/Kolkata")
	jobs := make([]*Schedule, 0, 100_000)
	for len(jobs) < cap(jobs) {
		zone := zones[r.IntN(len(zones))]
		var spec Spec
		switch k := r.IntN(10); {
		case k < 4:
			spec = Spec{Type: []string{"hourly", "daily", "weekly", "monthly"}[r.IntN(4)]}
		case k < 7:
			g := randCron(r)
			if !g.possible() {
				continue
			}
			spec = Spec{Type: "custom", Cron: g.expr}
		case k < 9:
			spec = Spec{Type: "advanced", Advanced: randRules(r, 2026, mustLoc(b, zone)).json()}
		default:
			spec = Spec{Type: "manual"}
		}
		spec.Timezone = zone
		s, err := ParseWith(spec, lc.Load)
		if err != nil {
			b.Fatal(err)
		}
		jobs = append(jobs, s)
	}
	base := time.Date(2026, 3, 7, 12, 0, 0, 0, time.UTC)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		after := base.Add(time.Duration(i) * 37 * time.Minute)
		for _, s := range jobs {
			_ = s.Next(after, 1)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(jobs)), "ns/job")
}

func TestLongGapsAndConcurrency(t *testing.T) {
	// A rule far in the future after one that ended: found without
	// walking the years in between one by one (and correctly).
	s := mustParse(t, Spec{Type: "advanced", Timezone: "Europe/Berlin", Advanced: json.RawMessage(
		`{"rules":[{"times":["01:00"],"endDate":"2020-01-01"},{"times":["02:00"],"daysOfWeek":[3],"startDate":"9000-01-01"}]}`)})
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	got := s.Next(from, 2)
	first := time.Date(9000, 1, 1, 2, 0, 0, 0, s.Location())
	for first.Weekday() != time.Wednesday {
		first = first.AddDate(0, 0, 1)
	}
	if len(got) != 2 || !got[0].Equal(first) || got[1].Sub(got[0]) != 7*24*time.Hour {
		t.Fatalf("far rule: %v", got)
	}
	if got := s.Between(from, from.AddDate(100, 0, 0)); len(got) != 0 {
		t.Fatalf("between: %v", got)
	}
	if got := s.Next(time.Date(2019, 12, 31, 12, 0, 0, 0, time.UTC), 1); got[0].Format(time.RFC3339) != "2020-01-01T00:00:00Z" {
		t.Fatalf("last day of the ended rule: %v", got)
	}
	// Shared *Schedule, many goroutines (run with -race).
	h := mustParse(t, Spec{Type: "custom", Cron: "*/5 1-3 * * *", Timezone: "America/New_York"})
	want := h.Next(from, 500)
	done := make(chan []time.Time)
	for range 8 {
		go func() { done <- h.Next(from, 500) }()
	}
	for range 8 {
		if got := <-done; !slices.Equal(got, want) {
			t.Fatal("concurrent Next differs")
		}
	}
}

// Zones whose transitions are at midnight (Santiago), skip a whole day
// (Apia, 2011-12-30) or change by 45 minutes once (Kathmandu, 1986).
func TestExoticZones(t *testing.T) {
	windows := []struct {
		zone     string
		from, to string
	}{
		{"America/Santiago", "2026-03-25T00:00:00Z", "2026-04-25T00:00:00Z"},
		{"America/Santiago", "2026-08-25T00:00:00Z", "2026-09-25T00:00:00Z"},
		{"Pacific/Apia", "2011-12-15T00:00:00Z", "2012-01-15T00:00:00Z"},
		{"Asia/Kathmandu", "1985-12-20T00:00:00Z", "1986-01-10T00:00:00Z"},
	}
	r := rand.New(rand.NewPCG(11, 11))
	for _, win := range windows {
		loc := mustLoc(t, win.zone)
		from, _ := time.Parse(time.RFC3339, win.from)
		to, _ := time.Parse(time.RFC3339, win.to)
		w := newWindow(loc, from, to)
		for range 15 {
			g := randCron(r)
			if !g.possible() {
				continue
			}
			s := mustParse(t, Spec{Type: "custom", Cron: g.expr, Timezone: win.zone})
			checkAgainst(t, r, w, s, w.fire(g.dayMatch), "cron "+strconv.Quote(g.expr))
		}
		for range 15 {
			g := randRules(r, from.Year(), loc)
			s := mustParse(t, Spec{Type: "advanced", Advanced: g.json(), Timezone: win.zone})
			checkAgainst(t, r, w, s, w.fire(g.dayMatch), "rules "+string(g.json()))
		}
		s := mustParse(t, Spec{Type: "custom", Cron: "*/10 * * * *", Timezone: win.zone})
		checkAgainst(t, r, w, s, w.fire(genCronSets(t, "*/10 * * * *").dayMatch), "*/10")
	}
	// Apia skipped 2011-12-30: its 02:00 runs at the first instant after,
	// 2011-12-31 00:00 local, and the 31st's own 02:00 follows.
	apia := mustLoc(t, "Pacific/Apia")
	got := mustParse(t, Spec{Type: "daily", Timezone: "Pacific/Apia"}).Next(time.Date(2011, 12, 29, 12, 0, 0, 0, apia), 2)
	if got[0].In(apia).Format("01-02 15:04") != "12-31 00:00" || got[1].In(apia).Format("01-02 15:04") != "12-31 02:00" {
		t.Fatalf("Apia: %v", got)
	}
}
