package engines

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pipeSize is the kernel buffer RunStreaming asks for its pipe (Linux
// allows up to /proc/sys/fs/pipe-max-size, 1 MiB by default): a dump tool
// then blocks on a full pipe, and the two processes switch, 16 times less
// often than with the default 64 KiB.
const pipeSize = 1 << 20

// readSize is how much RunStreaming reads from the pipe at once.
const readSize = 1 << 20

// RunStreaming runs cmd with its standard output copied to w, through a
// pipe with a large kernel buffer read in large pieces (a dump tool
// writing to the default pipe through exec's 32 KiB copy runs about 1.5
// times slower than into /dev/null). cmd must not have Stdout set. It
// returns cmd's error, else w's. When w fails, the tool is killed.
func RunStreaming(cmd *exec.Cmd, w io.Writer) error {
	r, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	// A smaller buffer only makes it slower: the error is not fatal.
	_, _ = unix.FcntlInt(pw.Fd(), unix.F_SETPIPE_SZ, pipeSize)
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		r.Close()
		pw.Close()
		return err
	}
	pw.Close() // the child holds its copy
	buf := make([]byte, readSize)
	var copyErr error
	for {
		n, err := r.Read(buf)
		if n > 0 && copyErr == nil {
			if _, werr := w.Write(buf[:n]); werr != nil {
				copyErr = werr
				_ = cmd.Process.Kill()
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && copyErr == nil {
				copyErr = err
			}
			break
		}
	}
	r.Close()
	waitErr := cmd.Wait()
	if waitErr != nil && copyErr == nil {
		return waitErr
	}
	if copyErr != nil {
		return copyErr
	}
	return waitErr
}

// ToolError is a client tool that failed, with its own most useful error
// line (StderrTail.Message).
type ToolError struct {
	Tool    string
	Message string
}

func (e *ToolError) Error() string { return e.Tool + ": " + e.Message }

// toolTimeout is how long a stopped tool may take to exit before it is
// killed and its pipes are closed.
const toolTimeout = 10 * time.Second

// RunDump runs a dump tool cmd, made with exec.CommandContext(ctx, …)
// and without Stdout or Stderr, its output streamed to w (RunStreaming).
// When ctx ends the tool gets SIGTERM. Errors: ctx's when it ended, a
// *ToolError when the tool failed, else w's or the start's, prefixed with
// the tool's name.
func RunDump(ctx context.Context, cmd *exec.Cmd, tool string, w io.Writer) error {
	var stderr StderrTail
	cmd.Stderr = &stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = toolTimeout
	err := RunStreaming(cmd, w)
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.As(err, &exitErr):
		return &ToolError{Tool: tool, Message: stderr.Message()}
	}
	return fmt.Errorf("%s: %w", tool, err)
}

// Feed runs a restore tool (path with args, in env when not nil) with r as
// its standard input. When r fails, the tool is killed before it reads the
// end of its input, so it never applies an input that failed its checks.
// Errors: r's when it failed, ctx's when it ended, a *ToolError when the
// tool failed, or an error saying it stopped reading.
func Feed(ctx context.Context, r io.Reader, tool, path string, args, env []string) error {
	runCtx, kill := context.WithCancel(ctx)
	defer kill()
	cmd := exec.CommandContext(runCtx, path, args...)
	cmd.Env = env
	var stderr StderrTail
	cmd.Stderr = &stderr
	cmd.WaitDelay = toolTimeout
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", tool, err)
	}
	_, copyErr := io.Copy(stdin, r)
	if copyErr != nil && !errors.Is(copyErr, syscall.EPIPE) {
		kill()
		_ = cmd.Wait()
		return copyErr
	}
	stdin.Close()
	waitErr := cmd.Wait()
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case waitErr != nil:
		return &ToolError{Tool: tool, Message: stderr.Message()}
	case copyErr != nil:
		return fmt.Errorf("%s stopped reading: %w", tool, copyErr)
	}
	return nil
}
