package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/rahatback/rahatback/events"
	"github.com/rahatback/rahatback/pipeline"
	"github.com/rahatback/rahatback/sealed"
	"github.com/rahatback/rahatback/storage"
)

// storeEncrypted stores "hello" compressed with zstd and encrypted to
// recipient, and returns its reference (without a key).
func storeEncrypted(t *testing.T, local storage.Storage, recipient age.Recipient) events.ObjectRef {
	t.Helper()
	var buf bytes.Buffer
	digest := pipeline.NewDigestWriter(&buf)
	enc, err := age.Encrypt(digest, recipient)
	if err != nil {
		t.Fatal(err)
	}
	comp, err := pipeline.NewCompressor(enc, pipeline.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(comp, strings.Repeat("hello backup\n", 1000))
	comp.Close()
	enc.Close()
	key := "job/run.sql.zst.age"
	if _, err := local.Put(context.Background(), key, bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	return events.ObjectRef{Storage: events.StorageSpec{Type: "local"}, Key: key, Size: digest.Size(),
		Checksum: digest.Sum(), Compression: pipeline.Zstd}
}

func TestWrongKeyIsAnAuthenticationError(t *testing.T) {
	agentKey, _ := age.GenerateX25519Identity()
	jobKey, _ := age.GenerateX25519Identity()
	otherKey, _ := age.GenerateX25519Identity()
	local, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := &Handlers{Identity: agentKey, Local: local, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ref := storeEncrypted(t, local, jobKey.Recipient())

	withKey := func(id *age.X25519Identity) events.ObjectRef {
		r := ref
		s, err := sealed.Seal(agentKey.Recipient().String(), []byte(id.String()))
		if err != nil {
			t.Fatal(err)
		}
		r.SealedIdentity = s
		return r
	}

	t.Run("RightKey", func(t *testing.T) {
		r, _, closeAll, err := h.openChecked(context.Background(), withKey(jobKey))
		if err != nil {
			t.Fatal(err)
		}
		defer closeAll()
		got, err := io.ReadAll(r)
		if err != nil || !strings.HasPrefix(string(got), "hello backup\n") {
			t.Fatalf("decrypted %q, %v", got[:min(len(got), 20)], err)
		}
	})
	t.Run("WrongKey", func(t *testing.T) {
		_, _, _, err := h.openChecked(context.Background(), withKey(otherKey))
		if !errors.Is(err, ErrWrongKey) {
			t.Fatalf("wrong key gave %v, want ErrWrongKey", err)
		}
		v := &verification{h: h, cmd: events.VerifyCommand{Level: "BASIC", Object: withKey(otherKey)},
			res: &events.VerificationResult{VerificationMethod: "BASIC"}}
		if err := v.run(context.Background()); err != nil {
			t.Fatal(err)
		}
		res := v.finish()
		failed := false
		for _, c := range res.Checks {
			failed = failed || (c.Check == "decryption" && !c.Passed)
		}
		if res.OverallStatus != "FAILED" || !failed {
			t.Fatalf("verification with a wrong key: %+v", res)
		}
	})
	t.Run("NoKey", func(t *testing.T) {
		if _, _, _, err := h.openChecked(context.Background(), ref); err == nil || !strings.Contains(err.Error(), "no key") {
			t.Fatalf("encrypted backup without a key: %v", err)
		}
	})
	t.Run("KeyNotSealedToThisAgent", func(t *testing.T) {
		r := ref
		r.SealedIdentity, _ = sealed.Seal(otherKey.Recipient().String(), []byte(jobKey.String()))
		if _, _, _, err := h.openChecked(context.Background(), r); err == nil {
			t.Fatal("a key sealed to another agent opened")
		}
	})
}
