package agent

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"filippo.io/age"

	"github.com/rahatback/rahatback/chunkstore"
	agenthandlers "github.com/rahatback/rahatback/handlers/agent"
	"github.com/rahatback/rahatback/pipeline"
	"github.com/rahatback/rahatback/storage"
)

const restoreUsage = `usage: rahatback-agent restore --from <dir | s3://bucket[/prefix]> --backup <id | key> [--key FILE] [--out FILE]

Rebuilds one backup without the control plane and writes its dump, decrypted
and decompressed, to --out (or stdout): a chunked (incremental or
differential) backup from its chain, or a single-object backup. Every chunk
is checked against its id and the dump against the SHA-256 its index and
manifest record, in the same storage: this detects damage, not someone with
write access to the storage replacing the backup. A non-zero exit status
means the output must not be used; with --out, the file appears only when
everything matched (prefer it to a pipe into psql, which would load a
truncated stream).

  --from     the storage: a local directory (the agent's backups directory), or
             s3://bucket[/prefix] with credentials in AWS_ACCESS_KEY_ID and
             AWS_SECRET_ACCESS_KEY, and --s3-endpoint, --s3-region,
             --s3-path-style for an S3-compatible store. Google Drive: copy the
             job's folder to a directory first (e.g. with rclone)
  --backup   the backup's id (its history id) or its storage key
  --key      for an encrypted backup, the job's key opened from its export
             (age -d -o job.key job.key.age), or any extra recipient's identity
             file
  --out      write the dump to this file (created only on success)
`

// offlineRestore is the restore command.
func offlineRestore(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rahatback-agent restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, restoreUsage) }
	from := fs.String("from", "", "local directory or s3://bucket[/prefix]")
	backup := fs.String("backup", "", "backup id or storage key")
	keyFile := fs.String("key", "", "age identity file for an encrypted backup")
	outFile := fs.String("out", "", "file for the dump, created only when every byte matched (default stdout)")
	endpoint := fs.String("s3-endpoint", "", "S3-compatible endpoint URL (default AWS)")
	region := fs.String("s3-region", "", "S3 region (default us-east-1 with an endpoint)")
	pathStyle := fs.Bool("s3-path-style", false, "address the bucket as <endpoint>/<bucket>")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *from == "" || *backup == "" {
		fs.Usage()
		return errors.New("--from and --backup are required")
	}
	st, err := openOffline(ctx, *from, *endpoint, *region, *pathStyle, getenv)
	if err != nil {
		return err
	}
	var ids []age.Identity
	if *keyFile != "" {
		f, err := os.Open(*keyFile)
		if err != nil {
			return err
		}
		ids, err = age.ParseIdentities(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("--key %s: %w", *keyFile, err)
		}
	}
	key, err := findBackup(ctx, st, *backup)
	if err != nil {
		return err
	}
	var m *pipeline.Manifest
	if rc, err := st.Get(ctx, key+pipeline.ManifestSuffix, 0); err == nil {
		data, rerr := io.ReadAll(io.LimitReader(rc, 64<<20))
		rc.Close()
		if rerr == nil {
			m, _ = pipeline.ParseManifest(data)
		}
	}
	checksum := ""
	if m != nil {
		checksum = m.Checksum
	} else {
		fmt.Fprintf(stderr, "warning: %s has no readable manifest; its bytes are checked against themselves only\n", key)
	}
	dst := stdout
	var tmp *os.File
	if *outFile != "" {
		if tmp, err = os.CreateTemp(filepath.Dir(*outFile), "."+filepath.Base(*outFile)+".partial-*"); err != nil {
			return err
		}
		defer func() {
			if tmp != nil {
				tmp.Close()
				os.Remove(tmp.Name())
			}
		}()
		dst = tmp
	}
	out := bufio.NewWriterSize(dst, 1<<20)
	var n int64
	if agenthandlers.IsChunked(key) {
		ix, err := chunkstore.ReadIndex(ctx, st, key, checksum, ids...)
		if errors.Is(err, chunkstore.ErrNoIdentity) {
			return errors.New("the backup is encrypted: give the job's key with --key")
		} else if err != nil {
			return err
		}
		if n, err = ix.Read(ctx, st, chunkstore.Dir(key), out); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "%s: %s backup of %d chunks from %d packs, %d bytes of dump, sha256 %s\n",
			key, ix.Type, len(ix.Chunks), len(ix.Packs), n, ix.SHA256)
	} else if n, err = readSingle(ctx, st, key, checksum, ids, out); err != nil {
		return err
	}
	if err := out.Flush(); err != nil {
		return err
	}
	if m != nil && m.RawSize != n {
		return fmt.Errorf("wrote %d bytes, but the manifest records a %d-byte dump", n, m.RawSize)
	}
	if tmp == nil {
		return nil
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), *outFile); err != nil {
		return err
	}
	tmp = nil
	return nil
}

// readSingle writes a single-object backup's dump: decrypted when its key
// ends in .age, decompressed by its extension, its stored bytes checked
// against checksum ("" skips it) at the end.
func readSingle(ctx context.Context, st storage.Storage, key, checksum string, ids []age.Identity, w io.Writer) (int64, error) {
	rc, err := st.Get(ctx, key, 0)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	h := sha256.New()
	var r io.Reader = io.TeeReader(rc, h)
	name := key
	if n, ok := strings.CutSuffix(name, ".age"); ok {
		if len(ids) == 0 {
			return 0, errors.New("the backup is encrypted: give the job's key with --key")
		}
		if r, err = age.Decrypt(r, ids...); err != nil {
			return 0, fmt.Errorf("decrypting %s: %w", key, err)
		}
		name = n
	}
	compression := pipeline.None
	switch path.Ext(name) {
	case ".zst":
		compression = pipeline.Zstd
	case ".gz":
		compression = pipeline.Gzip
	}
	dec, err := pipeline.NewDecompressor(r, compression)
	if err != nil {
		return 0, err
	}
	defer dec.Close()
	n, err := io.Copy(w, dec)
	if err != nil {
		return n, err
	}
	if _, err := io.Copy(io.Discard, io.TeeReader(rc, h)); err != nil {
		return n, err
	}
	if checksum != "" && hex.EncodeToString(h.Sum(nil)) != checksum {
		return n, fmt.Errorf("%s does not match the sha256 its manifest records: it was modified or damaged", key)
	}
	return n, nil
}

// openOffline opens --from.
func openOffline(ctx context.Context, from, endpoint, region string, pathStyle bool, getenv func(string) string) (storage.Storage, error) {
	rest, ok := strings.CutPrefix(from, "s3://")
	if !ok {
		if fi, err := os.Stat(from); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("--from %s is not a directory (or s3://bucket/prefix)", from)
		}
		return storage.NewLocal(from)
	}
	bucket, prefix, _ := strings.Cut(rest, "/")
	cfg := storage.S3Config{Endpoint: endpoint, Region: region, Bucket: bucket, Prefix: prefix, ForcePathStyle: pathStyle,
		AccessKeyID: getenv("AWS_ACCESS_KEY_ID"), SecretAccessKey: getenv("AWS_SECRET_ACCESS_KEY")}
	if cfg.AccessKeyID == "" || cfg.SecretAccessKey == "" {
		return nil, errors.New("reading S3 needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment")
	}
	return storage.Open(ctx, storage.Config{Type: "s3", S3: &cfg})
}

// findBackup is the storage key of backup: itself when it names an object,
// else the backup object (chunk index or single file) whose name holds
// that id.
func findBackup(ctx context.Context, st storage.Storage, backup string) (string, error) {
	if strings.Contains(backup, "/") {
		if _, err := st.Stat(ctx, backup); err != nil {
			return "", err
		}
		return backup, nil
	}
	objs, err := st.List(ctx, "")
	if err != nil {
		return "", err
	}
	var found []string
	for _, o := range objs {
		base := path.Base(o.Key)
		if strings.Contains(o.Key, "/packs/") || strings.HasSuffix(base, pipeline.ManifestSuffix) || !strings.Contains(base, "-"+backup+".") {
			continue
		}
		found = append(found, o.Key)
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no backup %s in this storage", backup)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("backup %s matches %d objects (%s); give its key", backup, len(found), strings.Join(found, ", "))
}
