package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/rahatback/rahatback/egress"
	"github.com/rahatback/rahatback/handlers/api"
	"github.com/rahatback/rahatback/runs"
	"github.com/rahatback/rahatback/secrets"
)

// TestStorageEndpointAllowance: a private endpoint is saved only under the
// operator's allowance; a control plane started later without it lists
// that storage as refused (for its log at start); a storage moving to AWS
// must send its secret again, in AWS's format.
func TestStorageEndpointAllowance(t *testing.T) {
	t.Parallel()
	allow, err := egress.New([]string{"10.0.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, func(o *api.Opts) { o.Egress = allow })
	tok := s.register(t, "allowance@example.com").Tokens.Access.Token
	body := map[string]any{"name": "lan minio", "storageType": "s3", "s3AccessKeyId": "minioadmin", "s3SecretAccessKey": "minio-secret",
		"s3Bucket": "b", "s3Endpoint": "http://10.0.0.5:9000"}
	r := s.do(t, "POST", "/v1/cloud-storage", tok, body)
	wantCode(t, r, http.StatusCreated)
	var cs struct{ ID string }
	r.JSON(t, &cs)
	body["s3Endpoint"] = "http://10.0.1.5:9000"
	r = s.do(t, "POST", "/v1/cloud-storage", tok, body)
	wantCode(t, r, http.StatusBadRequest)
	if !strings.Contains(string(r.Body), "10.0.1.5 is a private address") {
		t.Fatalf("outside the allowance: %s", r.Body)
	}

	strict, err := runs.New(runs.Config{Pool: s.pool, Secrets: secrets.Box{V: s.vault}, NC: s.nats.NC, JS: s.nats.JS})
	if err != nil {
		t.Fatal(err)
	}
	refused, err := strict.RefusedStorages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(refused) != 1 || refused[0].ID.String() != cs.ID || !strings.Contains(refused[0].Reason, "private address") {
		t.Fatalf("refused storages under the default policy: %+v", refused)
	}

	r = s.do(t, "PATCH", "/v1/cloud-storage/"+cs.ID, tok, map[string]any{"s3Endpoint": "", "s3Region": "eu-west-1"})
	wantCode(t, r, http.StatusBadRequest)
	if !strings.Contains(string(r.Body), "s3SecretAccessKey") || !strings.Contains(string(r.Body), "s3AccessKeyId") {
		t.Fatalf("moving to AWS with another store's keys: %s", r.Body)
	}
}
