package main

import (
	"bytes"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/zerohop/zerohop/speaker/bfd"
	"github.com/zerohop/zerohop/speaker/l2/member"
)

func TestVersionCommand(t *testing.T) {
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"version"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if !strings.HasPrefix(got, "zerohop v") || !strings.Contains(got, "commit ") {
		t.Fatalf("version output %q: want \"zerohop v... (commit ...\"", got)
	}
}

func TestUnknownCommandFails(t *testing.T) {
	root := newRootCommand()
	root.SetOut(&bytes.Buffer{})
	root.SetErr(&bytes.Buffer{})
	root.SetArgs([]string{"no-such-command"})
	if err := root.Execute(); err == nil {
		t.Fatal("unknown subcommand: want error")
	}
}

func TestLogFlags(t *testing.T) {
	tests := []struct {
		args []string
		want int
	}{
		{nil, 0},
		{[]string{"--v=1"}, 1},
		{[]string{"-v", "3"}, 3},
		{[]string{"--debug"}, 4},
		{[]string{"--debug", "--v=6"}, 6},
	}
	for _, tc := range tests {
		fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
		var lf logFlags
		lf.add(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if got := lf.verbosity(); got != tc.want {
			t.Errorf("%v: verbosity %d, want %d", tc.args, got, tc.want)
		}
	}
}

// klogLine is the header of klog's text format, the one format a zerohop
// process writes: severity, date, time, thread, file:line, quoted message.
var klogLine = regexp.MustCompile(`^[IWE]\d{4} \d{2}:\d{2}:\d{2}\.\d{6}\s+\d+ \S+:\d+\] "`)

// TestOneLogger sets up logging as the controller and the speaker do, at
// three verbosities, and logs through every API a zerohop process has: a
// BFD Manager and two memberlist members (each given the logger in its
// Options), klog (client-go), log/slog and the standard log package. The
// BFD debug line appears from --v=1, memberlist's from --debug, and every
// line is in klog's text format.
func TestOneLogger(t *testing.T) {
	tests := []struct {
		args                    []string
		wantBFD, wantMemberlist bool
	}{
		{nil, false, false},
		{[]string{"--v=1"}, true, false},
		{[]string{"--debug"}, true, true},
	}
	for _, tc := range tests {
		t.Run(strings.Join(append([]string{"args"}, tc.args...), " "), func(t *testing.T) {
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			var lf logFlags
			lf.add(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			var out syncBuffer
			l := setupLogging(&out, lf.verbosity())

			m := bfdManager(t, l.WithName("bfd"))
			if err := m.AddPeer(netip.MustParseAddr("127.0.0.2"), netip.Addr{}, bfd.DefaultProfile()); err != nil {
				t.Fatal(err)
			}
			m.Close()
			a := memberOn(t, "a", l.WithName("memberlist"))
			b := memberOn(t, "b", l.WithName("memberlist"))
			if _, err := b.Join([]string{a.Addr()}); err != nil {
				t.Fatal(err)
			}
			_ = a.Close()
			_ = b.Close()
			klog.Info("klog line")
			slog.Info("slog line")
			log.Print("log line")
			klog.Flush()

			text := out.String()
			if got := strings.Contains(text, "bfd: session added"); got != tc.wantBFD {
				t.Errorf("BFD debug line logged: %v, want %v", got, tc.wantBFD)
			}
			if got := strings.Contains(text, `logger="memberlist"`); got != tc.wantMemberlist {
				t.Errorf("memberlist line logged: %v, want %v", got, tc.wantMemberlist)
			}
			for _, want := range []string{`"klog line"`, `"slog line"`, `"log line"`} {
				if !strings.Contains(text, want) {
					t.Errorf("no %s in the log", want)
				}
			}
			for i, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
				if !klogLine.MatchString(line) {
					t.Errorf("line %d is not in klog's text format: %q", i+1, line)
				}
			}
			if t.Failed() || testing.Verbose() {
				t.Logf("log:\n%s", text)
			}
		})
	}
}

// bfdManager starts a BFD Manager on a free loopback port.
func bfdManager(t *testing.T, l logr.Logger) *bfd.Manager {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(c.LocalAddr().(*net.UDPAddr).Port)
	_ = c.Close()
	m, err := bfd.NewManager(bfd.ManagerOptions{ListenAddrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Port: port, Log: l})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// memberOn starts a memberlist member on a free loopback port.
func memberOn(t *testing.T, name string, l logr.Logger) *member.Cluster {
	t.Helper()
	c, err := member.New(member.Options{Name: name, BindAddr: "127.0.0.1", Key: []byte("0123456789abcdef"), Log: l})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// syncBuffer is a bytes.Buffer that goroutines may write to at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
