package storage

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/rahatback/rahatback/egress"
)

// Errors of S3 calls, classified so that callers (the storage test of the
// API, a failed backup) can say what is wrong. An S3 error's text is built
// from these classes, the operation and the key only: never the SDK's
// text, a URL or anything the server sent (but a well-known S3 error code),
// so it neither holds a secret nor echoes an arbitrary server. The SDK's
// error stays in the chain (errors.As) and Detail gives its text for logs.
var (
	// ErrS3BadCredentials: the access key does not exist or the secret key
	// does not match it (InvalidAccessKeyId, SignatureDoesNotMatch).
	ErrS3BadCredentials = errors.New("storage: s3: wrong access key or secret key")
	// ErrS3NoBucket: the bucket does not exist (NoSuchBucket).
	ErrS3NoBucket = errors.New("storage: s3: no such bucket")
	// ErrS3Denied: the credentials are valid but may not do this (AccessDenied).
	ErrS3Denied = errors.New("storage: s3: permission denied")
	// ErrS3Unreachable: the endpoint does not answer (DNS failure, connection
	// refused, timeout).
	ErrS3Unreachable = errors.New("storage: s3: endpoint unreachable")
	// ErrS3NotS3: something answered, but not as an S3 server does (no S3
	// error code, or a TLS certificate that is not trusted).
	ErrS3NotS3 = errors.New("storage: s3: the endpoint did not answer as an S3 server")
)

const (
	// DefaultS3PartSize is the first part size of a multipart upload.
	DefaultS3PartSize = 8 << 20
	// MinS3PartSize is S3's smallest part (all but the last).
	MinS3PartSize = 5 << 20
	// MaxS3PartSize is S3's largest part.
	MaxS3PartSize = 5 << 30
	// s3MaxParts is S3's limit of parts per upload.
	s3MaxParts = 10000
	// s3PartsPerStep parts are uploaded at one size before it doubles.
	s3PartsPerStep = 1000
	// s3PartsInFlight bounds concurrent UploadPart calls of one Put.
	s3PartsInFlight = 2
	// s3PartRetries is how often a failed part is sent again.
	s3PartRetries = 3
	// s3PartBackoff is the wait before the first retry of a part; it doubles.
	s3PartBackoff = 500 * time.Millisecond
	// s3ReadResumes is how often a Get reader reopens a dropped body.
	s3ReadResumes = 5
	// s3CleanupTimeout bounds an abort made after the caller's ctx ended.
	s3CleanupTimeout = time.Minute
	// s3ProbePrefix names probe objects; the leading "." keeps them out of List.
	s3ProbePrefix = ".rahatback-probe-"
)

// S3Config describes an S3 bucket (AWS or an S3-compatible store).
type S3Config struct {
	// Endpoint is the URL of an S3-compatible store ("https://minio:9000");
	// empty means AWS, whose endpoint follows from Region.
	Endpoint string
	// Region signs the requests; required for AWS, "us-east-1" by default
	// with an Endpoint.
	Region string
	// Bucket must exist.
	Bucket string
	// AccessKeyID and SecretAccessKey are the only credentials used: no
	// environment variable, shared config file or instance role is consulted.
	AccessKeyID     string
	SecretAccessKey string
	// ForcePathStyle addresses the bucket as <endpoint>/<bucket> instead of
	// <bucket>.<endpoint>; most S3-compatible stores need it.
	ForcePathStyle bool
	// Prefix is prepended to every key, "backups" → "backups/<key>". Leading
	// and trailing slashes are ignored; the rest must pass CheckKey.
	Prefix string
	// PartSize is the first part size of multipart uploads: 0 means
	// DefaultS3PartSize; otherwise between MinS3PartSize and MaxS3PartSize.
	PartSize int64
	// HTTPClient replaces the SDK's default client (timeouts, proxies, tests).
	HTTPClient *http.Client
}

// S3 stores objects in an S3 bucket under an optional key prefix.
//
// Put streams: an object smaller than one part is sent with one PutObject,
// anything else as a multipart upload whose part size starts at PartSize
// and doubles every 1000 parts (capped at 5 GiB), so the 10,000 parts S3
// allows hold MaxS3ObjectSize(PartSize) bytes: about 7.8 TiB with the
// default 8 MiB (more than the 5 TiB per object S3 has long allowed),
// 4.9 TiB with 5 MiB.
// At most two parts are in flight while a third is read, so a Put holds at
// most three buffers of the current part size. With the default that is
// 24 MiB for objects up to 7.8 GiB, 384 MiB up to 242 GiB, 768 MiB up to
// 492 GiB and 1.5 GiB up to 992 GiB (buffers are pooled per size).
//
// Requests carry checksums only where S3 requires them (no aws-chunked
// trailing checksums, which several S3-compatible stores reject); parts
// and small objects carry Content-MD5 instead, which S3 and most
// compatible stores verify.
type S3 struct {
	client   *s3.Client
	bucket   string
	prefix   string // normalized: no leading or trailing "/"
	base     string // prefix + "/", or ""
	partSize int64
}

var _ Storage = (*S3)(nil)

// NewS3 returns an S3 for cfg. It checks the settings but makes no request
// (see Probe). Errors never contain the secret key.
func NewS3(cfg S3Config) (*S3, error) {
	bad := func(format string, args ...any) (*S3, error) {
		return nil, fmt.Errorf("storage: s3: "+format, args...)
	}
	if cfg.Bucket == "" {
		return bad("bucket is required")
	}
	if strings.ContainsAny(cfg.Bucket, "/\\ ") || strings.IndexFunc(cfg.Bucket, isControl) >= 0 {
		return bad("invalid bucket name %q", cfg.Bucket)
	}
	if cfg.AccessKeyID == "" {
		return bad("access key ID is required")
	}
	if cfg.SecretAccessKey == "" {
		return bad("secret access key is required")
	}
	if strings.IndexFunc(cfg.AccessKeyID, isControl) >= 0 || strings.IndexFunc(cfg.SecretAccessKey, isControl) >= 0 {
		return bad("the access key ID or secret access key contains a control character")
	}
	region := strings.TrimSpace(cfg.Region)
	if cfg.Endpoint != "" {
		u, err := url.Parse(cfg.Endpoint)
		switch {
		case err != nil:
			return bad("invalid endpoint URL")
		case u.Scheme != "http" && u.Scheme != "https":
			return bad("endpoint must be an http:// or https:// URL")
		case u.Host == "":
			return bad("endpoint has no host")
		case u.User != nil:
			return bad("endpoint must not contain credentials")
		case u.RawQuery != "" || u.Fragment != "":
			return bad("endpoint must not have a query or fragment")
		case u.Path != "" && u.Path != "/":
			return bad("endpoint must not have a path")
		}
		if region == "" {
			region = "us-east-1"
		}
	} else if region == "" {
		return bad("region is required without an endpoint")
	}
	prefix := strings.Trim(cfg.Prefix, "/")
	if prefix != "" {
		if err := CheckKey(prefix); err != nil {
			return bad("invalid prefix %q", cfg.Prefix)
		}
	}
	partSize := cfg.PartSize
	if partSize == 0 {
		partSize = DefaultS3PartSize
	}
	if partSize < MinS3PartSize || partSize > MaxS3PartSize {
		return bad("part size %d out of range [%d, %d]", partSize, MinS3PartSize, MaxS3PartSize)
	}

	opts := s3.Options{
		Region:       region,
		Credentials:  credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, ""),
		UsePathStyle: cfg.ForcePathStyle,
		// See the type's comment; Content-MD5 guards the payloads instead.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}
	if cfg.Endpoint != "" {
		opts.BaseEndpoint = aws.String(strings.TrimSuffix(cfg.Endpoint, "/"))
	}
	if cfg.HTTPClient != nil {
		opts.HTTPClient = cfg.HTTPClient
	}
	// An address the egress policy refused stays refused: no retries.
	opts.Retryer = retry.NewStandard(func(o *retry.StandardOptions) {
		o.Retryables = append([]retry.IsErrorRetryable{retry.IsErrorRetryableFunc(notRefused)}, o.Retryables...)
	})
	s := &S3{
		client:   s3.New(opts),
		bucket:   cfg.Bucket,
		prefix:   prefix,
		partSize: partSize,
	}
	if prefix != "" {
		s.base = prefix + "/"
	}
	return s, nil
}

func isControl(c rune) bool { return c < 0x20 || c == 0x7f }

// MaxS3ObjectSize returns the largest object Put can store with the first
// part size partSize (0: the default): 10,000 parts whose size doubles every
// 1000 parts, each at most MaxS3PartSize.
func MaxS3ObjectSize(partSize int64) int64 {
	if partSize == 0 {
		partSize = DefaultS3PartSize
	}
	var total int64
	for n := int32(1); n <= s3MaxParts; n += s3PartsPerStep {
		total += s3PartsPerStep * partSizeFor(partSize, n)
	}
	return total
}

// partSizeFor returns the size of part n (1-based).
func partSizeFor(first int64, n int32) int64 {
	size := first << ((n - 1) / s3PartsPerStep)
	return min(size, MaxS3PartSize)
}

// Bucket returns the bucket name.
func (s *S3) Bucket() string { return s.bucket }

// Prefix returns the normalized key prefix ("" for none).
func (s *S3) Prefix() string { return s.prefix }

func (s *S3) fullKey(key string) string { return s.base + key }

// partBufs pools part buffers by size (sizes double, so few pools exist).
var partBufs sync.Map // int64 → *sync.Pool of *[]byte

func getPartBuf(size int64) *[]byte {
	p, ok := partBufs.Load(size)
	if !ok {
		p, _ = partBufs.LoadOrStore(size, &sync.Pool{New: func() any { b := make([]byte, size); return &b }})
	}
	return p.(*sync.Pool).Get().(*[]byte)
}

func putPartBuf(b *[]byte) {
	if p, ok := partBufs.Load(int64(len(*b))); ok {
		p.(*sync.Pool).Put(b)
	}
}

// readPart fills buf from r, checking ctx before every Read. It returns
// io.EOF (with n ≤ len(buf)) once r is exhausted, nil when buf is full,
// or r's error as it is.
func readPart(ctx context.Context, r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func contentMD5(b []byte) *string {
	sum := md5.Sum(b)
	return aws.String(base64.StdEncoding.EncodeToString(sum[:]))
}

// Put implements Storage; see the type's comment for how. On any failure,
// including ctx ending or r failing, the multipart upload is aborted (with
// a fresh one-minute context when ctx has ended), so nothing stays behind
// in the bucket; only a killed process leaves an upload, which AbortStale
// removes. ctx is checked between reads of r, so a reader that blocks must
// end on its own when ctx does. Errors wrap ErrBadKey, r's error, ctx.Err(),
// or the S3 error (classified as the ErrS3* errors).
func (s *S3) Put(ctx context.Context, key string, r io.Reader) (int64, error) {
	if err := CheckKey(key); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("storage: put %q: %w", key, err)
	}
	bp := getPartBuf(s.partSize)
	n, err := readPart(ctx, r, *bp)
	if err != nil && err != io.EOF {
		putPartBuf(bp)
		return 0, fmt.Errorf("storage: put %q: %w", key, err)
	}
	if err == io.EOF {
		defer putPartBuf(bp)
		body := (*bp)[:n]
		_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
			Bucket: &s.bucket, Key: aws.String(s.fullKey(key)),
			Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(n)), ContentMD5: contentMD5(body),
		})
		if err != nil {
			return 0, s.wrapErr(ctx, "put", key, err)
		}
		return int64(n), nil
	}
	return s.putMultipart(ctx, key, r, bp)
}

// putMultipart uploads first (a full part) and the rest of r.
func (s *S3) putMultipart(ctx context.Context, key string, r io.Reader, first *[]byte) (int64, error) {
	full := s.fullKey(key)
	created, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: &full})
	if err != nil {
		putPartBuf(first)
		return 0, s.wrapErr(ctx, "put", key, err)
	}
	uploadID := created.UploadId

	// upCtx ends the other parts (and the reading) at the first failure;
	// its cause is that failure.
	upCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		parts []types.CompletedPart
		total int64
	)
	sem := make(chan struct{}, s3PartsInFlight)
	bp, n, eof := first, len(*first), false
	for num := int32(1); ; num++ {
		select {
		case sem <- struct{}{}:
		case <-upCtx.Done():
		}
		if upCtx.Err() != nil {
			putPartBuf(bp)
			break
		}
		wg.Add(1)
		go func(num int32, bp *[]byte, data []byte) {
			defer wg.Done()
			defer func() { <-sem }()
			defer putPartBuf(bp)
			etag, err := s.uploadPart(upCtx, full, uploadID, num, data)
			if err != nil {
				cancel(err)
				return
			}
			mu.Lock()
			parts = append(parts, types.CompletedPart{PartNumber: aws.Int32(num), ETag: etag})
			mu.Unlock()
		}(num, bp, (*bp)[:n])
		total += int64(n)
		if eof {
			break
		}
		if num == s3MaxParts {
			var one [1]byte
			if m, err := readPart(upCtx, r, one[:]); m > 0 {
				cancel(fmt.Errorf("object larger than %d bytes, the most %d parts can hold", MaxS3ObjectSize(s.partSize), s3MaxParts))
			} else if err != nil && err != io.EOF && upCtx.Err() == nil {
				cancel(err)
			}
			break
		}
		bp = getPartBuf(partSizeFor(s.partSize, num+1))
		n, err = readPart(upCtx, r, *bp)
		if err == io.EOF {
			eof = true
			if n == 0 {
				putPartBuf(bp)
				break
			}
		} else if err != nil {
			putPartBuf(bp)
			if upCtx.Err() == nil { // else the cause is already set
				cancel(err)
			}
			break
		}
	}
	wg.Wait()

	fail := func(err error) (int64, error) {
		s.abort(ctx, full, uploadID)
		if cerr := ctx.Err(); cerr != nil {
			return 0, fmt.Errorf("storage: put %q: %w", key, cerr)
		}
		var ae smithy.APIError
		if errors.As(err, &ae) || errors.As(err, new(*smithy.OperationError)) {
			return 0, s.wrapErr(ctx, "put", key, err)
		}
		return 0, fmt.Errorf("storage: put %q: %w", key, err) // r's error, or too large
	}
	if upCtx.Err() != nil {
		return fail(context.Cause(upCtx))
	}
	// The last chance to honour a cancellation: after completion the object is visible.
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	slices.SortFunc(parts, func(a, b types.CompletedPart) int { return int(*a.PartNumber - *b.PartNumber) })
	_, err = s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &s.bucket, Key: &full, UploadId: uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		return fail(err)
	}
	return total, nil
}

// uploadPart sends one part, retrying it up to s3PartRetries times (after
// 0.5 s, 1 s, 2 s) on errors that may pass: connection failures, 5xx,
// throttling. The SDK's own retries are off for this call so the count
// is exact.
func (s *S3) uploadPart(ctx context.Context, key string, uploadID *string, num int32, data []byte) (*string, error) {
	md := contentMD5(data)
	backoff := s3PartBackoff
	for attempt := 0; ; attempt++ {
		out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
			Bucket: &s.bucket, Key: &key, UploadId: uploadID, PartNumber: aws.Int32(num),
			Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))), ContentMD5: md,
		}, func(o *s3.Options) { o.RetryMaxAttempts = 1 })
		if err == nil {
			return out.ETag, nil
		}
		if attempt == s3PartRetries || ctx.Err() != nil || !partRetryable(err) {
			return nil, fmt.Errorf("part %d: %w", num, err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("part %d: %w", num, err)
		case <-t.C:
		}
		backoff *= 2
	}
}

var partRetryables = retry.IsErrorRetryables(retry.DefaultRetryables)

// notRefused is a retry check: an egress refusal is final.
func notRefused(err error) aws.Ternary {
	if _, ok := egress.IsRefused(err); ok {
		return aws.FalseTernary
	}
	return aws.UnknownTernary
}

// partRetryable reports whether an UploadPart error may pass on a retry:
// what the SDK itself retries, and any other error that is not an answer
// of the server (a body cut short, an odd transport failure).
func partRetryable(err error) bool {
	if notRefused(err) == aws.FalseTernary {
		return false
	}
	switch partRetryables.IsErrorRetryable(err) {
	case aws.TrueTernary:
		return true
	case aws.FalseTernary:
		return false
	}
	var ae smithy.APIError
	var re *smithyhttp.ResponseError
	return !errors.As(err, &ae) && !errors.As(err, &re)
}

// abort aborts an upload, with a fresh context if ctx has ended. Its error
// is of no use to the caller, who already has the cause; AbortStale
// removes what a failed abort leaves.
func (s *S3) abort(ctx context.Context, key string, uploadID *string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s3CleanupTimeout)
	defer cancel()
	_, _ = s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: &key, UploadId: uploadID})
}

// AbortStale aborts the multipart uploads under the prefix (keys equal to
// it or below "<prefix>/"; with no prefix, every upload in the bucket)
// initiated more than olderThan ago; olderThan ≤ 0 aborts them all, whatever
// the clocks say. Uploads of a Put in progress are aborted too (that Put
// then fails), including another process's using the same bucket and
// prefix. It returns how many it aborted; on error, the count so far.
func (s *S3) AbortStale(ctx context.Context, olderThan time.Duration) (int, error) {
	type upload struct{ key, id *string }
	var stale []upload
	cutoff := time.Now().Add(-olderThan)
	in := &s3.ListMultipartUploadsInput{Bucket: &s.bucket}
	if s.prefix != "" {
		in.Prefix = aws.String(s.prefix)
	}
	pages := s3.NewListMultipartUploadsPaginator(s.client, in)
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return 0, s.wrapErr(ctx, "abort stale uploads", s.prefix, err)
		}
		for _, u := range page.Uploads {
			k := aws.ToString(u.Key)
			if s.prefix != "" && k != s.prefix && !strings.HasPrefix(k, s.base) {
				continue
			}
			if olderThan > 0 && (u.Initiated == nil || !u.Initiated.Before(cutoff)) {
				continue
			}
			stale = append(stale, upload{u.Key, u.UploadId})
		}
	}
	n := 0
	for _, u := range stale {
		_, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: u.key, UploadId: u.id})
		if err != nil && apiCode(err) != "NoSuchUpload" {
			return n, s.wrapErr(ctx, "abort stale uploads", s.prefix, err)
		}
		if err == nil {
			n++
		}
	}
	return n, nil
}

// Get implements Storage. The reader streams the object's body; ctx must
// stay live while reading (ending it ends the reads with its error). When
// the connection drops mid-body, the reader reopens the object from the next
// byte (a Range request with If-Match on the ETag first seen, so a replaced
// object is never spliced onto the old one), up to 5 times per reader.
func (s *S3) Get(ctx context.Context, key string, offset int64) (io.ReadCloser, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("storage: get %q: %w", key, err)
	}
	if offset < 0 {
		return nil, fmt.Errorf("storage: get %q: %w: %d", key, ErrBadOffset, offset)
	}
	rd := &s3Reader{s: s, ctx: ctx, key: key, pos: offset, size: -1}
	err := rd.open()
	if err == nil {
		return rd, nil
	}
	if isNotFound(err) {
		return nil, notFound("get", key, err)
	}
	if apiCode(err) == "InvalidRange" || errors.Is(err, errPastEnd) {
		// Beyond the end, or at the end (S3 has no empty range): ask the size.
		obj, serr := s.Stat(ctx, key)
		if serr != nil {
			return nil, serr
		}
		if offset == obj.Size {
			return io.NopCloser(strings.NewReader("")), nil
		}
		return nil, fmt.Errorf("storage: get %q: %w: %d > size %d", key, ErrBadOffset, offset, obj.Size)
	}
	return nil, s.wrapErr(ctx, "get", key, err)
}

// errPastEnd is a Range at or past the end that the store ignored.
var errPastEnd = errors.New("range starts at or past the end of the object")

// s3Reader is an object body that reopens itself where a dropped
// connection cut it.
type s3Reader struct {
	s       *S3
	ctx     context.Context
	key     string
	etag    *string // of the first response; nil if the store sent none
	pos     int64   // offset of the next byte
	size    int64   // of the object, -1 if unknown
	body    io.ReadCloser
	resumes int
	err     error // sticky
}

// open requests the object from r.pos.
func (r *s3Reader) open() error {
	in := &s3.GetObjectInput{Bucket: &r.s.bucket, Key: aws.String(r.s.fullKey(r.key)), IfMatch: r.etag}
	if r.pos > 0 {
		in.Range = aws.String("bytes=" + strconv.FormatInt(r.pos, 10) + "-")
	}
	out, err := r.s.client.GetObject(r.ctx, in)
	if err != nil {
		return err
	}
	start, size, ok := parseContentRange(aws.ToString(out.ContentRange))
	switch {
	case ok:
		if start != r.pos {
			out.Body.Close()
			return fmt.Errorf("asked for bytes from %d, got a range from %d", r.pos, start)
		}
	case out.ContentLength != nil:
		size = *out.ContentLength
	default:
		size = -1
	}
	if !ok && r.pos > 0 {
		// The store ignored the Range and sent everything: skip to pos.
		if size >= 0 && r.pos >= size {
			out.Body.Close()
			return errPastEnd
		}
		if _, err := io.CopyN(io.Discard, out.Body, r.pos); err != nil {
			out.Body.Close()
			return err
		}
	}
	if r.etag == nil {
		r.etag = out.ETag
	}
	r.size, r.body = size, out.Body
	return nil
}

// parseContentRange reads "bytes <start>-<end>/<size>".
func parseContentRange(v string) (start, size int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, total, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	first, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(first, 10, 64)
	size, err2 := strconv.ParseInt(total, 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return start, size, true
}

func (r *s3Reader) Read(p []byte) (int, error) {
	for {
		if r.err != nil {
			return 0, r.err
		}
		if err := r.ctx.Err(); err != nil {
			// Data the transport buffered before noticing would still flow.
			r.Close()
			r.err = fmt.Errorf("storage: get %q: %w", r.key, err)
			return 0, r.err
		}
		if r.body == nil {
			if err := r.open(); err != nil {
				if r.resumable(err) {
					r.resumes++
					continue
				}
				r.err = r.s.wrapErr(r.ctx, "get", r.key, err)
				return 0, r.err
			}
		}
		n, err := r.body.Read(p)
		r.pos += int64(n)
		if err == nil {
			return n, nil
		}
		if err == io.EOF && (r.size < 0 || r.pos >= r.size) {
			r.err = io.EOF
			return n, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // the body ended before the object did
		}
		r.body.Close()
		r.body = nil
		if !r.resumable(err) {
			r.err = r.s.wrapErr(r.ctx, "get", r.key, err)
			return n, r.err
		}
		r.resumes++
		if n > 0 {
			return n, nil // reopen at the next Read
		}
	}
}

// resumable reports whether err, from a body or a reopening, is a dropped
// connection that another request from pos may get past.
func (r *s3Reader) resumable(err error) bool {
	if r.resumes >= s3ReadResumes || r.ctx.Err() != nil || r.size >= 0 && r.pos >= r.size {
		return false
	}
	var ne net.Error
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE) || errors.As(err, &ne)
}

func (r *s3Reader) Close() error {
	if r.err == nil {
		r.err = errors.New("storage: read after close")
	}
	if r.body == nil {
		return nil
	}
	err := r.body.Close()
	r.body = nil
	return err
}

// Stat implements Storage (HeadObject).
func (s *S3) Stat(ctx context.Context, key string) (Object, error) {
	if err := CheckKey(key); err != nil {
		return Object{}, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: aws.String(s.fullKey(key))})
	if isNotFound(err) {
		return Object{}, notFound("stat", key, err)
	}
	if err != nil {
		return Object{}, s.wrapErr(ctx, "stat", key, err)
	}
	return Object{Key: key, Size: aws.ToInt64(out.ContentLength), ModTime: aws.ToTime(out.LastModified)}, nil
}

// Delete implements Storage: HeadObject, so that a missing key returns
// ErrNotFound (DeleteObject succeeds on one), then DeleteObject.
func (s *S3) Delete(ctx context.Context, key string) error {
	if _, err := s.Stat(ctx, key); err != nil {
		if errors.Is(err, ErrNotFound) {
			return notFound("delete", key, nil)
		}
		return err
	}
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: aws.String(s.fullKey(key))}); err != nil {
		return s.wrapErr(ctx, "delete", key, err)
	}
	return nil
}

// List implements Storage (ListObjectsV2). Keys are relative to the
// configured prefix; keys CheckKey rejects (folder markers "a/", probe
// objects, foreign names) are skipped.
func (s *S3) List(ctx context.Context, prefix string) ([]Object, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("storage: list %q: %w", prefix, err)
	}
	objs := []Object{}
	pages := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: aws.String(s.base + prefix)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, s.wrapErr(ctx, "list", prefix, err)
		}
		for _, o := range page.Contents {
			k, ok := strings.CutPrefix(aws.ToString(o.Key), s.base)
			if !ok || !strings.HasPrefix(k, prefix) || CheckKey(k) != nil {
				continue
			}
			objs = append(objs, Object{Key: k, Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified)})
		}
	}
	slices.SortFunc(objs, func(a, b Object) int { return strings.Compare(a.Key, b.Key) })
	return objs, nil
}

// Probe proves the settings work: it writes a small object named
// ".rahatback-probe-<random>" under the prefix, reads it back, compares it
// and deletes it. Its error names the step that failed and wraps one of
// ErrS3BadCredentials, ErrS3NoBucket, ErrS3Denied or ErrS3Unreachable when
// the cause is one of those (a ctx deadline reached before any answer counts
// as unreachable); its text never contains the secret key.
func (s *S3) Probe(ctx context.Context) error {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	key := s.base + s3ProbePrefix + hex.EncodeToString(rnd[:])
	want := []byte("rahatback storage probe " + hex.EncodeToString(rnd[:]) + "\n")
	fail := func(step string, err error) error {
		e := s.classify(ctx, "probe", err)
		if e.kind == nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			e.kind = ErrS3Unreachable
			e.errs = append(e.errs, ErrS3Unreachable)
			e.msg = "endpoint unreachable: no answer in time"
		}
		return fmt.Errorf("storage: s3 probe: %s: %w", step, e)
	}
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &s.bucket, Key: &key, Body: bytes.NewReader(want),
		ContentLength: aws.Int64(int64(len(want))), ContentMD5: contentMD5(want),
	})
	if err != nil {
		return fail("write a probe object", err)
	}
	defer func() {
		// Best effort if a step below failed; checked on the success path.
		if key != "" {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			_, _ = s.client.DeleteObject(dctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &key})
		}
	}()
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil {
		return fail("read the probe object back", err)
	}
	got, err := io.ReadAll(io.LimitReader(out.Body, int64(len(want))+1))
	out.Body.Close()
	if err != nil {
		return fail("read the probe object back", err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("storage: s3 probe: %w: the probe object read back differs from what was written (%d bytes instead of %d)", ErrS3NotS3, len(got), len(want))
	}
	_, err = s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil {
		return fail("delete the probe object", err)
	}
	key = ""
	return nil
}

// s3Error is an S3 failure as callers see it: a text built from its
// class (see the ErrS3* comment), unwrapping to the class, the SDK error
// and ctx.Err().
type s3Error struct {
	kind error // ErrS3* or nil
	msg  string
	errs []error
}

func (e *s3Error) Error() string   { return e.msg }
func (e *s3Error) Unwrap() []error { return e.errs }

// Detail returns, for logs, the text of the SDK error inside an S3 error
// (URLs and the server's message included, never the secret key), or
// err's own text when it holds none.
func Detail(err error) string {
	var e *s3Error
	if errors.As(err, &e) && len(e.errs) > 0 {
		return e.errs[0].Error()
	}
	return err.Error()
}

// wrapErr is err from operation op on key, classified.
func (s *S3) wrapErr(ctx context.Context, op, key string, err error) error {
	return fmt.Errorf("storage: %s %q: %w", op, key, s.classify(ctx, op, err))
}

// s3Codes are the S3 error codes an error text may name: fixed words of
// the S3 API, so naming one echoes nothing arbitrary.
var s3Codes = map[string]bool{
	"InternalError": true, "ServiceUnavailable": true, "SlowDown": true, "RequestTimeout": true,
	"EntityTooLarge": true, "EntityTooSmall": true, "InvalidPart": true, "InvalidPartOrder": true,
	"NoSuchUpload": true, "NoSuchKey": true, "NotFound": true, "BadDigest": true, "InvalidDigest": true,
	"InvalidBucketName": true, "InvalidRequest": true, "InvalidArgument": true, "KeyTooLongError": true,
	"PermanentRedirect": true, "TemporaryRedirect": true, "AuthorizationHeaderMalformed": true,
	"RequestTimeTooSkewed": true, "XAmzContentSHA256Mismatch": true, "MissingContentLength": true,
	"NotImplemented": true, "QuotaExceeded": true, "InvalidObjectState": true, "MethodNotAllowed": true,
	"PreconditionFailed": true, "InvalidRange": true, "IncompleteBody": true, "MalformedXML": true,
	"ExpiredToken": true, "InvalidToken": true, "TokenRefreshRequired": true, "AccountProblem": true,
}

// classify builds the error of operation op. Only HEAD (op "stat") may
// answer a bare 403 without an S3 error code: elsewhere that is a server
// that is not S3.
func (s *S3) classify(ctx context.Context, op string, err error) *s3Error {
	e := &s3Error{errs: []error{err}}
	if cerr := ctx.Err(); cerr != nil {
		if !errors.Is(err, cerr) {
			e.errs = append(e.errs, cerr)
		}
		e.msg = cerr.Error()
		return e
	}
	if r, ok := egress.IsRefused(err); ok {
		e.msg = r.Error()
		return e
	}
	switch code := apiCode(err); {
	// versitygw in single-account mode answers XAdminUserNotFound for an
	// unknown access key.
	case code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" || code == "XAdminUserNotFound":
		e.kind = ErrS3BadCredentials
	case code == "NoSuchBucket":
		e.kind = ErrS3NoBucket
	case code == "AccessDenied" || code == "AllAccessDisabled" || op == "stat" && httpStatus(err) == http.StatusForbidden:
		e.kind = ErrS3Denied
	case unreachable(err):
		e.kind = ErrS3Unreachable
	case s3Codes[code]:
		e.msg = fmt.Sprintf("the S3 server answered %s (HTTP %d)", code, httpStatus(err))
	default:
		e.kind = ErrS3NotS3
		if st := httpStatus(err); st != 0 && code != "" {
			e.msg = fmt.Sprintf("%s (HTTP %d)", strings.TrimPrefix(ErrS3NotS3.Error(), "storage: s3: "), st)
		}
	}
	if e.kind != nil {
		if e.msg == "" {
			e.msg = strings.TrimPrefix(e.kind.Error(), "storage: s3: ")
		}
		e.errs = append(e.errs, e.kind)
	}
	return e
}

// unreachable reports whether err means no connection to the endpoint.
func unreachable(err error) bool {
	var dns *net.DNSError
	var op *net.OpError
	var ne net.Error
	return errors.As(err, &dns) || errors.As(err, &op) && op.Op == "dial" ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.As(err, &ne) && ne.Timeout()
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// isNotFound reports whether err says the object is missing; HeadObject
// answers a bare 404 ("NotFound"), the others NoSuchKey.
func isNotFound(err error) bool {
	switch apiCode(err) {
	case "NoSuchKey", "NotFound":
		return true
	}
	return false
}
