package api_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"testing"
	"time"
)

// TestEventStreamEndsOnShutdown: CloseStreams ends open event streams, so
// a server shutting down does not wait for browsers to leave.
func TestEventStreamEndsOnShutdown(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tok := s.register(t, "sse@example.com").Tokens.Access.Token
	req, err := http.NewRequestWithContext(context.Background(), "GET", s.URL+"/v1/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	first, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || first != "retry: 2000\n" {
		t.Fatalf("first line %q, %v", first, err)
	}
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, resp.Body); done <- err }()
	select {
	case <-done:
		t.Fatal("stream ended before CloseStreams")
	case <-time.After(200 * time.Millisecond):
	}
	s.api.CloseStreams()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("stream ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream still open 5 s after CloseStreams")
	}
}
