package drivefake

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// call does one request to the fake with a bearer token and returns the
// response with its body read.
func call(t *testing.T, method, u, token string, hdr map[string]string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	// Go's client follows 308 like a redirect; the upload protocol does not.
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, b
}

// accessToken runs the refresh_token grant with the client in the form.
func accessToken(t *testing.T, s *Server) string {
	t.Helper()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {s.IssueRefreshToken()},
		"client_id": {s.ClientID()}, "client_secret": {s.ClientSecret()}}
	res, err := http.PostForm(s.TokenURL(), form)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.NewDecoder(res.Body).Decode(&tok); err != nil || res.StatusCode != 200 || tok.AccessToken == "" || tok.TokenType != "Bearer" || tok.ExpiresIn <= 0 {
		t.Fatalf("token: status %d, %+v, %v", res.StatusCode, tok, err)
	}
	return tok.AccessToken
}

func TestFakeResumableProtocol(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	tok := accessToken(t, s)
	data := bytes.Repeat([]byte("0123456789abcdef"), (2*MinChunk+1000)/16)

	// Start a session: metadata in, Location out.
	meta := []byte(`{"name":"a.bin","appProperties":{"k":"v"}}`)
	res, _ := call(t, "POST", s.URL+"/upload/drive/v3/files?uploadType=resumable&fields=id,name,size,appProperties,md5Checksum", tok,
		map[string]string{"Content-Type": "application/json; charset=UTF-8", "X-Upload-Content-Type": "application/x-test"}, meta)
	loc := res.Header.Get("Location")
	if res.StatusCode != 200 || !strings.Contains(loc, "upload_id=") {
		t.Fatalf("init: %d Location %q", res.StatusCode, loc)
	}
	if st := s.Stats(); st.UploadSessions != 1 || st.OpenSessions != 1 {
		t.Fatalf("stats after init: %+v", st)
	}

	// First chunk, plain 308 with the persisted range.
	res, _ = call(t, "PUT", loc, tok, map[string]string{"Content-Range": fmt.Sprintf("bytes 0-%d/*", MinChunk-1)}, data[:MinChunk])
	if res.StatusCode != http.StatusPermanentRedirect || res.Header.Get("Range") != fmt.Sprintf("bytes=0-%d", MinChunk-1) {
		t.Fatalf("chunk 1: %d Range %q", res.StatusCode, res.Header.Get("Range"))
	}
	// The same chunk again (a retry after a lost answer) changes nothing.
	res, _ = call(t, "PUT", loc, tok, map[string]string{"Content-Range": fmt.Sprintf("bytes 0-%d/*", MinChunk-1)}, data[:MinChunk])
	if res.StatusCode != http.StatusPermanentRedirect || res.Header.Get("Range") != fmt.Sprintf("bytes=0-%d", MinChunk-1) {
		t.Fatalf("chunk 1 again: %d Range %q", res.StatusCode, res.Header.Get("Range"))
	}
	// A non-final chunk that does not end on 256 KiB is refused.
	res, _ = call(t, "PUT", loc, tok, map[string]string{"Content-Range": fmt.Sprintf("bytes %d-%d/*", MinChunk, MinChunk+99)}, data[MinChunk:MinChunk+100])
	if res.StatusCode != 400 {
		t.Fatalf("ragged chunk: %d, want 400", res.StatusCode)
	}
	// A chunk leaving a gap is refused.
	res, _ = call(t, "PUT", loc, tok, map[string]string{"Content-Range": fmt.Sprintf("bytes %d-%d/*", 2*MinChunk, 3*MinChunk-1)}, data[:MinChunk])
	if res.StatusCode != 400 {
		t.Fatalf("gap: %d, want 400", res.StatusCode)
	}
	// Second chunk the way the client library sends it: POST and
	// X-GUploader-No-308, answered 200 with the override header.
	res, _ = call(t, "POST", loc, tok, map[string]string{"Content-Range": fmt.Sprintf("bytes %d-%d/*", MinChunk, 2*MinChunk-1), "X-GUploader-No-308": "yes"}, data[MinChunk:2*MinChunk])
	if res.StatusCode != 200 || res.Header.Get("X-HTTP-Status-Code-Override") != "308" || res.Header.Get("Range") != fmt.Sprintf("bytes=0-%d", 2*MinChunk-1) {
		t.Fatalf("chunk 2: %d override %q Range %q", res.StatusCode, res.Header.Get("X-HTTP-Status-Code-Override"), res.Header.Get("Range"))
	}
	// Status query.
	res, _ = call(t, "PUT", loc, tok, map[string]string{"Content-Range": "bytes */*"}, nil)
	if res.StatusCode != http.StatusPermanentRedirect || res.Header.Get("Range") != fmt.Sprintf("bytes=0-%d", 2*MinChunk-1) {
		t.Fatalf("status query: %d Range %q", res.StatusCode, res.Header.Get("Range"))
	}
	if n := len(s.Files()); n != 0 {
		t.Fatalf("%d files before the last chunk, want 0", n)
	}
	// A failed chunk stores nothing.
	s.FailNextChunks(1, 503)
	last := data[2*MinChunk:]
	cr := fmt.Sprintf("bytes %d-%d/%d", 2*MinChunk, len(data)-1, len(data))
	res, _ = call(t, "PUT", loc, tok, map[string]string{"Content-Range": cr}, last)
	if res.StatusCode != 503 || len(s.Files()) != 0 {
		t.Fatalf("failed chunk: %d, %d files", res.StatusCode, len(s.Files()))
	}
	// Final chunk: the file, with the fields asked for at the start.
	res, body := call(t, "PUT", loc, tok, map[string]string{"Content-Range": cr}, last)
	if res.StatusCode != 200 {
		t.Fatalf("final chunk: %d %s", res.StatusCode, body)
	}
	var f map[string]any
	if err := json.Unmarshal(body, &f); err != nil {
		t.Fatal(err)
	}
	if f["name"] != "a.bin" || f["size"] != fmt.Sprint(len(data)) || f["md5Checksum"] == "" || f["mimeType"] != nil ||
		f["appProperties"].(map[string]any)["k"] != "v" {
		t.Fatalf("final chunk answered %s", body)
	}
	files := s.Files()
	if len(files) != 1 || !bytes.Equal(files[0].Content, data) || files[0].MimeType != "application/x-test" ||
		len(files[0].Parents) != 1 || files[0].Parents[0] != s.RootID() {
		t.Fatalf("stored %d files, %+v", len(files), files)
	}
	// The completed session answers with the file again.
	res, body2 := call(t, "PUT", loc, tok, map[string]string{"Content-Range": "bytes */*"}, nil)
	if res.StatusCode != 200 || !bytes.Equal(body, body2) {
		t.Fatalf("after completion: %d %s", res.StatusCode, body2)
	}
	// Download with a range.
	res, got := call(t, "GET", s.APIEndpoint()+"files/"+files[0].ID+"?alt=media", tok, map[string]string{"Range": "bytes=100-"}, nil)
	if res.StatusCode != 206 || !bytes.Equal(got, data[100:]) || res.Header.Get("Content-Range") != fmt.Sprintf("bytes 100-%d/%d", len(data)-1, len(data)) {
		t.Fatalf("range download: %d %q, %d bytes", res.StatusCode, res.Header.Get("Content-Range"), len(got))
	}
	res, _ = call(t, "GET", s.APIEndpoint()+"files/"+files[0].ID+"?alt=media", tok, map[string]string{"Range": fmt.Sprintf("bytes=%d-", len(data))}, nil)
	if res.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("range past the end: %d, want 416", res.StatusCode)
	}
	st := s.Stats()
	if st.UploadSessions != 1 || st.OpenSessions != 0 || st.ChunkRequests != 9 || st.Intercepted != 1 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestFakeFinalEmptyChunkAndCancel(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	tok := accessToken(t, s)
	start := func() string {
		res, _ := call(t, "POST", s.URL+"/upload/drive/v3/files?uploadType=resumable", tok, nil, []byte(`{"name":"b"}`))
		return res.Header.Get("Location")
	}
	// Data of exactly one chunk, then "bytes */total" closes the upload.
	loc := start()
	data := bytes.Repeat([]byte{7}, MinChunk)
	call(t, "PUT", loc, tok, map[string]string{"Content-Range": fmt.Sprintf("bytes 0-%d/*", MinChunk-1)}, data)
	res, body := call(t, "PUT", loc, tok, map[string]string{"Content-Range": fmt.Sprintf("bytes */%d", MinChunk)}, nil)
	if res.StatusCode != 200 || len(s.Files()) != 1 || !bytes.Equal(s.Files()[0].Content, data) {
		t.Fatalf("close with */total: %d %s", res.StatusCode, body)
	}
	// A cancelled session keeps nothing and refuses chunks.
	loc = start()
	call(t, "PUT", loc, tok, map[string]string{"Content-Range": fmt.Sprintf("bytes 0-%d/*", MinChunk-1)}, data)
	if res, _ := call(t, "DELETE", loc, tok, nil, nil); res.StatusCode != 499 {
		t.Fatalf("cancel: %d, want 499", res.StatusCode)
	}
	if res, _ := call(t, "PUT", loc, tok, map[string]string{"Content-Range": "bytes 0-0/1"}, []byte{1}); res.StatusCode != 404 {
		t.Fatalf("chunk after cancel: %d, want 404", res.StatusCode)
	}
	if n := len(s.Files()); n != 1 {
		t.Fatalf("%d files, want 1", n)
	}
}

func TestFakeRefusesBadRequests(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	tok := accessToken(t, s)
	api := s.APIEndpoint()
	for _, tc := range []struct {
		name, method, url, token string
		body                     string
		want                     int
	}{
		{"NoToken", "GET", api + "files", "", "", 401},
		{"BadToken", "GET", api + "files", "nope", "", 401},
		{"UnknownQuery", "GET", api + "files?q=" + url.QueryEscape("name contains 'x'"), tok, "", 400},
		{"Or", "GET", api + "files?q=" + url.QueryEscape("trashed = false or trashed = true"), tok, "", 400},
		{"UnknownField", "GET", api + "files?fields=files(owners)", tok, "", 400},
		{"UnknownParam", "GET", api + "files?orderBy=name", tok, "", 400},
		{"PageSize", "GET", api + "files?pageSize=1001", tok, "", 400},
		{"MissingFile", "GET", api + "files/nope", tok, "", 404},
		{"MissingParent", "POST", api + "files", tok, `{"name":"f","mimeType":"` + FolderMimeType + `","parents":["nope"]}`, 404},
		{"UnknownBodyField", "POST", api + "files", tok, `{"name":"f","mimeType":"` + FolderMimeType + `","starred":true}`, 400},
		{"LongProperty", "POST", api + "files", tok, `{"name":"f","mimeType":"` + FolderMimeType + `","appProperties":{"k":"` + strings.Repeat("v", MaxPropertyBytes) + `"}}`, 400},
		{"NotImplemented", "GET", s.URL + "/drive/v3/about", tok, "", 501},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, body := call(t, tc.method, tc.url, tc.token, map[string]string{"Content-Type": "application/json"}, []byte(tc.body))
			if res.StatusCode != tc.want {
				t.Fatalf("%d %s, want %d", res.StatusCode, body, tc.want)
			}
			var e struct {
				Error struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != tc.want || e.Error.Message == "" {
				t.Fatalf("error body %s", body)
			}
		})
	}
}

func TestFakeListQueryAndPages(t *testing.T) {
	s := New(Options{MaxPageSize: 2})
	defer s.Close()
	tok := accessToken(t, s)
	api := s.APIEndpoint()
	res, body := call(t, "POST", api+"files?fields=id", tok, nil, []byte(`{"name":"dir","mimeType":"`+FolderMimeType+`"}`))
	var dir struct{ ID string }
	if err := json.Unmarshal(body, &dir); err != nil || res.StatusCode != 200 || dir.ID == "" {
		t.Fatalf("create folder: %d %s", res.StatusCode, body)
	}
	for i := range 5 {
		b := fmt.Sprintf("--B\r\nContent-Type: application/json\r\n\r\n{\"name\":\"f%d\",\"parents\":[%q],\"appProperties\":{\"n\":\"%d\"}}\r\n--B\r\nContent-Type: text/plain\r\n\r\nhello\r\n--B--\r\n", i, dir.ID, i%2)
		res, body := call(t, "POST", s.URL+"/upload/drive/v3/files?uploadType=multipart", tok, map[string]string{"Content-Type": "multipart/related; boundary=B"}, []byte(b))
		if res.StatusCode != 200 {
			t.Fatalf("multipart: %d %s", res.StatusCode, body)
		}
	}
	q := url.QueryEscape(fmt.Sprintf("'%s' in parents and trashed = false and appProperties has { key='n' and value='1' }", dir.ID))
	var names []string
	token := ""
	pages := 0
	for {
		_, body := call(t, "GET", api+"files?fields=nextPageToken,files(name,size)&pageSize=1000&q="+q+"&pageToken="+token, tok, nil, nil)
		var l struct {
			NextPageToken string
			Files         []struct{ Name, Size string }
		}
		if err := json.Unmarshal(body, &l); err != nil {
			t.Fatal(err)
		}
		pages++
		for _, f := range l.Files {
			if f.Size != "5" {
				t.Fatalf("size %q, want \"5\"", f.Size)
			}
			names = append(names, f.Name)
		}
		if token = l.NextPageToken; token == "" {
			break
		}
	}
	if len(names) != 2 || pages != 1 {
		t.Fatalf("names %q in %d pages", names, pages)
	}
	_, body = call(t, "GET", api+"files?q="+url.QueryEscape(fmt.Sprintf("'%s' in parents", dir.ID)), tok, nil, nil)
	var l struct {
		NextPageToken string
		Files         []map[string]any
	}
	json.Unmarshal(body, &l)
	if len(l.Files) != 2 || l.NextPageToken == "" || len(l.Files[0]) != 4 {
		t.Fatalf("default fields and page cap: %s", body)
	}
}

func TestFakeOAuthCodeFlow(t *testing.T) {
	s := New(Options{RedirectURIs: []string{"http://app.example/cb"}})
	defer s.Close()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	auth := s.AuthURL() + "?" + url.Values{"client_id": {s.ClientID()}, "redirect_uri": {"http://app.example/cb"},
		"response_type": {"code"}, "scope": {ScopeDriveFile}, "state": {"xyz"}, "access_type": {"offline"}}.Encode()
	res, err := c.Get(auth)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	back, _ := url.Parse(res.Header.Get("Location"))
	if res.StatusCode != 302 || back.Host != "app.example" || back.Query().Get("state") != "xyz" || back.Query().Get("code") == "" {
		t.Fatalf("auth: %d %q", res.StatusCode, res.Header.Get("Location"))
	}
	exchange := func(code, redirect string) (int, map[string]any) {
		req, _ := http.NewRequest("POST", s.TokenURL(), strings.NewReader(url.Values{"grant_type": {"authorization_code"},
			"code": {code}, "redirect_uri": {redirect}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(s.ClientID(), s.ClientSecret())
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var m map[string]any
		json.NewDecoder(res.Body).Decode(&m)
		return res.StatusCode, m
	}
	code := back.Query().Get("code")
	if st, m := exchange(code, "http://other.example/cb"); st != 400 || m["error"] != "redirect_uri_mismatch" {
		t.Fatalf("wrong redirect_uri: %d %v", st, m)
	}
	// The refused attempt used the code up.
	if st, m := exchange(code, "http://app.example/cb"); st != 400 || m["error"] != "invalid_grant" {
		t.Fatalf("reused code: %d %v", st, m)
	}
	res, _ = c.Get(auth)
	res.Body.Close()
	back, _ = url.Parse(res.Header.Get("Location"))
	if st, m := exchange(back.Query().Get("code"), "http://app.example/cb"); st != 200 || m["refresh_token"] == nil || m["access_token"] == nil {
		t.Fatalf("exchange: %d %v", st, m)
	}
	s.DenyNextConsent()
	res, _ = c.Get(auth)
	res.Body.Close()
	back, _ = url.Parse(res.Header.Get("Location"))
	if back.Query().Get("error") != "access_denied" || back.Query().Get("state") != "xyz" || back.Query().Get("code") != "" {
		t.Fatalf("denied consent: %q", res.Header.Get("Location"))
	}
	res, _ = c.Get(strings.Replace(auth, "app.example", "evil.example", 1))
	res.Body.Close()
	if res.StatusCode != 400 {
		t.Fatalf("unregistered redirect_uri: %d, want 400", res.StatusCode)
	}
}
