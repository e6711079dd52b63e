package chunkstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/rahatback/rahatback/drivefake"
	"github.com/rahatback/rahatback/pipeline"
	"github.com/rahatback/rahatback/storage"
	"github.com/rahatback/rahatback/testsupport"
)

// TestBackends: a chain written to and read from S3 (versitygw) and
// Google Drive (drivefake, Drive's wire protocol), the stores a job's
// chunk store lives in besides a local directory; deleting the full's
// packs breaks the incremental and the error names the full.
func TestBackends(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) storage.Storage{
		"s3": func(t *testing.T) storage.Storage {
			g := testsupport.StartVersityGW(t)
			s, err := storage.NewS3(storage.S3Config{Endpoint: g.Endpoint, Region: g.Region, Bucket: g.Bucket,
				AccessKeyID: g.AccessKey, SecretAccessKey: g.SecretKey, ForcePathStyle: true, Prefix: "chains"})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"google_drive": func(t *testing.T) storage.Storage {
			f := drivefake.New(drivefake.Options{})
			t.Cleanup(f.Close)
			d, err := storage.NewDrive(context.Background(), storage.DriveConfig{ClientID: f.ClientID(), ClientSecret: f.ClientSecret(),
				RefreshToken: f.IssueRefreshToken(), Endpoint: f.APIEndpoint(), TokenURL: f.TokenURL()})
			if err != nil {
				t.Fatal(err)
			}
			return d
		},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st := open(t)
			recipients, ids := keys(identity(t))
			const rows = 300_000 // ~13 MB of dump
			full := dump(rows, 7, nil)
			w := Write{Store: st, Key: "job/a.sql" + IndexSuffix, BackupID: "a", JobID: "job", Compression: pipeline.Zstd, Recipients: recipients}
			fix, _, err := w.Run(ctx, bytes.NewReader(full))
			if err != nil {
				t.Fatal(err)
			}
			changed := dump(rows, 7, func(i int) (string, bool) {
				if i >= 5000 && i < 5100 {
					return fmt.Sprintf("%d\tchanged\t0\t0\n", i), true
				}
				return "", false
			})
			inc := Write{Store: st, Key: "job/b.sql" + IndexSuffix, BackupID: "b", JobID: "job", Compression: pipeline.Zstd,
				Recipients: recipients, Parent: fix, Type: Incremental}
			iix, _, err := inc.Run(ctx, bytes.NewReader(changed))
			if err != nil {
				t.Fatal(err)
			}
			if iix.NewChunks*10 > len(iix.Chunks) {
				t.Errorf("the incremental stored %d of %d chunks", iix.NewChunks, len(iix.Chunks))
			}
			readBack(t, st, w.Key, full, ids)
			readBack(t, st, inc.Key, changed, ids)
			if err := Delete(ctx, st, w.Key, "a"); err != nil {
				t.Fatal(err)
			}
			ix, err := ReadIndex(ctx, st, inc.Key, "", ids...)
			if err != nil {
				t.Fatal(err)
			}
			_, err = ix.Read(ctx, st, Dir(inc.Key), io.Discard)
			var pe *PackError
			if !errors.As(err, &pe) || pe.Backup != "a" || !pe.Missing {
				t.Fatalf("read with the full deleted: %v", err)
			}
		})
	}
}
