// Package version reports the build's version.
package version

import "runtime/debug"

// override is set at link time: -ldflags "-X github.com/rahatback/rahatback/version.override=v1.2.3".
var override string

// String is the release version when set at link time, else the module
// version or VCS revision recorded by the Go toolchain, else "dev".
func String() string {
	if override != "" {
		return override
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "dev-" + s.Value[:12]
		}
	}
	return "dev"
}
