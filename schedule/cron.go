package schedule

import (
	"fmt"
	"strconv"
	"strings"
)

// cronField describes one of the five cron fields.
type cronField struct {
	name     string
	min, max int
	names    []string // names[i] is the value min+i ... see lookupName
}

var monthNames = []string{"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"}
var dayNames = []string{"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}

var cronFields = [5]cronField{
	{name: "minute", min: 0, max: 59},
	{name: "hour", min: 0, max: 23},
	{name: "day-of-month", min: 1, max: 31},
	{name: "month", min: 1, max: 12, names: monthNames},
	{name: "day-of-week", min: 0, max: 7, names: dayNames},
}

// cronSpec is a parsed 5-field cron expression.
type cronSpec struct {
	minutes uint64 // bit m: minute m
	hours   uint32 // bit h: hour h
	doms    uint32 // bit d: day of month d (1-31)
	months  uint16 // bit m: month m (1-12)
	dows    uint8  // bit w: weekday w (0 = Sunday; 7 folded into 0)
	// domStar/dowStar: the field starts with '*' (crontab(5): a field
	// that does not start with '*' is "restricted"; when both day fields
	// are restricted a day matches if either matches).
	domStar, dowStar bool
	slots            []int16 // minutes of the day that fire, ascending
}

// maxDaysIn is the largest day of each month (February counted as 29).
var maxDaysIn = [13]int{0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}

// parseCron parses a 5-field cron expression. The error string is the
// reason only (no field prefix).
func parseCron(expr string) (*cronSpec, string) {
	parts := strings.Fields(expr)
	if len(parts) != 5 {
		if len(parts) == 0 {
			return nil, "is required when scheduleType is custom"
		}
		return nil, fmt.Sprintf("expected 5 fields (minute hour day-of-month month day-of-week), got %d", len(parts))
	}
	var masks [5]uint64
	for i, p := range parts {
		m, err := parseField(&cronFields[i], p)
		if err != "" {
			return nil, err
		}
		masks[i] = m
	}
	c := &cronSpec{
		minutes: masks[0],
		hours:   uint32(masks[1]),
		doms:    uint32(masks[2]),
		months:  uint16(masks[3]),
		domStar: strings.HasPrefix(parts[2], "*"),
		dowStar: strings.HasPrefix(parts[4], "*"),
	}
	dows := masks[4]
	if dows&(1<<7) != 0 {
		dows |= 1
	}
	c.dows = uint8(dows & 0x7f)

	// A day can match at all? With OR semantics every week has a
	// matching weekday; with AND semantics some month must have a
	// matching day of month (the weekday eventually lines up).
	if c.domStar || c.dowStar {
		ok := false
		for m := 1; m <= 12 && !ok; m++ {
			if c.months&(1<<m) != 0 && c.doms&uint32(uint64(1)<<(maxDaysIn[m]+1)-2) != 0 {
				ok = true
			}
		}
		if !ok {
			return nil, fmt.Sprintf("day-of-month %q never occurs in month %q: the expression would never run", parts[2], parts[3])
		}
	}
	for h := 0; h < 24; h++ {
		if c.hours&(1<<h) == 0 {
			continue
		}
		for m := 0; m < 60; m++ {
			if c.minutes&(1<<m) != 0 {
				c.slots = append(c.slots, int16(h*60+m))
			}
		}
	}
	return c, ""
}

// matchDay reports whether the cron expression runs on a date.
func (c *cronSpec) matchDay(month, day, weekday int) bool {
	if c.months&(1<<month) == 0 {
		return false
	}
	dom := c.doms&(1<<day) != 0
	dow := c.dows&(1<<weekday) != 0
	if c.domStar || c.dowStar {
		return dom && dow
	}
	return dom || dow
}

// parseField parses one field into a bit mask of its values.
func parseField(f *cronField, s string) (uint64, string) {
	var mask uint64
	for _, item := range strings.Split(s, ",") {
		if item == "" {
			return 0, fmt.Sprintf("%s %q has an empty list element", f.name, s)
		}
		m, err := parseItem(f, item)
		if err != "" {
			return 0, err
		}
		mask |= m
	}
	return mask, ""
}

// parseItem parses "*", "*/n", "a", "a-b", "a-b/n" or "a/n" (a to the
// field's maximum, every n).
func parseItem(f *cronField, item string) (uint64, string) {
	rng, stepStr, hasStep := strings.Cut(item, "/")
	step := 1
	if hasStep {
		if strings.Contains(stepStr, "/") {
			return 0, fmt.Sprintf("%s %q has more than one step", f.name, item)
		}
		if stepStr == "" || !allDigits(stepStr) {
			return 0, fmt.Sprintf("%s step %q is not a number", f.name, stepStr)
		}
		n, err := strconv.Atoi(stepStr)
		span := f.max - f.min + 1
		if f.name == "day-of-week" {
			span = 7
		}
		if err != nil || n < 1 || n > span {
			return 0, fmt.Sprintf("%s step %s out of range (1-%d)", f.name, stepStr, span)
		}
		step = n
	}
	var lo, hi int
	switch {
	case rng == "*":
		lo, hi = f.min, f.max
		if f.name == "day-of-week" {
			hi = 6
		}
	case rng == "":
		return 0, fmt.Sprintf("%s %q is missing a value before the step", f.name, item)
	default:
		a, b, isRange := strings.Cut(rng, "-")
		var err string
		if lo, err = parseValue(f, a, rng); err != "" {
			return 0, err
		}
		switch {
		case isRange:
			if hi, err = parseValue(f, b, rng); err != "" {
				return 0, err
			}
			if f.name == "day-of-week" && hi == 0 && lo > 0 {
				hi = 7 // SAT-SUN, 5-0: Sunday closes the week
			}
			if hi < lo {
				return 0, fmt.Sprintf("%s range %s-%s goes backwards", f.name, a, b)
			}
		case hasStep:
			// "a/n": from a to the maximum, every n; the week ends on
			// Saturday as for "*" (7/n is Sunday alone).
			hi = f.max
			if f.name == "day-of-week" && lo < 7 {
				hi = 6
			}
		default:
			hi = lo
		}
	}
	var mask uint64
	for v := lo; v <= hi; v += step {
		mask |= 1 << v
	}
	return mask, ""
}

// parseValue parses a number or, for month and day-of-week, a name.
func parseValue(f *cronField, s, item string) (int, string) {
	if s == "" {
		return 0, fmt.Sprintf("%s range %q is missing a number", f.name, item)
	}
	if allDigits(s) {
		n, err := strconv.Atoi(s)
		if err != nil || n < f.min || n > f.max {
			return 0, fmt.Sprintf("%s %s out of range", f.name, s)
		}
		return n, ""
	}
	if f.names == nil {
		return 0, fmt.Sprintf("%s %q is not a number", f.name, s)
	}
	up := strings.ToUpper(s)
	for i, n := range f.names {
		if up == n {
			if f.name == "month" {
				return i + 1, ""
			}
			return i, ""
		}
	}
	return 0, fmt.Sprintf("%s name %q is unknown (use %s-%s or a number)", f.name, s, f.names[0], f.names[len(f.names)-1])
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
