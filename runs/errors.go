package runs

import "fmt"

// Failure is the kind of reason a run cannot go as asked; the API answers
// each with its own HTTP status.
type Failure int

// Failures.
const (
	// NotFound: something the run needs is not the user's, or is gone.
	NotFound Failure = iota + 1
	// Conflict: the state of what the run reads forbids it now.
	Conflict
	// Unavailable: the agent it needs is offline or revoked.
	Unavailable
	// Timeout: the agent it needs did not answer in time.
	Timeout
	// Refused: the storage or the agent refused.
	Refused
	// Busy: the agent already has too many commands waiting.
	Busy
	// Invalid: the request names something the run cannot use (Field says
	// which part).
	Invalid
)

// Error is a run that cannot go as asked, with the reason a user reads
// (never a secret) and, for NotFound, the request field that named it.
type Error struct {
	Failure Failure
	Field   string
	Msg     string
}

func (e *Error) Error() string { return e.Msg }

func fail(f Failure, format string, args ...any) *Error {
	return &Error{Failure: f, Msg: fmt.Sprintf(format, args...)}
}

// notFound is NotFound for what, named by the request's field (may be "").
func notFound(what, field string) *Error {
	return &Error{Failure: NotFound, Field: field, Msg: what + " not found"}
}
