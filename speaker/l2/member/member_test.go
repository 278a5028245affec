package member

import (
	"slices"
	"testing"
	"time"
)

// waitFor polls cond every 5ms for at most timeout and returns how long it
// took to hold, or fails.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v", what, timeout)
	return 0
}

func start(t *testing.T, name string, key []byte) *Cluster {
	t.Helper()
	c, err := New(Options{Name: name, BindAddr: "127.0.0.1", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"no name", Options{Key: []byte("0123456789abcdef")}},
		{"short key", Options{Name: "a", Key: []byte("short")}},
		{"no key", Options{Name: "a"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.BindAddr = "127.0.0.1"
			if c, err := New(tc.opts); err == nil {
				_ = c.Close()
				t.Fatal("New accepted it")
			}
		})
	}
}

func TestCluster(t *testing.T) {
	key := []byte("zerohop-test-key-from-a-secret")
	a := start(t, "node-a", key)
	b := start(t, "node-b", key)
	c := start(t, "node-c", key)
	for _, m := range []*Cluster{b, c} {
		if _, err := m.Join([]string{a.Addr()}); err != nil {
			t.Fatal(err)
		}
	}
	all := []string{"node-a", "node-b", "node-c"}
	for _, m := range []*Cluster{a, b, c} {
		waitFor(t, 5*time.Second, "all three see each other", func() bool {
			return slices.Equal(m.Members(), all)
		})
		m.SetExpected(all)
		if !m.HasMajority() {
			t.Fatal("majority lost with every member alive")
		}
	}

	t.Run("key mismatch not admitted", func(t *testing.T) {
		intruder := start(t, "node-x", []byte("some-other-key-entirely"))
		if _, err := intruder.Join([]string{a.Addr()}); err == nil {
			t.Error("join with the wrong key succeeded")
		}
		// Give gossip time to spread it, if it had got in at all.
		time.Sleep(500 * time.Millisecond)
		for _, m := range []*Cluster{a, b, c} {
			if got := m.Members(); !slices.Equal(got, all) {
				t.Errorf("members = %v, want %v", got, all)
			}
		}
		if got := intruder.Members(); !slices.Equal(got, []string{"node-x"}) {
			t.Errorf("intruder sees %v", got)
		}
	})

	t.Run("not ready leaves the election", func(t *testing.T) {
		if err := b.SetReady(false, time.Second); err != nil {
			t.Fatal(err)
		}
		d := waitFor(t, 3*time.Second, "node-b not ready seen by node-a", func() bool {
			return slices.Equal(a.Members(), []string{"node-a", "node-c"})
		})
		t.Logf("readiness change seen in %v", d)
		if !a.HasMajority() {
			t.Error("a not-ready member must still count for the majority")
		}
		if err := b.SetReady(true, time.Second); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 3*time.Second, "node-b ready again", func() bool {
			return slices.Equal(a.Members(), all)
		})
	})

	t.Run("dead member detected", func(t *testing.T) {
		// Drain stale signals so the one after the death is seen.
		select {
		case <-a.Changes():
		default:
		}
		died := time.Now()
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		var gone [2]time.Duration
		for i, m := range []*Cluster{a, b} {
			waitFor(t, 10*time.Second, "node-c seen dead", func() bool {
				return !slices.Contains(m.Members(), "node-c")
			})
			gone[i] = time.Since(died)
		}
		t.Logf("crashed member gone from node-a after %v, node-b after %v (probe 200ms, timeout 100ms, suspicion mult 2)", gone[0], gone[1])
		select {
		case <-a.Changes():
		default:
			t.Error("no change signalled for the death")
		}
		if !a.HasMajority() {
			t.Error("2 of 3 alive is a majority")
		}
	})

	t.Run("majority lost", func(t *testing.T) {
		died := time.Now()
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		d := waitFor(t, 10*time.Second, "node-a loses the majority", func() bool {
			return !a.HasMajority()
		})
		t.Logf("majority lost %v after the second crash", time.Since(died).Round(time.Millisecond))
		_ = d
		if got := a.Members(); !slices.Equal(got, []string{"node-a"}) {
			t.Errorf("members = %v", got)
		}
	})
}

func TestLeaveIsImmediate(t *testing.T) {
	key := []byte("zerohop-test-key-from-a-secret")
	a := start(t, "node-a", key)
	b := start(t, "node-b", key)
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "two members", func() bool { return len(a.Members()) == 2 })
	left := time.Now()
	if err := b.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "node-b gone", func() bool { return len(a.Members()) == 1 })
	t.Logf("graceful leave seen after %v", time.Since(left).Round(time.Millisecond))
}

func TestParseLogLine(t *testing.T) {
	tests := []struct {
		line       string
		v          int
		level, msg string
	}{
		{"[DEBUG] memberlist: Stream connection from=10.0.0.2:40000\n", 4, "DEBUG", "Stream connection from=10.0.0.2:40000"},
		{"[INFO] memberlist: Suspect n2 has failed, no acks received\n", 4, "INFO", "Suspect n2 has failed, no acks received"},
		{"[WARN] memberlist: Was able to connect to n2 over TCP but UDP probes failed\n", 2, "WARN", "Was able to connect to n2 over TCP but UDP probes failed"},
		{"[ERR] memberlist: Failed to send ping: write: connection refused\n", 2, "ERR", "Failed to send ping: write: connection refused"},
		{"no level at all", 4, "", "no level at all"},
	}
	for _, tc := range tests {
		v, level, msg := parseLogLine(tc.line)
		if v != tc.v || level != tc.level || msg != tc.msg {
			t.Errorf("parseLogLine(%q) = %d, %q, %q; want %d, %q, %q", tc.line, v, level, msg, tc.v, tc.level, tc.msg)
		}
	}
}

func TestMajority(t *testing.T) {
	for _, tc := range []struct {
		name            string
		expected, alive []string
		want            bool
	}{
		{"none expected", nil, []string{"a"}, true},
		{"all alive", []string{"a", "b", "c"}, []string{"a", "b", "c"}, true},
		{"two of three", []string{"a", "b", "c"}, []string{"a", "c"}, true},
		{"one of three", []string{"a", "b", "c"}, []string{"a"}, false},
		{"half is not a majority", []string{"a", "b", "c", "d"}, []string{"a", "b"}, false},
		// c has not written its SpeakerStatus yet when a read them, and b
		// dies: a and c are two live of three.
		{"live member not yet expected", []string{"a", "b"}, []string{"a", "c"}, true},
		{"live newcomers on the minority side", []string{"a", "b", "c", "d", "e"}, []string{"a", "b", "f"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := majority(tc.expected, tc.alive); got != tc.want {
				t.Errorf("majority(%v, %v) = %v, want %v", tc.expected, tc.alive, got, tc.want)
			}
		})
	}
}
