package mssql_test

import (
	"context"
	"io"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rahatback/rahatback/blobendpoint"
	"github.com/rahatback/rahatback/engines"
	"github.com/rahatback/rahatback/engines/mssql"
	"github.com/rahatback/rahatback/engines/mssql/mssqlsim"
	"github.com/rahatback/rahatback/pipeline"
)

// BenchmarkEndpoint measures a native backup through the agent's HTTPS
// blob endpoint (4 MiB blocks, TLS) and a restore read back through the
// window, against the simulated server, which generates and checks the
// backup as a stream. RAHATBACK_BENCH_MSSQL_MB sets the backup's size
// (default 256). peak-heap-MiB is the heap above the start, the agent's
// side and the simulated server's together (which holds up to 4 ranges of
// 4 MiB).
func BenchmarkEndpoint(b *testing.B) {
	mb := 256
	if v, err := strconv.Atoi(os.Getenv("RAHATBACK_BENCH_MSSQL_MB")); err == nil && v > 0 {
		mb = v
	}
	r := newRig(b, false)
	r.o.Window = blobendpoint.WindowOptions{} // the defaults an agent runs with
	r.eng = mssql.New(r.o)
	db := &mssqlsim.DB{Tables: []pipeline.TableCount{{Schema: "dbo", Name: "t", Rows: 1}}, Payload: mb << 20, Seed: 3}
	r.sim.Put(r.conn.Database, db)
	size, _ := io.Copy(io.Discard, mssqlsim.BackupStream(r.conn.Database, db, true))
	b.Run("Backup", func(b *testing.B) {
		b.SetBytes(size)
		peak := heapPeak(b)
		for range b.N {
			if _, err := r.eng.Dump(context.Background(), r.conn, io.Discard); err != nil {
				b.Fatal(err)
			}
		}
		peak()
	})
	b.Run("Restore", func(b *testing.B) {
		b.SetBytes(size)
		peak := heapPeak(b)
		for range b.N {
			src := engines.WithSize(mssqlsim.BackupStream(r.conn.Database, db, true), size)
			if err := r.eng.Restore(context.Background(), r.conn, src); err != nil {
				b.Fatal(err)
			}
		}
		peak()
	})
}

// heapPeak samples the live heap until the returned func reports its peak
// above the start.
func heapPeak(b *testing.B) func() {
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() int64 {
		metrics.Read(sample)
		return int64(sample[0].Value.Uint64())
	}
	base := read()
	var peak atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			if v := read(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		close(stop)
		<-done
		b.ReportMetric(float64(peak.Load()-base)/(1<<20), "peak-heap-MiB")
	}
}
