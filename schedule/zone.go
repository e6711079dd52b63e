package schedule

import "time"

// Calendar arithmetic on days since 1970-01-01 (proleptic Gregorian),
// after Howard Hinnant's chrono-compatible algorithms.

func daysFromCivil(y int64, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := y
	if era < 0 {
		era -= 399
	}
	era /= 400
	yoe := y - era*400
	mp := int64(m + 9)
	if m > 2 {
		mp = int64(m - 3)
	}
	doy := (153*mp+2)/5 + int64(d) - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}

func civilFromDays(z int64) (y int64, m, d int) {
	z += 719468
	era := z
	if era < 0 {
		era -= 146096
	}
	era /= 146097
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y = yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d = int(doy - (153*mp+2)/5 + 1)
	if mp < 10 {
		m = int(mp + 3)
	} else {
		m = int(mp - 9)
	}
	if m <= 2 {
		y++
	}
	return y, m, d
}

func isLeap(y int64) bool { return y%4 == 0 && (y%100 != 0 || y%400 == 0) }

func daysInMonth(y int64, m int) int {
	if m == 2 && !isLeap(y) {
		return 28
	}
	return maxDaysIn[m]
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// cal walks the local calendar one day (or month) at a time.
type cal struct {
	day     int64 // days since 1970-01-01
	y       int64
	m, d    int
	weekday int // 0 = Sunday
}

func newCal(day int64) cal {
	y, m, d := civilFromDays(day)
	return cal{day: day, y: y, m: m, d: d, weekday: int((day%7 + 7 + 4) % 7)}
}

func (c *cal) next() {
	c.day++
	c.weekday++
	if c.weekday == 7 {
		c.weekday = 0
	}
	c.d++
	if c.d > daysInMonth(c.y, c.m) {
		c.d = 1
		c.m++
		if c.m > 12 {
			c.m = 1
			c.y++
		}
	}
}

// nextMonth moves to the first day of the next month.
func (c *cal) nextMonth() {
	n := daysInMonth(c.y, c.m) - c.d + 1
	c.day += int64(n)
	c.weekday = (c.weekday + n) % 7
	c.d = 1
	c.m++
	if c.m > 12 {
		c.m = 1
		c.y++
	}
}

const (
	minSec = -1 << 62
	maxSec = 1 << 62
)

// resolver maps local wall-clock seconds (seconds since 1970-01-01 00:00
// of the local calendar, as if it were UTC) to the instant a slot at
// that wall time runs: the first instant whose wall clock reaches it.
// For an ordinary time that is the time itself; for a repeated time
// (fall-back) its first occurrence; for a time skipped by a
// spring-forward gap, the end of the gap. It caches one zone period,
// so walking forward through a year costs a zone lookup or two.
type resolver struct {
	loc    *time.Location
	ok     bool
	lo, hi int64 // cached: wall in [lo, hi) runs at wall - off
	off    int64
}

func (r *resolver) instant(wall int64) int64 {
	if r.ok && wall >= r.lo && wall < r.hi {
		return wall - r.off
	}
	return r.slow(wall)
}

// period returns the zone period holding instant t: [start, end) and
// its UTC offset.
func (r *resolver) period(t int64) (start, end, off int64) {
	tt := time.Unix(t, 0).In(r.loc)
	_, o := tt.Zone()
	s, e := tt.ZoneBounds()
	start, end = minSec, maxSec
	if !s.IsZero() {
		start = s.Unix()
	}
	if !e.IsZero() {
		end = e.Unix()
	}
	return start, end, int64(o)
}

func (r *resolver) slow(wall int64) int64 {
	// UTC offsets stay within ±26 h, so the instants with this wall time
	// lie in [wall-26h, wall+26h]. Walk the zone periods from the start
	// of that window; the first whose wall clock passes wall holds the
	// answer.
	const margin = 26 * 3600
	t := wall - margin
	for range 64 {
		s, e, o := r.period(t)
		if e == maxSec || e+o > wall {
			hi := int64(maxSec)
			if e != maxSec {
				hi = e + o
			}
			if s != minSec && s+o > wall {
				// In a gap: runs when the clock jumps past it.
				r.ok, r.lo, r.hi, r.off = true, s+o, hi, o
				return s
			}
			r.ok, r.lo, r.hi, r.off = true, wall, hi, o
			return wall - o
		}
		if e <= t {
			break
		}
		t = e
	}
	_, o := time.Unix(wall, 0).In(r.loc).Zone()
	r.ok = false
	return wall - int64(o)
}
