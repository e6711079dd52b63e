package outbox_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/outbox"
	"github.com/rahatback/rahatback/testsupport"
)

// BenchmarkRelay relays the burst the scheduler writes at the top of an
// hour: 27,500 runs, each an event on rahat.cp.<agent>.backup.queued and a
// command on rahat.cmd.<agent>.backup, in transactions of 512 runs (the
// scheduler's default batch) holding all their events, then all their
// commands. It reports msgs/s and burst-s, the time from the first round
// to an empty outbox: since the burst is committed before the relay
// starts, the last command waits about that long.
func BenchmarkRelay(b *testing.B) {
	const runs, perTx, agents = 27_500, 512, 1000
	_, pool := testsupport.NewDatabase(b)
	n := testsupport.StartNATS(b, nil)
	r, err := outbox.New(outbox.Relay{Pool: pool, JS: n.JS, Logger: testsupport.Logger(b)})
	if err != nil {
		b.Fatal(err)
	}
	ev := bytes.Repeat([]byte("e"), 300)
	cmd := bytes.Repeat([]byte("c"), 600)
	ctx := context.Background()
	var relayed time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		for first := 0; first < runs; first += perTx {
			msgs := make([]outbox.Message, 0, 2*perTx)
			last := min(first+perTx, runs)
			for run := first; run < last; run++ {
				agent := fmt.Sprint("agent", run%agents)
				msgs = append(msgs, outbox.Message{Subject: events.ControlSubject(agent, events.KindBackup, events.PhaseQueued),
					MsgID: fmt.Sprintf("%d:%d:queued", i, run), Data: ev})
			}
			for run := first; run < last; run++ {
				agent := fmt.Sprint("agent", run%agents)
				msgs = append(msgs, outbox.Message{Subject: events.CommandSubject(agent, events.CommandBackup),
					MsgID: fmt.Sprintf("%d:%d", i, run), Data: cmd})
			}
			add(b, pool, msgs)
		}
		b.StartTimer()
		start := time.Now()
		total := 0
		for {
			n, err := r.Round(ctx)
			if err != nil {
				b.Fatal(err)
			}
			total += n
			if n == 0 {
				break
			}
		}
		relayed += time.Since(start)
		if total != 2*runs {
			b.Fatalf("relayed %d messages, want %d", total, 2*runs)
		}
	}
	b.ReportMetric(float64(2*runs*b.N)/relayed.Seconds(), "msgs/s")
	b.ReportMetric(relayed.Seconds()/float64(b.N), "burst-s")
}
