// Package member is the speakers' liveness layer for L2 mode: a memberlist
// (SWIM) cluster, encrypted, with probe timings tuned so a dead speaker is
// noticed in about a second rather than memberlist's LAN default of several.
// The live, ready members are the input of the owner election; a speaker
// that no longer sees a majority of the expected speakers must stop
// announcing, since it may be the one cut off.
package member

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/memberlist"
)

// Options configure a Cluster member. Zero durations take the defaults.
type Options struct {
	// Name is this node's name; election works on these names.
	Name string
	// BindAddr and BindPort are where gossip is heard (UDP and TCP).
	// BindPort 0 picks a free port (tests).
	BindAddr string
	BindPort int
	// AdvertiseAddr/Port are what other members dial; default: the bind
	// address and port.
	AdvertiseAddr string
	AdvertisePort int
	// Key is the shared secret (the bytes of a Secret's key). Any length
	// of at least 16 bytes; it is hashed to an AES-256 key so rotating the
	// Secret's contents never needs a particular length.
	Key []byte
	// ProbeInterval is how often a random member is probed. Default
	// 100ms: with the defaults below a dead member is declared dead 0.3–0.4
	// s after it stopped, which leaves the takeover (new owner, gratuitous
	// ARP, the router's neighbour entry) inside a second with margin.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a direct probe waits for its ack before
	// asking others to probe indirectly. Default 50ms: LAN round trips are
	// well under a millisecond, and Lifeguard's awareness stretches the
	// timeouts of a member that is itself slow (a starved CPU), so that it
	// does not suspect healthy members.
	ProbeTimeout time.Duration
	// SuspicionMult scales how long a suspect stays suspect before it is
	// declared dead: SuspicionMult × max(1, log10(members)) ×
	// ProbeInterval. Default 2.
	SuspicionMult int
	// GossipInterval is how often state is gossiped. Default 50ms.
	GossipInterval time.Duration
	// Log receives memberlist's log at debug verbosity (logWriter).
	// Default: discarded.
	Log logr.Logger
}

const minKeyLen = 16

// Cluster is this node's membership in the speakers' cluster.
type Cluster struct {
	ml      *memberlist.Memberlist
	changes chan struct{}
	meta    *delegate

	mu       sync.Mutex
	expected []string
}

// New starts a member that knows only itself; Join adds the others.
func New(opts Options) (*Cluster, error) {
	if opts.Name == "" {
		return nil, errors.New("member name is empty")
	}
	if len(opts.Key) < minKeyLen {
		return nil, fmt.Errorf("member %s: key has %d bytes, want at least %d", opts.Name, len(opts.Key), minKeyLen)
	}
	cfg := memberlist.DefaultLANConfig()
	cfg.Name = opts.Name
	cfg.BindAddr = opts.BindAddr
	if cfg.BindAddr == "" {
		cfg.BindAddr = "0.0.0.0"
	}
	cfg.BindPort = opts.BindPort
	cfg.AdvertiseAddr = opts.AdvertiseAddr
	cfg.AdvertisePort = opts.AdvertisePort
	if cfg.AdvertisePort == 0 {
		cfg.AdvertisePort = opts.BindPort
	}
	key := sha256.Sum256(opts.Key)
	cfg.SecretKey = key[:]
	// Reject anything not encrypted with the key, in both directions.
	cfg.GossipVerifyIncoming = true
	cfg.GossipVerifyOutgoing = true

	cfg.ProbeInterval = orDefault(opts.ProbeInterval, 100*time.Millisecond)
	cfg.ProbeTimeout = orDefault(opts.ProbeTimeout, 50*time.Millisecond)
	if opts.SuspicionMult > 0 {
		cfg.SuspicionMult = opts.SuspicionMult
	} else {
		cfg.SuspicionMult = 2
	}
	cfg.GossipInterval = orDefault(opts.GossipInterval, 50*time.Millisecond)
	// Faster probes would otherwise trip the default 10s TCP fallback.
	cfg.TCPTimeout = 2 * time.Second
	// A speaker restarted on another address (a rescheduled host network
	// Pod) may take its name back after this long.
	cfg.DeadNodeReclaimTime = 5 * time.Second
	cfg.Logger = log.New(logWriter{log: opts.Log}, "", 0)

	c := &Cluster{
		changes: make(chan struct{}, 1),
		meta:    &delegate{ready: true},
	}
	cfg.Events = &events{notify: c.notify}
	cfg.Delegate = c.meta
	ml, err := memberlist.Create(cfg)
	if err != nil {
		return nil, fmt.Errorf("member %s: start: %w", opts.Name, err)
	}
	c.ml = ml
	return c, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Join contacts the given members ("host:port") and returns how many
// answered. It fails only if none did, which includes peers whose key
// differs: they cannot decrypt each other's messages.
func (c *Cluster) Join(peers []string) (int, error) {
	n, err := c.ml.Join(peers)
	if err != nil {
		return n, fmt.Errorf("join %v: %w", peers, err)
	}
	return n, nil
}

// Addr is this member's advertised "host:port".
func (c *Cluster) Addr() string {
	n := c.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// Members returns, sorted, the names of the live members that are ready to
// own VIPs, this node included when it is.
func (c *Cluster) Members() []string {
	var out []string
	for _, n := range c.ml.Members() {
		if isReady(n.Meta) {
			out = append(out, n.Name)
		}
	}
	slices.Sort(out)
	return out
}

// Changes is signalled (coalesced, never blocking the sender) whenever a
// member joins, leaves, dies or changes readiness; the receiver recomputes
// from Members and HasMajority.
func (c *Cluster) Changes() <-chan struct{} { return c.changes }

// SetExpected sets the names of the speakers that should be members (from
// the Nodes the speaker DaemonSet runs on), against which the majority is
// counted.
func (c *Cluster) SetExpected(names []string) {
	c.mu.Lock()
	c.expected = slices.Clone(names)
	c.mu.Unlock()
	c.notify()
}

// HasMajority says whether this member sees more than half of the expected
// members alive (ready or not: a member whose interface is down still
// proves the network between us works). With no expected set it is true.
// A member on the minority side of a partition must stop announcing, or
// both sides would answer for the same VIPs.
func (c *Cluster) HasMajority() bool {
	c.mu.Lock()
	expected := c.expected
	c.mu.Unlock()
	if len(expected) == 0 {
		return true
	}
	alive := map[string]bool{}
	for _, n := range c.ml.Members() {
		alive[n.Name] = true
	}
	seen := 0
	for _, e := range expected {
		if alive[e] {
			seen++
		}
	}
	return 2*seen > len(expected)
}

// SetReady says whether this node can own VIPs (its announcing interface
// is up); others then leave it out of the election. It tells the others
// within timeout.
func (c *Cluster) SetReady(ready bool, timeout time.Duration) error {
	if !c.meta.set(ready) {
		return nil
	}
	c.notify()
	if err := c.ml.UpdateNode(timeout); err != nil {
		return fmt.Errorf("announce readiness %t: %w", ready, err)
	}
	return nil
}

// Leave tells the others this member goes, so they move its VIPs at once
// instead of after the suspicion timeout, and then stops it.
func (c *Cluster) Leave(timeout time.Duration) error {
	err := c.ml.Leave(timeout)
	if serr := c.ml.Shutdown(); err == nil {
		err = serr
	}
	return err
}

// Close stops the member without telling the others, as a crash would.
func (c *Cluster) Close() error { return c.ml.Shutdown() }

func (c *Cluster) notify() {
	select {
	case c.changes <- struct{}{}:
	default:
	}
}

// events turns memberlist's callbacks into change signals.
type events struct{ notify func() }

func (e *events) NotifyJoin(*memberlist.Node)   { e.notify() }
func (e *events) NotifyLeave(*memberlist.Node)  { e.notify() }
func (e *events) NotifyUpdate(*memberlist.Node) { e.notify() }

// delegate carries readiness in the node metadata: one byte, 1 = ready.
type delegate struct {
	mu    sync.Mutex
	ready bool
}

func (d *delegate) set(ready bool) (changed bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	changed = d.ready != ready
	d.ready = ready
	return changed
}

func (d *delegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ready {
		return []byte{1}
	}
	return []byte{0}
}

// A member without metadata (an older speaker) counts as ready.
func isReady(meta []byte) bool { return len(meta) == 0 || meta[0] == 1 }

func (d *delegate) NotifyMsg([]byte)                {}
func (d *delegate) GetBroadcasts(int, int) [][]byte { return nil }
func (d *delegate) LocalState(bool) []byte          { return nil }
func (d *delegate) MergeRemoteState([]byte, bool)   {}

// logWriter adapts memberlist's *log.Logger to logr, at debug verbosity:
// its warnings and errors (a member that misses a probe, a packet without
// the key) are V(2), as the failures that matter reach L2 mode's own log
// and status, and its info and debug lines are V(4).
type logWriter struct{ log logr.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	v, level, msg := parseLogLine(string(p))
	if l := w.log.V(v); l.Enabled() {
		l.Info(msg, "level", level)
	}
	return len(p), nil
}

// parseLogLine splits one of memberlist's lines, "[WARN] memberlist:
// text", into the verbosity it is logged at, its level and its text.
func parseLogLine(line string) (v int, level, msg string) {
	msg = strings.TrimSpace(line)
	if rest, ok := strings.CutPrefix(msg, "["); ok {
		if l, m, ok := strings.Cut(rest, "] "); ok {
			level, msg = l, m
		}
	}
	msg = strings.TrimPrefix(msg, "memberlist: ")
	switch level {
	case "ERR", "ERROR", "WARN":
		return 2, level, msg
	default:
		return 4, level, msg
	}
}
