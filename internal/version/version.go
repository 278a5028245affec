// Package version reports which build of zerohop is running.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is set at build time with
// -ldflags "-X github.com/zerohop/zerohop/internal/version.Version=v1.2.3".
// Without it, the VCS revision recorded by the go command is used.
var Version = ""

// String returns the version, the commit it was built from and the Go
// version, e.g. "v0.1.0 (commit 1a2b3c4, go1.26.8 linux/amd64)".
func String() string {
	v, commit, dirty := Version, "unknown", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
				if len(commit) > 12 {
					commit = commit[:12]
				}
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	if v == "" {
		v = "v0.0.0-dev"
	}
	if dirty {
		commit += "-dirty"
	}
	return fmt.Sprintf("%s (commit %s, %s %s/%s)", v, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
