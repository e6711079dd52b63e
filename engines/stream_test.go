package engines

import (
	"bytes"
	"errors"
	"os/exec"
	"testing"
	"time"
)

type failAfter struct{ n int }

var errFull = errors.New("storage full")

func (f *failAfter) Write(p []byte) (int, error) {
	f.n -= len(p)
	if f.n < 0 {
		return 0, errFull
	}
	return len(p), nil
}

// TestRunStreaming: the output arrives whole; a writer that fails stops
// the tool and its error is the one returned; a failing tool's is too.
func TestRunStreaming(t *testing.T) {
	var out bytes.Buffer
	if err := RunStreaming(exec.Command("sh", "-c", "head -c 5000000 /dev/zero | tr '\\0' x; echo end"), &out); err != nil {
		t.Fatal(err)
	}
	if out.Len() != 5000004 || !bytes.HasSuffix(out.Bytes(), []byte("xend\n")) {
		t.Fatalf("got %d bytes", out.Len())
	}
	start := time.Now()
	if err := RunStreaming(exec.Command("yes"), &failAfter{n: 3 << 20}); !errors.Is(err, errFull) {
		t.Fatalf("writer failure: %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatal("the tool was not stopped when the writer failed")
	}
	var exitErr *exec.ExitError
	if err := RunStreaming(exec.Command("sh", "-c", "echo partial; exit 3"), &out); !errors.As(err, &exitErr) || exitErr.ExitCode() != 3 {
		t.Fatalf("failing tool: %v", err)
	}
}
