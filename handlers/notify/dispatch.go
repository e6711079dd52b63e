package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/notify"
	"github.com/rahatback/rahatback/secrets"
)

// DispatcherOpts configures NewDispatcher.
type DispatcherOpts struct {
	Pool    *pgxpool.Pool                     // required
	Secrets secrets.Box                       // required: opens channels' URLs and secrets
	Sender  notify.Sender                     // required (notify.Senders)
	Logger  *slog.Logger                      // default slog.Default()
	Metrics func(channelType, outcome string) // when set, counts each attempt: sent, retry, failed
	// MaxAttempts per delivery; default 6.
	MaxAttempts int
	// Backoff is the wait after failed attempt n (1-based); default 10 s
	// times 3^(n-1), at most 15 min: 10 s, 30 s, 1.5 min, 4.5 min, 13.5
	// min, so six attempts span about 20 minutes.
	Backoff func(attempt int) time.Duration
	// Parallel is how many channels are sent to at once; default 16.
	// Each channel's deliveries go one at a time, in order.
	Parallel int
	// Lease is how long a claimed delivery is held; a dispatcher that
	// died releases it then. Default 2 min (more than a send's timeouts).
	Lease time.Duration
	// Poll is the interval at which due deliveries are looked for
	// (besides Kick); default 1 s.
	Poll time.Duration
	Now  func() time.Time // default time.Now
}

// Dispatcher sends deliveries: at most one at a time per channel, many
// channels at once, so a channel that is slow or down delays only itself.
// A temporary failure is tried again after a backoff, up to MaxAttempts;
// then, or at a permanent failure, the delivery fails and its channel
// shows the error. Several dispatchers (replicas) share the table.
type Dispatcher struct {
	o    DispatcherOpts
	q    *db.Queries
	kick chan struct{}
	sem  chan struct{}
	wg   sync.WaitGroup
}

// NewDispatcher validates o.
func NewDispatcher(o DispatcherOpts) (*Dispatcher, error) {
	if o.Pool == nil || o.Sender == nil || o.Secrets.V == nil {
		return nil, errors.New("notify: Pool, Secrets and Sender are required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = 6
	}
	if o.Backoff == nil {
		o.Backoff = DefaultBackoff
	}
	if o.Parallel == 0 {
		o.Parallel = 16
	}
	if o.Lease == 0 {
		o.Lease = 2 * time.Minute
	}
	if o.Poll == 0 {
		o.Poll = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Dispatcher{o: o, q: db.New(), kick: make(chan struct{}, 1), sem: make(chan struct{}, o.Parallel)}, nil
}

// DefaultBackoff is DispatcherOpts.Backoff's default.
func DefaultBackoff(attempt int) time.Duration {
	d := 10 * time.Second
	for i := 1; i < attempt && d < 15*time.Minute; i++ {
		d *= 3
	}
	return min(d, 15*time.Minute)
}

// Kick makes the dispatcher look for due deliveries now.
func (d *Dispatcher) Kick() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Run sends deliveries until ctx ends, then waits for the sends under way.
func (d *Dispatcher) Run(ctx context.Context) error {
	t := time.NewTicker(d.o.Poll)
	defer t.Stop()
	defer d.wg.Wait()
	for {
		if _, err := d.Round(ctx); err != nil && ctx.Err() == nil {
			d.o.Logger.Warn("claiming notifications failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-d.kick:
		}
	}
}

// Round claims the due deliveries it has room for and starts sending them;
// it returns how many it started.
func (d *Dispatcher) Round(ctx context.Context) (int, error) {
	free := cap(d.sem) - len(d.sem)
	if free == 0 {
		return 0, nil
	}
	now := d.o.Now()
	rows, err := d.q.ClaimDeliveries(ctx, d.o.Pool, db.ClaimDeliveriesParams{Now: now, LeaseUntil: now.Add(d.o.Lease), Max: int32(free)})
	if err != nil {
		return 0, err
	}
	for _, r := range rows {
		d.sem <- struct{}{}
		d.wg.Add(1)
		go func() {
			defer func() { <-d.sem; d.wg.Done(); d.Kick() }()
			// A send under way finishes even while shutting down: its
			// result must be recorded, or it would be sent again.
			d.deliver(context.WithoutCancel(ctx), r)
		}()
	}
	return len(rows), nil
}

func (d *Dispatcher) deliver(ctx context.Context, r db.NotificationDelivery) {
	log := d.o.Logger.With("delivery", r.ID, "channel", r.ChannelID, "event", r.EventKey, "attempt", r.Attempts)
	ch, err := d.q.GetNotificationChannelByID(ctx, d.o.Pool, r.ChannelID)
	if err != nil {
		if errors.Is(db.MapErr(err), db.ErrNotFound) {
			return // deleted with its deliveries
		}
		log.Warn("loading a channel failed", "err", err)
		d.retry(ctx, r, "", err)
		return
	}
	var nt notify.Notification
	if err := json.Unmarshal(r.Payload, &nt); err != nil {
		d.fail(ctx, r, ch.Type, err)
		return
	}
	c, err := OpenChannel(d.o.Secrets, ch)
	if err != nil {
		d.fail(ctx, r, ch.Type, err)
		return
	}
	if !ch.Enabled {
		d.fail(ctx, r, ch.Type, errors.New("the channel was disabled"))
		return
	}
	err = d.o.Sender.Send(ctx, c, nt, strconv.FormatInt(r.ID, 10))
	switch {
	case err == nil:
		at := d.o.Now()
		if err := d.q.DeliverySent(ctx, d.o.Pool, db.DeliverySentParams{ID: r.ID, At: &at}); err != nil {
			log.Warn("recording a sent notification failed", "err", err)
		}
		if err := d.q.ChannelDelivered(ctx, d.o.Pool, db.ChannelDeliveredParams{ID: ch.ID, At: &at}); err != nil {
			log.Warn("recording a channel's success failed", "err", err)
		}
		d.count(ch.Type, "sent")
	case notify.IsPermanent(err) || int(r.Attempts) >= d.o.MaxAttempts:
		log.Warn("notification not delivered; giving up", "err", err)
		d.fail(ctx, r, ch.Type, err)
	default:
		log.Info("notification not delivered; will retry", "err", err)
		d.retry(ctx, r, ch.Type, err)
	}
}

func (d *Dispatcher) retry(ctx context.Context, r db.NotificationDelivery, typ string, cause error) {
	msg := cause.Error()
	at := d.o.Now().Add(d.o.Backoff(int(r.Attempts)))
	if err := d.q.DeliveryRetry(ctx, d.o.Pool, db.DeliveryRetryParams{ID: r.ID, RetryAt: at, Error: &msg}); err != nil {
		d.o.Logger.Warn("recording a retry failed", "delivery", r.ID, "err", err)
	}
	d.count(typ, "retry")
}

func (d *Dispatcher) fail(ctx context.Context, r db.NotificationDelivery, typ string, cause error) {
	msg := fmt.Sprintf("%s (after %d attempts)", cause.Error(), r.Attempts)
	if notify.IsPermanent(cause) && r.Attempts == 1 {
		msg = cause.Error()
	}
	at := d.o.Now()
	if err := d.q.DeliveryFailed(ctx, d.o.Pool, db.DeliveryFailedParams{ID: r.ID, Error: &msg}); err != nil {
		d.o.Logger.Warn("recording a failed delivery failed", "delivery", r.ID, "err", err)
	}
	if err := d.q.ChannelFailed(ctx, d.o.Pool, db.ChannelFailedParams{ID: r.ChannelID, Error: &msg, At: &at}); err != nil {
		d.o.Logger.Warn("recording a channel's failure failed", "channel", r.ChannelID, "err", err)
	}
	d.count(typ, "failed")
}

func (d *Dispatcher) count(typ, outcome string) {
	if d.o.Metrics != nil && typ != "" {
		d.o.Metrics(typ, outcome)
	}
}

// OpenChannel is a stored channel with its secrets opened.
func OpenChannel(box secrets.Box, ch db.NotificationChannel) (notify.Channel, error) {
	c := notify.Channel{ID: ch.ID.String(), Type: ch.Type, Name: ch.Name}
	if ch.Address != nil {
		c.Address = *ch.Address
	}
	var err error
	if c.URL, err = box.ChannelURL(ch); err != nil {
		return c, notify.Permanent(fmt.Errorf("opening the channel's URL: %w", err))
	}
	if c.Secret, err = box.ChannelSecret(ch); err != nil {
		return c, notify.Permanent(fmt.Errorf("opening the channel's secret: %w", err))
	}
	return c, nil
}
