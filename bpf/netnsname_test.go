package bpf

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// netnsSuffix names this test process's namespaces: zh-<stem>-<pid>-<hex>.
// Every test deletes its namespaces in t.Cleanup, which runs when it
// passes, fails or calls Fatal; a process killed before its cleanups ran
// (a -timeout panic, a signal, a session that ends) cannot, so the pid in
// the name lets the next run find and delete what a dead process left.
func netnsSuffix() string {
	sweepDeadNetns.Do(sweepNetns)
	var r [3]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("%d-%s", os.Getpid(), hex.EncodeToString(r[:]))
}

var (
	sweepDeadNetns sync.Once
	// Only names with a pid: a name without one may be a running test's
	// from an older checkout, and nothing tells it is abandoned.
	deadNetnsName = regexp.MustCompile(`^zh-(bench|ct|xo|insp|cli|node|pa|pb|pc|pd|ccli|crt|cna|cnb|cpod)-([0-9]+)-[0-9a-f]{6}$`)
)

// sweepNetns deletes the namespaces of these tests whose process is gone
// and in which nothing runs.
func sweepNetns() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		m := deadNetnsName.FindStringSubmatch(f[0])
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[2])
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		if pids, err := exec.Command("ip", "netns", "pids", f[0]).Output(); err != nil || len(strings.TrimSpace(string(pids))) > 0 {
			continue
		}
		_ = exec.Command("ip", "netns", "del", f[0]).Run()
	}
}
