package blobendpoint

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// leaseState is one of Azure's five lease states.
type leaseState int

const (
	leaseAvailable leaseState = iota
	leaseLeased
	leaseExpired
	leaseBreaking
	leaseBroken
)

var leaseStateNames = [...]string{"available", "leased", "expired", "breaking", "broken"}

// lease is one blob's lease; the zero value is "available". Leases live in
// the Server's memory only.
type lease struct {
	state    leaseState
	id       string
	infinite bool
	duration time.Duration // of a fixed lease
	expires  time.Time     // when a fixed lease ends
	breakAt  time.Time     // when a breaking lease becomes broken
}

// settle moves the lease along the clock: a fixed lease past its end is
// expired, a breaking lease past its break time is broken.
func (l *lease) settle(now time.Time) {
	switch {
	case l.state == leaseLeased && !l.infinite && !now.Before(l.expires):
		l.state = leaseExpired
	case l.state == leaseBreaking && !now.Before(l.breakAt):
		l.state = leaseBroken
	}
}

// locked is the lease status: writes need its id.
func (l *lease) locked() bool { return l.state == leaseLeased || l.state == leaseBreaking }

func (l *lease) matches(id string) bool { return strings.EqualFold(id, l.id) }

// checkWrite applies the lease to a write or a delete carrying lease id
// given ("" = none).
func (l *lease) checkWrite(given string) error {
	switch {
	case l.locked() && given == "":
		return &azError{http.StatusPreconditionFailed, "LeaseIdMissing",
			"There is currently a lease on the blob and no lease ID was specified in the request."}
	case l.locked() && !l.matches(given):
		return &azError{http.StatusPreconditionFailed, "LeaseIdMismatchWithBlobOperation",
			"The lease ID specified did not match the lease ID for the blob."}
	case l.locked() || given == "":
		return nil
	case l.state == leaseAvailable:
		return &azError{http.StatusPreconditionFailed, "LeaseNotPresentWithBlobOperation",
			"There is currently no lease on the blob."}
	default:
		return &azError{http.StatusPreconditionFailed, "LeaseLost",
			"A lease ID was specified, but the lease for the blob has expired."}
	}
}

// checkRead applies the lease to a read: only a lease id given must match.
func (l *lease) checkRead(given string) error {
	if given == "" {
		return nil
	}
	return l.checkWrite(given)
}

// headers sets x-ms-lease-status, -state and (while leased) -duration.
func (l *lease) headers(h http.Header) {
	status := "unlocked"
	if l.locked() {
		status = "locked"
	}
	h.Set("x-ms-lease-status", status)
	h.Set("x-ms-lease-state", leaseStateNames[l.state])
	if l.state == leaseLeased {
		d := "fixed"
		if l.infinite {
			d = "infinite"
		}
		h.Set("x-ms-lease-duration", d)
	}
}

func leaseOpError(code, message string) *azError {
	return &azError{http.StatusConflict, code, message}
}

var (
	errLeaseNotPresent = leaseOpError("LeaseNotPresentWithLeaseOperation", "There is currently no lease on the blob.")
	errLeaseMismatch   = leaseOpError("LeaseIdMismatchWithLeaseOperation", "The lease ID specified did not match the lease ID for the blob.")
)

// leaseBlob is Lease Blob (PUT ?comp=lease). The blob must exist (else
// 404 BlobNotFound); lease ids must be GUIDs (else 400 InvalidHeaderValue);
// conflicts are 409 with Azure's Lease… codes. Two leniencies: a missing
// x-ms-lease-duration on acquire means an infinite lease (Azure requires
// the header; SQL Server's requests have not been seen here), and an
// expired lease renews even if the blob was written since.
func (s *Server) leaseBlob(w http.ResponseWriter, r *http.Request, name string) error {
	src, err := s.store.Open(r.Context(), name)
	if err != nil {
		return notFound(err)
	}
	info := infoOf(src)
	action := strings.ToLower(r.Header.Get("x-ms-lease-action"))
	id := r.Header.Get("x-ms-lease-id")
	proposed := r.Header.Get("x-ms-proposed-lease-id")
	for h, v := range map[string]string{"x-ms-lease-id": id, "x-ms-proposed-lease-id": proposed} {
		if v != "" {
			if _, err := uuid.Parse(v); err != nil {
				return errHeader(http.StatusBadRequest, "InvalidHeaderValue", h)
			}
		}
	}
	if action == "" {
		return errHeader(http.StatusBadRequest, "MissingRequiredHeader", "x-ms-lease-action")
	}
	if id == "" && (action == "renew" || action == "change" || action == "release") {
		return errHeader(http.StatusBadRequest, "MissingRequiredHeader", "x-ms-lease-id")
	}

	b := s.blob(name, true)
	b.mu.Lock()
	defer b.mu.Unlock()
	now := s.now()
	l := &b.lease
	l.settle(now)
	status := http.StatusOK
	switch action {
	case "acquire":
		infinite, d, err := leaseDuration(r.Header.Get("x-ms-lease-duration"))
		if err != nil {
			return err
		}
		switch {
		case l.state == leaseBreaking:
			return leaseOpError("LeaseIsBreakingAndCannotBeAcquired", "There is already a lease present, and it is being broken.")
		case l.state == leaseLeased && (proposed == "" || !l.matches(proposed)):
			return leaseOpError("LeaseAlreadyPresent", "There is already a lease present.")
		case l.state != leaseLeased:
			if proposed == "" {
				proposed = uuid.NewString()
			}
			l.id = proposed
		}
		l.state, l.infinite, l.duration, l.expires = leaseLeased, infinite, d, now.Add(d)
		status = http.StatusCreated
	case "renew":
		switch {
		case l.state == leaseAvailable:
			return errLeaseNotPresent
		case !l.matches(id):
			return errLeaseMismatch
		case l.state == leaseBreaking:
			return leaseOpError("LeaseIsBreakingAndCannotBeRenewed", "The lease ID matched, but the lease is currently in breaking state and cannot be renewed.")
		case l.state == leaseBroken:
			return leaseOpError("LeaseIsBrokenAndCannotBeRenewed", "The lease ID matched, but the lease has been broken explicitly and cannot be renewed.")
		}
		l.state, l.expires = leaseLeased, now.Add(l.duration)
	case "change":
		if proposed == "" {
			return errHeader(http.StatusBadRequest, "MissingRequiredHeader", "x-ms-proposed-lease-id")
		}
		switch {
		case l.state == leaseBreaking:
			return leaseOpError("LeaseIsBreakingAndCannotBeChanged", "The lease ID matched, but the lease is currently in breaking state and cannot be changed.")
		case l.state != leaseLeased:
			return errLeaseNotPresent
		case !l.matches(id) && !l.matches(proposed):
			return errLeaseMismatch
		}
		l.id = proposed
	case "release":
		switch {
		case l.state == leaseAvailable:
			return errLeaseNotPresent
		case !l.matches(id):
			return errLeaseMismatch
		}
		*l = lease{}
	case "break":
		period := -1
		if v := r.Header.Get("x-ms-lease-break-period"); v != "" {
			p, err := strconv.Atoi(v)
			if err != nil || p < 0 || p > 60 {
				return errHeader(http.StatusBadRequest, "InvalidHeaderValue", "x-ms-lease-break-period")
			}
			period = p
		}
		switch l.state {
		case leaseAvailable, leaseExpired:
			return errLeaseNotPresent
		case leaseLeased:
			remaining := time.Duration(0)
			if !l.infinite {
				remaining = l.expires.Sub(now)
			}
			at := now.Add(remaining)
			if p := time.Duration(period) * time.Second; period >= 0 && (l.infinite || p < remaining) {
				at = now.Add(p)
			}
			l.state, l.breakAt = leaseBreaking, at
		case leaseBreaking:
			if p := now.Add(time.Duration(period) * time.Second); period >= 0 && p.Before(l.breakAt) {
				l.breakAt = p
			}
		}
		l.settle(now)
		left := 0
		if l.state == leaseBreaking {
			left = int(math.Ceil(l.breakAt.Sub(now).Seconds()))
		}
		w.Header().Set("x-ms-lease-time", strconv.Itoa(left))
		status = http.StatusAccepted
	default:
		return errHeader(http.StatusBadRequest, "InvalidHeaderValue", "x-ms-lease-action")
	}
	h := w.Header()
	if action != "release" && action != "break" {
		h.Set("x-ms-lease-id", l.id)
	}
	setVersionHeaders(h, info)
	w.WriteHeader(status)
	return nil
}

// leaseDuration parses x-ms-lease-duration: -1 (or absent) is infinite,
// 15 to 60 is that many seconds.
func leaseDuration(v string) (infinite bool, d time.Duration, err error) {
	if v == "" || v == "-1" {
		return true, 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 15 || n > 60 {
		return false, 0, errHeader(http.StatusBadRequest, "InvalidHeaderValue", "x-ms-lease-duration")
	}
	return false, time.Duration(n) * time.Second, nil
}

// notFound turns a Store's ErrNotFound into 404 BlobNotFound and passes
// other errors on.
func notFound(err error) error {
	if errors.Is(err, ErrNotFound) {
		return errBlobNotFound()
	}
	return err
}
