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
	// Backoff is the wait after failed attempt n (1-based); default
	// DefaultBackoff.
	Backoff func(attempt int) time.Duration
	// Parallel is how many webhook, Slack and Discord channels are sent to
	// at once; default 16. ParallelEmail is the same for email channels
	// (one SMTP server for all); default 4. The two pools are apart, so a
	// mail server that hangs delays no webhook, and the reverse. Each
	// channel's deliveries go one at a time, in order.
	Parallel, ParallelEmail int
	// Lease is how long a claimed delivery is held; a dispatcher that
	// died releases it then. Default 2 min (more than a send's timeouts).
	Lease time.Duration
	// Poll is the interval at which due deliveries are looked for
	// (besides Kick); default 1 s.
	Poll time.Duration
	// KeepFor is how long sent and failed deliveries are kept; default 30 days.
	KeepFor time.Duration
}

// Dispatcher sends deliveries: at most one at a time per channel, many
// channels at once, so a channel that is slow or down delays only itself.
// A temporary failure is tried again after a backoff, up to MaxAttempts;
// then, or at a permanent failure, the delivery fails and its channel
// shows the error. Several dispatchers (replicas) share the table; times
// are the database's.
type Dispatcher struct {
	o     DispatcherOpts
	q     *db.Queries
	kick  chan struct{}
	pools []pool
	wg    sync.WaitGroup
}

// pool is the send slots of some channel types.
type pool struct {
	types []string
	sem   chan struct{}
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
	if o.ParallelEmail == 0 {
		o.ParallelEmail = 4
	}
	if o.Lease == 0 {
		o.Lease = 2 * time.Minute
	}
	if o.Poll == 0 {
		o.Poll = time.Second
	}
	if o.KeepFor == 0 {
		o.KeepFor = 30 * 24 * time.Hour
	}
	return &Dispatcher{o: o, q: db.New(), kick: make(chan struct{}, 1), pools: []pool{
		{types: []string{notify.TypeEmail}, sem: make(chan struct{}, o.ParallelEmail)},
		{types: []string{notify.TypeWebhook, notify.TypeSlack, notify.TypeDiscord}, sem: make(chan struct{}, o.Parallel)},
	}}, nil
}

// DefaultBackoff is DispatcherOpts.Backoff's default: 10 s times
// 3^(n-1), at most 15 min: 10 s, 30 s, 1.5 min, 4.5 min, 13.5 min, so six
// attempts span about 20 minutes.
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

// bookkeeping is the context of the dispatcher's own writes: they outlive
// a shutdown (a send's result must be recorded, or it would be sent
// again) but not a database that stopped answering.
func bookkeeping(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
}

// Run sends deliveries until ctx ends, then waits for the sends under way.
func (d *Dispatcher) Run(ctx context.Context) error {
	t := time.NewTicker(d.o.Poll)
	defer t.Stop()
	defer d.wg.Wait()
	var pruned time.Time
	for {
		if _, err := d.Round(ctx); err != nil && ctx.Err() == nil {
			d.o.Logger.Warn("claiming notifications failed", "err", err)
		}
		if time.Since(pruned) > time.Hour {
			pruned = time.Now()
			if _, err := d.q.PruneDeliveries(ctx, d.o.Pool, d.o.KeepFor.Seconds()); err != nil && ctx.Err() == nil {
				d.o.Logger.Warn("pruning old deliveries failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-d.kick:
		}
	}
}

// Round claims the due deliveries each pool has room for and starts
// sending them; it returns how many it started.
func (d *Dispatcher) Round(ctx context.Context) (int, error) {
	started := 0
	for _, p := range d.pools {
		free := cap(p.sem) - len(p.sem)
		if free == 0 {
			continue
		}
		// A claim is written whole or not at all: it does not die with ctx
		// halfway (rows held but never seen would wait for their lease).
		cctx, cancel := bookkeeping(ctx)
		rows, err := d.q.ClaimDeliveries(cctx, d.o.Pool, db.ClaimDeliveriesParams{Types: p.types, Max: int32(free),
			LeaseSecs: d.o.Lease.Seconds()})
		cancel()
		if err != nil {
			return started, err
		}
		for _, r := range rows {
			p.sem <- struct{}{}
			d.wg.Add(1)
			go func() {
				defer func() { <-p.sem; d.wg.Done(); d.Kick() }()
				d.deliver(ctx, r)
			}()
		}
		started += len(rows)
	}
	return started, nil
}

func (d *Dispatcher) deliver(ctx context.Context, r db.NotificationDelivery) {
	log := d.o.Logger.With("delivery", r.ID, "channel", r.ChannelID, "event", r.EventKey, "attempt", r.Attempts)
	bctx, cancel := bookkeeping(ctx)
	defer cancel()
	ch, err := d.q.GetNotificationChannelByID(bctx, d.o.Pool, r.ChannelID)
	if err != nil {
		if errors.Is(db.MapErr(err), db.ErrNotFound) {
			return // deleted with its deliveries
		}
		log.Warn("loading a channel failed", "err", err)
		d.retry(bctx, r, "", err)
		return
	}
	if !ch.Enabled {
		// Disabled by its user since: dropped, not a failure of the channel.
		if _, err := d.q.DeliveryFailed(bctx, d.o.Pool, db.DeliveryFailedParams{ID: r.ID, Attempt: r.Attempts,
			Error: ptr("the channel was disabled before it was sent")}); err != nil {
			log.Warn("recording a dropped delivery failed", "err", err)
		}
		return
	}
	var nt notify.Notification
	if err := json.Unmarshal(r.Payload, &nt); err != nil {
		d.fail(bctx, r, ch.Type, err)
		return
	}
	c, err := OpenChannel(d.o.Secrets, ch)
	if err != nil {
		d.fail(bctx, r, ch.Type, err)
		return
	}
	// The send itself ends with its own timeout, even while shutting down.
	err = d.o.Sender.Send(context.WithoutCancel(ctx), c, nt, strconv.FormatInt(r.ID, 10))
	switch {
	case err == nil:
		d.sent(ctx, log, r, ch)
	case notify.IsPermanent(err) || int(r.Attempts) >= d.o.MaxAttempts:
		log.Warn("notification not delivered; giving up", "err", err)
		d.fail(bctx, r, ch.Type, err)
	default:
		log.Info("notification not delivered; will retry", "err", err)
		d.retry(bctx, r, ch.Type, err)
	}
}

// sent records a delivery that went out. It insists (a record lost to a
// database blip would send the notification again when the lease ends).
func (d *Dispatcher) sent(ctx context.Context, log *slog.Logger, r db.NotificationDelivery, ch db.NotificationChannel) {
	for try := 0; ; try++ {
		bctx, cancel := bookkeeping(ctx)
		n, err := d.q.DeliverySent(bctx, d.o.Pool, db.DeliverySentParams{ID: r.ID, Attempt: r.Attempts})
		if err == nil {
			if n == 1 {
				if err := d.q.ChannelDelivered(bctx, d.o.Pool, db.ChannelDeliveredParams{ID: ch.ID, At: ptr(time.Now())}); err != nil {
					log.Warn("recording a channel's success failed", "err", err)
				}
			}
			cancel()
			d.count(ch.Type, "sent")
			return
		}
		cancel()
		if try == 5 || errors.Is(err, context.Canceled) {
			log.Error("recording a sent notification failed; it may be sent again when its lease ends", "err", err)
			return
		}
		time.Sleep(time.Duration(try+1) * time.Second)
	}
}

func (d *Dispatcher) retry(ctx context.Context, r db.NotificationDelivery, typ string, cause error) {
	msg := cause.Error()
	if _, err := d.q.DeliveryRetry(ctx, d.o.Pool, db.DeliveryRetryParams{ID: r.ID, Attempt: r.Attempts,
		DelaySecs: d.o.Backoff(int(r.Attempts)).Seconds(), Error: &msg}); err != nil {
		d.o.Logger.Warn("recording a retry failed", "delivery", r.ID, "err", err)
	}
	d.count(typ, "retry")
}

func (d *Dispatcher) fail(ctx context.Context, r db.NotificationDelivery, typ string, cause error) {
	msg := fmt.Sprintf("%s (after %d attempts)", cause.Error(), r.Attempts)
	if notify.IsPermanent(cause) && r.Attempts == 1 {
		msg = cause.Error()
	}
	n, err := d.q.DeliveryFailed(ctx, d.o.Pool, db.DeliveryFailedParams{ID: r.ID, Attempt: r.Attempts, Error: &msg})
	if err != nil {
		d.o.Logger.Warn("recording a failed delivery failed", "delivery", r.ID, "err", err)
	}
	if n == 1 {
		if err := d.q.ChannelFailed(ctx, d.o.Pool, db.ChannelFailedParams{ID: r.ChannelID, Error: &msg, At: ptr(time.Now())}); err != nil {
			d.o.Logger.Warn("recording a channel's failure failed", "channel", r.ChannelID, "err", err)
		}
	}
	d.count(typ, "failed")
}

func ptr[T any](v T) *T { return &v }

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
