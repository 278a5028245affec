package lab

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// netnsDir is where ip-netns(8) keeps its namespace handles.
const netnsDir = "/run/netns"

// run runs a command and returns its stdout; the error carries stderr.
func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

// ipBatch runs ip(8) commands in namespace ns ("" = root) in one process.
func ipBatch(ctx context.Context, ns string, cmds []string) error {
	if len(cmds) == 0 {
		return nil
	}
	args := []string{"-batch", "-"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &errb, &errb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip -n %q batch: %w: %s", ns, err, strings.TrimSpace(errb.String()))
	}
	return nil
}

// nsExists reports whether a named network namespace exists.
func nsExists(name string) bool {
	_, err := os.Stat(filepath.Join(netnsDir, name))
	return err == nil
}

// listNetns returns the named network namespaces.
func listNetns() ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out, nil
}

// netnsPIDs lists processes whose network namespace is ns, by comparing
// namespace inodes (what `ip netns pids` does).
func netnsPIDs(ns string) ([]int, error) {
	var want unix.Stat_t
	if err := unix.Stat(filepath.Join(netnsDir, ns), &want); err != nil {
		return nil, fmt.Errorf("netns %s: %w", ns, err)
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, p := range procs {
		var pid int
		if _, err := fmt.Sscanf(p.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
			// Never ourselves: a thread that joined a lab namespace may be
			// the main thread, which is what /proc/self/ns/net shows.
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
			continue // gone, or a kernel thread
		}
		if st.Dev == want.Dev && st.Ino == want.Ino {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// InNetns runs fn on an OS thread that has joined network namespace ns.
// Sockets fn creates live in ns and stay there whatever thread later uses
// them. The thread returns to its original namespace afterwards; if that
// fails it stays locked, so the runtime retires it and no other goroutine
// ever runs in the foreign namespace.
//
// Restoring, rather than always letting the thread die, matters: a dying
// thread fires PR_SET_PDEATHSIG for every child that thread forked, and Go
// reuses idle threads for new locked goroutines.
func InNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("own netns: %w", err)
			return
		}
		defer func() { _ = orig.Close() }()
		f, err := os.Open(filepath.Join(netnsDir, ns))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns %s: %w", ns, err)
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		_ = f.Close()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		} // else: stay locked; the thread exits with this goroutine
		errc <- ferr
	}()
	return <-errc
}

// DialerIn returns a dial function whose sockets are created inside ns, for
// use with echo.Request or an http.Transport.
func DialerIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := InNetns(ns, func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// setSysctls writes /proc/sys/net values inside ns; /proc/sys/net shows the
// namespace of the thread that opens it.
func setSysctls(ns string, kv map[string]string) error {
	return InNetns(ns, func() error {
		for k, v := range kv {
			p := "/proc/sys/" + strings.ReplaceAll(k, ".", "/")
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				return fmt.Errorf("sysctl %s in %s: %w", k, ns, err)
			}
		}
		return nil
	})
}
