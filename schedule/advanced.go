package schedule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// advancedJSON is the stored shape of advancedScheduleConfig (SPEC §2.6).
type advancedJSON struct {
	Rules []ruleJSON `json:"rules"`
}

type ruleJSON struct {
	DaysOfWeek []int    `json:"daysOfWeek"`
	Times      []string `json:"times"`
	Exclusions []string `json:"exclusions"`
	StartDate  string   `json:"startDate"`
	EndDate    string   `json:"endDate"`
}

// rule is one compiled advanced rule. Dates are days since 1970-01-01
// in the job's local calendar.
type rule struct {
	dows       uint8   // bit w: weekday w runs
	times      []int16 // minutes of the day, ascending, unique
	exclusions []int64 // ascending
	start, end int64   // inclusive
}

const (
	minDay = math.MinInt64 / 4
	maxDay = math.MaxInt64 / 4
)

func (r *rule) matchDay(day int64, weekday int) bool {
	if day < r.start || day > r.end || r.dows&(1<<weekday) == 0 {
		return false
	}
	_, excluded := slices.BinarySearch(r.exclusions, day)
	return !excluded
}

const advancedExample = `{"rules":[{"daysOfWeek":[1,2],"times":["02:00"],"exclusions":["2024-12-25"],"startDate":"2024-01-01","endDate":"2024-12-31"}]}`

// parseAdvanced validates and compiles advancedScheduleConfig. The
// error string is the reason only.
func parseAdvanced(raw json.RawMessage) ([]rule, string) {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return nil, "is required when scheduleType is advanced"
	}
	var cfg advancedJSON
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return nil, jsonReason(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, "unexpected data after the JSON object"
	}
	if len(cfg.Rules) == 0 {
		return nil, "rules: at least one rule is required"
	}
	rules := make([]rule, 0, len(cfg.Rules))
	for i, rj := range cfg.Rules {
		r := rule{start: minDay, end: maxDay}
		if len(rj.DaysOfWeek) == 0 {
			r.dows = 0x7f
		}
		for _, d := range rj.DaysOfWeek {
			if d < 0 || d > 6 {
				return nil, fmt.Sprintf("rules[%d].daysOfWeek: %d out of range (0 = Sunday to 6 = Saturday)", i, d)
			}
			r.dows |= 1 << d
		}
		if len(rj.Times) == 0 {
			return nil, fmt.Sprintf("rules[%d].times: at least one HH:MM time is required", i)
		}
		for j, t := range rj.Times {
			m, ok := parseHHMM(t)
			if !ok {
				return nil, fmt.Sprintf("rules[%d].times[%d]: %q is not an HH:MM time (00:00 to 23:59)", i, j, t)
			}
			r.times = append(r.times, m)
		}
		slices.Sort(r.times)
		r.times = slices.Compact(r.times)
		for j, d := range rj.Exclusions {
			day, ok := parseDate(d)
			if !ok {
				return nil, fmt.Sprintf("rules[%d].exclusions[%d]: %q is not a YYYY-MM-DD date", i, j, d)
			}
			r.exclusions = append(r.exclusions, day)
		}
		slices.Sort(r.exclusions)
		r.exclusions = slices.Compact(r.exclusions)
		if rj.StartDate != "" {
			day, ok := parseDate(rj.StartDate)
			if !ok {
				return nil, fmt.Sprintf("rules[%d].startDate: %q is not a YYYY-MM-DD date", i, rj.StartDate)
			}
			r.start = day
		}
		if rj.EndDate != "" {
			day, ok := parseDate(rj.EndDate)
			if !ok {
				return nil, fmt.Sprintf("rules[%d].endDate: %q is not a YYYY-MM-DD date", i, rj.EndDate)
			}
			r.end = day
		}
		if r.end < r.start {
			return nil, fmt.Sprintf("rules[%d].endDate: %s is before startDate %s", i, rj.EndDate, rj.StartDate)
		}
		rules = append(rules, r)
	}
	return rules, ""
}

// jsonReason turns a decoding error into a short reason.
func jsonReason(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "value"
		}
		return fmt.Sprintf("%s: expected %s, got JSON %s", field, jsonTypeName(te.Type.Kind().String()), te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("invalid JSON at byte %d: %s; expected %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "), advancedExample)
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if strings.HasPrefix(msg, "unknown field") {
		return msg + "; allowed: rules[].daysOfWeek, times, exclusions, startDate, endDate"
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return "truncated JSON; expected " + advancedExample
	}
	return msg + "; expected " + advancedExample
}

func jsonTypeName(kind string) string {
	switch kind {
	case "int", "int64":
		return "an integer"
	case "string":
		return "a string"
	case "slice":
		return "an array"
	case "struct":
		return "an object"
	}
	return kind
}

// parseHHMM parses exactly "HH:MM" (00:00 to 23:59) into minutes.
func parseHHMM(s string) (int16, bool) {
	if len(s) != 5 || s[2] != ':' || !allDigits(s[:2]) || !allDigits(s[3:]) {
		return 0, false
	}
	h := int(s[0]-'0')*10 + int(s[1]-'0')
	m := int(s[3]-'0')*10 + int(s[4]-'0')
	if h > 23 || m > 59 {
		return 0, false
	}
	return int16(h*60 + m), true
}

// parseDate parses exactly "YYYY-MM-DD" (a real calendar date) into
// days since 1970-01-01.
func parseDate(s string) (int64, bool) {
	if len(s) != 10 || s[4] != '-' || s[7] != '-' || !allDigits(s[:4]) || !allDigits(s[5:7]) || !allDigits(s[8:]) {
		return 0, false
	}
	y := int64(s[0]-'0')*1000 + int64(s[1]-'0')*100 + int64(s[2]-'0')*10 + int64(s[3]-'0')
	m := int(s[5]-'0')*10 + int(s[6]-'0')
	d := int(s[8]-'0')*10 + int(s[9]-'0')
	if y < 1 || m < 1 || m > 12 || d < 1 || d > daysInMonth(y, m) {
		return 0, false
	}
	return daysFromCivil(y, m, d), true
}
