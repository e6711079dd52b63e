// Package metrics is the control plane's Prometheus endpoint. Its
// collector reads the state at each scrape from PostgreSQL (backups,
// jobs, agents, notification deliveries) and from JetStream (commands
// waiting per agent, events not yet read by each consumer), so every
// replica answers the same; counters of this process (notification
// attempts) are added beside.
package metrics

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rahatback/rahatback/db"
	"github.com/rahatback/rahatback/events"
)

// Buckets of the histograms.
var (
	// DurationBuckets (seconds): 1 s to 12 h.
	DurationBuckets = []float64{1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200}
	// SizeBuckets (bytes): 1 MiB to 1 TiB, by fours.
	SizeBuckets = []float64{1 << 20, 1 << 22, 1 << 24, 1 << 26, 1 << 28, 1 << 30, 1 << 32, 1 << 34, 1 << 36, 1 << 38, 1 << 40}
)

// Opts configures New.
type Opts struct {
	Pool *pgxpool.Pool       // required
	JS   jetstream.JetStream // required
	// OfflineAfter: an agent silent this long is offline; default 30 s.
	OfflineAfter time.Duration
	Logger       *slog.Logger // default slog.Default()
}

// Metrics is the registry served at /metrics.
type Metrics struct {
	reg      *prometheus.Registry
	attempts *prometheus.CounterVec
}

// New registers the collector, the Go runtime's and the process's
// metrics, and the notification attempts counter.
func New(o Opts) (*Metrics, error) {
	if o.Pool == nil || o.JS == nil {
		return nil, errors.New("metrics: Pool and JS are required")
	}
	if o.OfflineAfter == 0 {
		o.OfflineAfter = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	m := &Metrics{reg: prometheus.NewRegistry(),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rahatback_notification_attempts_total",
			Help: "Notification delivery attempts by this process, by channel type and outcome (sent, retry, failed)."},
			[]string{"type", "outcome"})}
	for _, c := range []prometheus.Collector{newCollector(o), m.attempts,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := m.reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// CountAttempt counts one notification attempt (notify.DispatcherOpts.Metrics).
func (m *Metrics) CountAttempt(channelType, outcome string) {
	m.attempts.WithLabelValues(channelType, outcome).Inc()
}

// Handler serves the text format; a collector's failure is logged and
// leaves its metrics out, the rest is served.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Protected is h behind a bearer token: 401 without it.
func Protected(token string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="rahatback metrics"`)
			http.Error(w, "metrics need the bearer token (RAHATBACK_METRICS_TOKEN)", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

type collector struct {
	o Opts
	q *db.Queries

	backups, duration, size, lastSuccess, agents, agentOnline, waiting, consumerPending, consumerAckPending, deliveries *prometheus.Desc
}

func newCollector(o Opts) *collector {
	return &collector{o: o, q: db.New(),
		backups: prometheus.NewDesc("rahatback_backups", "Backups in the history, by engine and status.",
			[]string{"engine", "status"}, nil),
		duration: prometheus.NewDesc("rahatback_backup_duration_seconds", "Durations of successful backups.",
			[]string{"engine"}, nil),
		size: prometheus.NewDesc("rahatback_backup_size_bytes", "Stored sizes of successful backups.",
			[]string{"engine"}, nil),
		lastSuccess: prometheus.NewDesc("rahatback_job_last_success_timestamp_seconds",
			"When each job's newest successful backup completed (Unix time); alert on time() minus it.",
			[]string{"job_id", "job", "user_id", "engine"}, nil),
		agents: prometheus.NewDesc("rahatback_agents", "Enrolled agents by state (online, offline).",
			[]string{"state"}, nil),
		agentOnline: prometheus.NewDesc("rahatback_agent_online", "1 while the agent is online.",
			[]string{"agent_id", "agent"}, nil),
		waiting: prometheus.NewDesc("rahatback_agent_commands_waiting",
			"Commands queued for an agent and not yet done (not delivered, or delivered and not acknowledged).",
			[]string{"agent_id", "agent"}, nil),
		consumerPending: prometheus.NewDesc("rahatback_consumer_pending_events",
			"Events in the EVENTS stream not yet delivered to a control-plane consumer (the projector's lag).",
			[]string{"consumer"}, nil),
		consumerAckPending: prometheus.NewDesc("rahatback_consumer_unacked_events",
			"Events delivered to a control-plane consumer and not yet acknowledged.",
			[]string{"consumer"}, nil),
		deliveries: prometheus.NewDesc("rahatback_notification_deliveries",
			"Notification deliveries by channel type and status (pending, sending, sent, failed).",
			[]string{"type", "status"}, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.backups, c.duration, c.size, c.lastSuccess, c.agents, c.agentOnline,
		c.waiting, c.consumerPending, c.consumerAckPending, c.deliveries} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fail := func(d *prometheus.Desc, err error) {
		c.o.Logger.Warn("collecting metrics", "metric", d.String(), "err", err)
		ch <- prometheus.NewInvalidMetric(d, err)
	}
	if rows, err := c.q.MetricBackupsByStatus(ctx, c.o.Pool); err != nil {
		fail(c.backups, err)
	} else {
		for _, r := range rows {
			ch <- prometheus.MustNewConstMetric(c.backups, prometheus.GaugeValue, float64(r.N), r.Engine, r.Status)
		}
	}
	c.histograms(ctx, ch, fail)
	if rows, err := c.q.MetricLastSuccess(ctx, c.o.Pool); err != nil {
		fail(c.lastSuccess, err)
	} else {
		for _, r := range rows {
			ch <- prometheus.MustNewConstMetric(c.lastSuccess, prometheus.GaugeValue,
				float64(r.LastSuccess.UnixMilli())/1000, r.ID.String(), r.Name, r.UserID.String(), r.Engine)
		}
	}
	agents, err := c.q.MetricAgents(ctx, c.o.Pool, c.o.OfflineAfter.Seconds())
	if err != nil {
		fail(c.agents, err)
	} else {
		online := 0
		for _, a := range agents {
			v := 0.0
			if a.Online {
				online, v = online+1, 1
			}
			ch <- prometheus.MustNewConstMetric(c.agentOnline, prometheus.GaugeValue, v, a.ID.String(), a.Name)
			info, err := c.consumerInfo(ctx, events.StreamCommands, events.AgentConsumer(a.ID.String()))
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				continue
			}
			if err != nil {
				fail(c.waiting, err)
				continue
			}
			ch <- prometheus.MustNewConstMetric(c.waiting, prometheus.GaugeValue,
				float64(info.NumPending)+float64(info.NumAckPending), a.ID.String(), a.Name)
		}
		ch <- prometheus.MustNewConstMetric(c.agents, prometheus.GaugeValue, float64(online), "online")
		ch <- prometheus.MustNewConstMetric(c.agents, prometheus.GaugeValue, float64(len(agents)-online), "offline")
	}
	for _, name := range []string{events.ProjectorConsumer, events.NotifierConsumer, events.AuditConsumer} {
		info, err := c.consumerInfo(ctx, events.StreamEvents, name)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue // that role does not run
		}
		if err != nil {
			fail(c.consumerPending, err)
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.consumerPending, prometheus.GaugeValue, float64(info.NumPending), name)
		ch <- prometheus.MustNewConstMetric(c.consumerAckPending, prometheus.GaugeValue, float64(info.NumAckPending), name)
	}
	if rows, err := c.q.MetricDeliveries(ctx, c.o.Pool); err != nil {
		fail(c.deliveries, err)
	} else {
		for _, r := range rows {
			ch <- prometheus.MustNewConstMetric(c.deliveries, prometheus.GaugeValue, float64(r.N), r.Type, r.Status)
		}
	}
}

// consumerInfo is the state of a durable consumer of stream;
// jetstream.ErrConsumerNotFound when there is none.
func (c *collector) consumerInfo(ctx context.Context, stream, name string) (*jetstream.ConsumerInfo, error) {
	cons, err := c.o.JS.Consumer(ctx, stream, name)
	if err != nil {
		return nil, err
	}
	return cons.Info(ctx)
}

// histograms are the duration and size histograms of successful backups
// per engine, counted by PostgreSQL.
func (c *collector) histograms(ctx context.Context, ch chan<- prometheus.Metric, fail func(*prometheus.Desc, error)) {
	totals, err := c.q.MetricBackupTotals(ctx, c.o.Pool)
	if err != nil {
		fail(c.duration, err)
		return
	}
	durRows, err := c.q.MetricBackupDurations(ctx, c.o.Pool, DurationBuckets)
	if err != nil {
		fail(c.duration, err)
		return
	}
	sizeRows, err := c.q.MetricBackupSizes(ctx, c.o.Pool, SizeBuckets)
	if err != nil {
		fail(c.size, err)
		return
	}
	dur, size := map[string]map[float64]uint64{}, map[string]map[float64]uint64{}
	for _, r := range durRows {
		if dur[r.Engine] == nil {
			dur[r.Engine] = map[float64]uint64{}
		}
		dur[r.Engine][r.Bound] = uint64(r.N)
	}
	for _, r := range sizeRows {
		if size[r.Engine] == nil {
			size[r.Engine] = map[float64]uint64{}
		}
		size[r.Engine][r.Bound] = uint64(r.N)
	}
	for _, t := range totals {
		ch <- prometheus.MustNewConstHistogram(c.duration, uint64(t.N), t.DurationSum, dur[t.Engine], t.Engine)
		ch <- prometheus.MustNewConstHistogram(c.size, uint64(t.N), t.SizeSum, size[t.Engine], t.Engine)
	}
}
