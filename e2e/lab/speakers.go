package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Speakers runs `zerohop speaker` processes on the lab's nodes for one
// test, as the DaemonSet would, and ends them when the test ends; if it
// failed, the tails of their logs are printed.
type Speakers struct {
	t      testing.TB
	l      *Lab
	bin    string
	ns     string
	args   []string
	env    []string
	logDir string

	mu    sync.Mutex
	procs map[int]*exec.Cmd
}

// Speakers prepares speakers running bin with speaker namespace ns and
// the extra args and environment given (see StartSpeaker).
func (l *Lab) Speakers(t testing.TB, bin, ns string, args, env []string) *Speakers {
	s := &Speakers{t: t, l: l, bin: bin, ns: ns, args: args, env: env, logDir: t.TempDir(), procs: map[int]*exec.Cmd{}}
	t.Cleanup(func() {
		for i := 1; i <= l.Nodes(); i++ {
			s.Stop(i)
		}
		if t.Failed() {
			s.LogTails("failed")
		}
	})
	return s
}

// LogPath is node i's speaker log.
func (s *Speakers) LogPath(i int) string {
	return filepath.Join(s.logDir, fmt.Sprintf("speaker-node%d.log", i))
}

// Start runs node i's speaker.
func (s *Speakers) Start(i int) {
	s.t.Helper()
	cmd, err := s.l.StartSpeaker(s.bin, i, s.ns, s.LogPath(i), s.args, s.env)
	if err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.procs[i] = cmd
	s.mu.Unlock()
}

func (s *Speakers) take(i int) *exec.Cmd {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := s.procs[i]
	delete(s.procs, i)
	return cmd
}

// Kill ends node i's speaker with SIGKILL: a crash, as far as anyone can
// tell.
func (s *Speakers) Kill(i int) {
	if cmd := s.take(i); cmd != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

// Stop ends node i's speaker as Kubernetes would: SIGTERM, then SIGKILL
// after 10 s. Its pinned datapath stays; the lab's teardown removes it.
func (s *Speakers) Stop(i int) {
	cmd := s.take(i)
	if cmd == nil {
		return
	}
	StopCommand(cmd, os.Interrupt)
}

// StopCommand ends a started process: sig, then SIGKILL if it has not
// exited within 10 s; it returns once the process is reaped.
func StopCommand(cmd *exec.Cmd, sig os.Signal) {
	_ = cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// LogTails prints the last 4 KB of every node's speaker log.
func (s *Speakers) LogTails(why string) {
	for i := 1; i <= s.l.Nodes(); i++ {
		b, _ := os.ReadFile(s.LogPath(i))
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		s.t.Logf("%s: speaker node%d log (tail):\n%s", why, i, b)
	}
}

// Eventually polls cond every 10 ms for at most d and fails t with what
// and cond's last word if it never holds.
func Eventually(t testing.TB, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, got := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last: %s", d, what, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
