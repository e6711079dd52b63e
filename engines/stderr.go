package engines

import (
	"bytes"
	"strings"
)

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
// "error:" line, else the last line.
func (s *StderrTail) Message() string {
	lines := strings.Split(strings.TrimSpace(s.buf.String()), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := lines[i]
		for _, marker := range []string{"ERROR:", "FATAL:", "error:"} {
			if idx := strings.Index(l, marker); idx >= 0 {
				return strings.TrimSpace(l[idx:])
			}
		}
	}
	return strings.TrimSpace(lines[len(lines)-1])
}
