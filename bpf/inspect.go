package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Snapshot is what a node's pinned datapath holds, read without loading
// programs or changing anything.
type Snapshot struct {
	Services []ServiceSnapshot // sorted by address, port, protocol
	Events   Events
	// Delivery: how packets to this node's own Pods left the uplink;
	// PodLinks: the Pod interfaces they can be delivered to directly
	// (both zero for a datapath pinned before there were any).
	Delivery Delivery
	PodLinks int
	Flows    int      // conntrack entries in use
	Attached []string // interfaces with zerohop XDP attached, from pinned links
}

// ServiceSnapshot is one service as the maps hold it.
type ServiceSnapshot struct {
	Key          ServiceKey
	Flags        ServiceFlags
	SourceRanges []netip.Prefix    // sorted
	Backends     []BackendSnapshot // sorted by address and port
	Counters     Counters
}

// BackendSnapshot is one backend and its counters.
type BackendSnapshot struct {
	Backend
	Counters Counters
}

// inspectMaps are the pinned maps Inspect reads.
type inspectMaps struct {
	config, services, backends, stats, srcRanges, conntrack, events *ebpf.Map
	// rejects is nil under a datapath pinned before it existed.
	rejects *ebpf.Map
}

func (m *inspectMaps) close() {
	for _, x := range []*ebpf.Map{m.config, m.services, m.backends, m.stats, m.srcRanges, m.conntrack, m.events, m.rejects} {
		if x != nil {
			_ = x.Close()
		}
	}
}

// Inspect reads the datapath pinned under pinRoot (DefaultPinRoot when
// empty): every map is opened read-only, no program is loaded, nothing is
// written. It fails, naming the path, when no datapath is pinned there or
// it was pinned by an incompatible version.
func Inspect(pinRoot string) (*Snapshot, error) {
	if pinRoot == "" {
		pinRoot = DefaultPinRoot
	}
	if _, err := os.Stat(filepath.Join(pinRoot, zhMapServices)); err != nil {
		return nil, fmt.Errorf("no zerohop datapath pinned under %s: %w", pinRoot, err)
	}
	var m inspectMaps
	defer m.close()
	for _, x := range []struct {
		name string
		dst  **ebpf.Map
	}{
		{zhMapConfig, &m.config}, {zhMapServices, &m.services}, {zhMapBackends, &m.backends},
		{zhMapStats, &m.stats}, {zhMapSrcRanges, &m.srcRanges}, {zhMapConntrack, &m.conntrack},
		{zhMapEvents, &m.events},
	} {
		path := filepath.Join(pinRoot, x.name)
		mp, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", path, err)
		}
		*x.dst = mp
	}
	path := filepath.Join(pinRoot, zhMapRejects)
	switch mp, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true}); {
	case err == nil:
		m.rejects = mp
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	var cfg zhDpConfig
	if err := m.config.Lookup(uint32(0), &cfg); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(pinRoot, zhMapConfig), err)
	}
	if cfg.Version != configVersion {
		return nil, fmt.Errorf("datapath under %s has layout version %d, this binary reads %d", pinRoot, cfg.Version, configVersion)
	}

	snap := &Snapshot{}
	byID := map[uint32]*ServiceSnapshot{}
	var ids []uint32
	var sk zhSvcKey
	var sv zhSvcValue
	it := m.services.Iterate()
	for it.Next(&sk, &sv) {
		snap.Services = append(snap.Services, ServiceSnapshot{Key: fromSvcKey(sk), Flags: ServiceFlags(sv.Flags)})
		ids = append(ids, sv.Id)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read services: %w", err)
	}
	for i, id := range ids {
		s := &snap.Services[i]
		c, err := sumCounters(m.stats, id)
		if err != nil {
			return nil, fmt.Errorf("counters of %s: %w", s.Key, err)
		}
		if m.rejects != nil {
			if c.Rejects, err = sumRejects(m.rejects, id); err != nil {
				return nil, fmt.Errorf("rejects of %s: %w", s.Key, err)
			}
		}
		s.Counters = c
		byID[id] = s
	}

	// The backends map is an array of MaxBackends slots: read it in
	// batches, not one syscall per slot (65536 lookups take ~150 ms).
	var (
		cursor ebpf.MapBatchCursor
		slots  = make([]uint32, 4096)
		bes    = make([]zhBackend, 4096)
	)
	for done := false; !done; {
		n, err := m.backends.BatchLookup(&cursor, slots, bes, nil)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			done = true
		} else if err != nil {
			return nil, fmt.Errorf("read backends: %w", err)
		}
		for i := range n {
			id, be := slots[i], bes[i]
			s, ok := byID[be.Svc]
			if be.Family == 0 || !ok {
				continue
			}
			b := Backend{
				Addr:  wordsAddr(be.Addr, be.Family),
				Port:  hostPort(be.Port),
				Flags: BackendFlags(be.Flags) & backendFlagsKnown,
			}
			if be.Node != [4]uint32{} {
				b.Node = wordsAddr(be.Node, be.Family)
			}
			c, err := sumCounters(m.stats, cfg.MaxServices+id)
			if err != nil {
				return nil, fmt.Errorf("counters of %s backend %s: %w", s.Key, b.AddrPort(), err)
			}
			s.Backends = append(s.Backends, BackendSnapshot{Backend: b, Counters: c})
		}
	}

	var rk zhSrcKey
	var rv uint32
	rit := m.srcRanges.Iterate()
	for rit.Next(&rk, &rv) {
		if s, ok := byID[rk.Svc]; ok {
			s.SourceRanges = append(s.SourceRanges, srcPrefix(rk, family(s.Key.Addr)))
		}
	}
	if err := rit.Err(); err != nil {
		return nil, fmt.Errorf("read source ranges: %w", err)
	}

	for i := range snap.Services {
		s := &snap.Services[i]
		slices.SortFunc(s.Backends, func(a, b BackendSnapshot) int { return a.AddrPort().Compare(b.AddrPort()) })
		slices.SortFunc(s.SourceRanges, comparePrefix)
	}
	slices.SortFunc(snap.Services, func(a, b ServiceSnapshot) int { return compareServiceKey(a.Key, b.Key) })

	n, err := countEntries(m.conntrack)
	if err != nil {
		return nil, fmt.Errorf("count flows: %w", err)
	}
	snap.Flows = n
	if snap.Events, err = readEvents(m.events); err != nil {
		return nil, err
	}
	if snap.Attached, err = attachedLinks(pinRoot); err != nil {
		return nil, err
	}
	if err := inspectPodLinks(pinRoot, snap); err != nil {
		return nil, err
	}
	return snap, nil
}

// inspectPodLinks reads the delivery counters and counts the Pod links,
// when the pins have them.
func inspectPodLinks(pinRoot string, snap *Snapshot) error {
	for _, x := range []struct {
		name string
		read func(*ebpf.Map) error
	}{
		{zhMapDelivery, func(m *ebpf.Map) (err error) { snap.Delivery, err = readDelivery(m); return err }},
		{zhMapPodLinks, func(m *ebpf.Map) (err error) { snap.PodLinks, err = countEntries(m); return err }},
	} {
		path := filepath.Join(pinRoot, x.name)
		m, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("open %s: %w", path, err)
		}
		err = x.read(m)
		_ = m.Close()
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
	}
	return nil
}

func sumCounters(stats *ebpf.Map, idx uint32) (Counters, error) {
	var per []zhCounters
	if err := stats.Lookup(idx, &per); err != nil {
		return Counters{}, err
	}
	var c Counters
	for _, p := range per {
		c.add(Counters{Packets: p.Packets, Bytes: p.Bytes, Drops: p.Drops, CTMiss: p.CtMiss, Flows: p.Flows, Denied: p.Denied})
	}
	return c, nil
}

// countEntries walks the keys alone; values are not needed.
func countEntries(m *ebpf.Map) (int, error) {
	key := make([]byte, m.KeySize())
	next := make([]byte, m.KeySize())
	var n int
	var prev any // nil: start from the first key
	for n <= int(m.MaxEntries()) {
		err := m.NextKey(prev, &next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
		copy(key, next)
		prev = key
	}
	return n, fmt.Errorf("more than %d keys: map changing under the walk", m.MaxEntries())
}

// attachedLinks lists the interfaces whose pinned XDP link is alive.
func attachedLinks(pinRoot string) ([]string, error) {
	ents, err := os.ReadDir(pinRoot)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", pinRoot, err)
	}
	var out []string
	for _, e := range ents {
		ifname, ok := strings.CutPrefix(e.Name(), "link_xdp_")
		if !ok {
			continue
		}
		// Links take no read-only flag; this handle only reads the
		// link's info, and closing it leaves the pinned link attached.
		l, err := link.LoadPinnedLink(filepath.Join(pinRoot, e.Name()), nil)
		if err != nil {
			continue // not a link (any more)
		}
		// A link whose interface went away is defunct: ifindex 0.
		if linkIfindex(l) > 0 {
			out = append(out, ifname)
		}
		_ = l.Close()
	}
	slices.Sort(out)
	return out, nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func compareServiceKey(a, b ServiceKey) int {
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c
	}
	if a.Port != b.Port {
		return int(a.Port) - int(b.Port)
	}
	return int(a.Proto) - int(b.Proto)
}
