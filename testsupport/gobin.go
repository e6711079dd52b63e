package testsupport

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// goBin is one tool installed by goInstalled; its mutex serialises the
// callers of this process, and path is set once the binary is in place.
type goBin struct {
	sync.Mutex
	path string
}

// goBins maps "module@version" to its *goBin.
var goBins sync.Map

// goInstalled returns the path of the binary name built from module (the
// package path given to `go install`) at version, installing it on first
// use from the Go module proxy (as GOPROXY says) into
// <user cache dir>/rahatback/<name>-<version>/<name> (the temporary
// directory when there is no user cache directory). A file lock there makes
// concurrent test processes wait for one install; the binary is built
// beside and renamed into place, so a killed install never leaves a
// truncated one. The install runs outside any module or workspace (GOWORK
// off, no VCS stamping) and is given 15 minutes. A failure is not cached:
// the next call tries again. Errors are prefixed with name.
func goInstalled(name, module, version string) (string, error) {
	v, _ := goBins.LoadOrStore(module+"@"+version, &goBin{})
	b := v.(*goBin)
	b.Lock()
	defer b.Unlock()
	if b.path != "" {
		return b.path, nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "rahatback", name+"-"+version)
	bin := filepath.Join(dir, name)
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() {
		b.path = bin
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	defer lock.Close() // releases the lock
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("%s: lock: %w", name, err)
	}
	if _, err := os.Stat(bin); err == nil { // another process installed it meanwhile
		b.path = bin
		return bin, nil
	}
	tmp, err := os.MkdirTemp(dir, ".install-")
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", module+"@"+version)
	cmd.Dir = tmp // outside any module or workspace
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOWORK=off", "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s: go install %s@%s: %w\n%s", name, module, version, err, out)
	}
	if err := os.Rename(filepath.Join(tmp, name), bin); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	b.path = bin
	return bin, nil
}
