package engines

import (
	"bytes"
	"regexp"
	"strings"
)

// stdinLine finds psql's "psql:<stdin>:123:" before its error.
var stdinLine = regexp.MustCompile(`:<stdin>:(\d+):`)

// StderrTail keeps the last bytes a tool wrote to stderr, for error
// messages. Write never fails.
type StderrTail struct{ buf bytes.Buffer }

const stderrKeep = 4 << 10

func (s *StderrTail) Write(p []byte) (int, error) {
	s.buf.Write(p)
	if s.buf.Len() > 2*stderrKeep {
		b := s.buf.Bytes()
		keep := append([]byte(nil), b[len(b)-stderrKeep:]...)
		s.buf.Reset()
		s.buf.Write(keep)
	}
	return len(p), nil
}

// Message is the tool's most useful error line: the last "ERROR:"/"FATAL:"/
// "error:" line, else the last line. The input line psql names before its
// error is kept: "ERROR: … (line 123 of the input)".
func (s *StderrTail) Message() string {
	lines := strings.Split(strings.TrimSpace(s.buf.String()), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := lines[i]
		for _, marker := range []string{"ERROR:", "FATAL:", "error:"} {
			if idx := strings.Index(l, marker); idx >= 0 {
				msg := strings.TrimSpace(l[idx:])
				if m := stdinLine.FindStringSubmatch(l[:idx]); m != nil {
					msg += " (line " + m[1] + " of the input)"
				}
				return msg
			}
		}
	}
	return strings.TrimSpace(lines[len(lines)-1])
}
