package testsupport

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// VersityGWVersion is the versitygw release the tests run, installed from
// the Go module proxy.
const VersityGWVersion = "v1.8.0"

const versityGWModule = "github.com/versity/versitygw/cmd/versitygw"

// VersityGW is a real S3 server for a test: versitygw with its posix
// backend over a temporary directory, on a random loopback port, with its
// internal IAM: the root account below, and more from NewUser.
type VersityGW struct {
	Endpoint  string // "http://127.0.0.1:<port>"; use path-style addressing
	Region    string
	AccessKey string
	SecretKey string
	Dir       string // the backend's root: one directory per bucket
	Bucket    string // an empty bucket created at start

	client *s3.Client
}

// Client returns an SDK client with the root credentials (path style).
func (g *VersityGW) Client() *s3.Client { return g.client }

// NewBucket creates an empty bucket with a random name and returns it.
func (g *VersityGW) NewBucket(t testing.TB) string {
	t.Helper()
	name := "rb-" + RandomString(8)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := g.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &name}); err != nil {
		t.Fatalf("versitygw: create bucket: %v", err)
	}
	return name
}

// NewUser creates an account with the role "user" (it may create buckets
// and reach only its own) and returns its credentials.
func (g *VersityGW) NewUser(t testing.TB) (access, secret string) {
	t.Helper()
	access, secret = "u"+RandomString(8), RandomString(20)
	body, err := xml.Marshal(struct {
		XMLName xml.Name `xml:"Account"`
		Access  string
		Secret  string
		Role    string
	}{Access: access, Secret: secret, Role: "user"})
	if err != nil {
		t.Fatal(err)
	}
	// The admin API shares the S3 port: PATCH /create-user, signed as root.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, g.Endpoint+"/create-user", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:])
	req.Header.Set("X-Amz-Content-Sha256", hash)
	creds := aws.Credentials{AccessKeyID: g.AccessKey, SecretAccessKey: g.SecretKey}
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, hash, "s3", g.Region, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("versitygw: create user: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		msg, _ := io.ReadAll(resp.Body)
		t.Fatalf("versitygw: create user: %s: %s", resp.Status, msg)
	}
	return access, secret
}

// StartVersityGW starts versitygw for t (installing it first if needed, see
// VersityGWBinary), waits until it answers, creates VersityGW.Bucket and
// stops the server when t ends.
func StartVersityGW(t testing.TB) *VersityGW {
	t.Helper()
	bin, err := VersityGWBinary()
	if err != nil {
		t.Fatal(err)
	}
	g := &VersityGW{Region: "us-east-1", AccessKey: "rb" + RandomString(8), SecretKey: RandomString(20), Dir: t.TempDir()}
	meta := "" // xattrs on Dir; a sidecar directory where the filesystem has none
	iamDir := t.TempDir()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		err = g.start(t, bin, port, meta, iamDir)
		if err == nil {
			break
		}
		lastErr = err
		switch {
		case strings.Contains(err.Error(), "xattr") && meta == "":
			meta = t.TempDir()
		case strings.Contains(err.Error(), "address already in use"):
		default:
			t.Fatal(err)
		}
	}
	if g.client == nil {
		t.Fatal(lastErr)
	}
	g.Bucket = g.NewBucket(t)
	return g
}

// start runs the server on port and waits for it; on failure the error
// holds the server's output.
func (g *VersityGW) start(t testing.TB, bin string, port int, sidecar, iamDir string) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// Internal IAM (accounts in a file under iamDir) lets tests add users
	// besides root; see NewUser.
	args := []string{"--port", addr, "--region", g.Region, "--quiet", "--keep-alive", "--iam-dir", iamDir, "posix"}
	if sidecar != "" {
		args = append(args, "--sidecar", sidecar)
	}
	args = append(args, g.Dir)
	cmd := exec.Command(bin, args...)
	// A clean environment: no VGW_* setting of the developer's leaks in, and
	// the root secret is not on the command line.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + os.TempDir(),
		"ROOT_ACCESS_KEY_ID=" + g.AccessKey, "ROOT_SECRET_ACCESS_KEY=" + g.SecretKey}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("versitygw: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	endpoint := "http://" + addr
	client := s3.New(s3.Options{
		Region: g.Region, BaseEndpoint: aws.String(endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(g.AccessKey, g.SecretKey, ""),
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Listing buckets with these credentials also proves the server on
		// the port is ours, not another test's.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := client.ListBuckets(ctx, &s3.ListBucketsInput{}, func(o *s3.Options) { o.RetryMaxAttempts = 1 })
		cancel()
		if err == nil {
			break
		}
		select {
		case werr := <-exited:
			return fmt.Errorf("versitygw exited (%v): %s", werr, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("versitygw did not answer on %s within 30s (%v): %s", addr, err, out.String())
		}
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("versitygw output:\n%s", out.String())
		}
	})
	g.Endpoint, g.client = endpoint, client
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// VersityGWBinary returns the path of the versitygw binary, installing it
// on first use with `go install` of VersityGWVersion (from the Go module
// proxy, as GOPROXY says) into <user cache dir>/rahatback/versitygw-<version>.
// A file lock there makes concurrent test processes wait for one install;
// the binary is built beside and renamed into place, so a killed install
// never leaves a truncated one.
func VersityGWBinary() (string, error) {
	return goInstalled("versitygw", versityGWModule, VersityGWVersion)
}
