// Package bpf is zerohop's packet path: an XDP program on the uplink that
// sends VIP traffic straight to a Pod (with a tc ingress program that puts
// it into the Pod's namespace), and a tc egress program that turns the
// Pod's replies back into VIP traffic. It knows nothing about Kubernetes;
// callers hand it services and backends as plain structs.
//
// Programs, links and maps are pinned under a root directory on bpffs, so
// the datapath keeps forwarding after the process that loaded it exits, and
// a later Load with the same root picks the state up again.
package bpf

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// DefaultPinRoot is where the datapath pins its objects.
const DefaultPinRoot = "/sys/fs/bpf/zerohop"

// configVersion changes when the map layout changes incompatibly.
// 2: counters.denied, src_ranges, svc_value.affinity_timeout, affinity.
// Maps added since (rejects) are created at the next Load: no change.
const configVersion = 2

// Options configure Load. Zero values mean the defaults.
type Options struct {
	// PinRoot is a directory on bpffs (default DefaultPinRoot).
	PinRoot string
	// MaglevSize is the number of slots per Maglev table, a prime
	// (default DefaultMaglevSize).
	MaglevSize uint32
	// Seed is the cluster-wide hash seed; every node must use the same.
	Seed uint32
	// MaxServices (default 16384), MaxBackends (default 65536) and
	// MaxFlows (conntrack and reverse-NAT entries, default 131072) size
	// the maps.
	MaxServices uint32
	MaxBackends uint32
	MaxFlows    uint32
	// MaxSourceRanges bounds the source prefixes of all services together
	// (default 65536).
	MaxSourceRanges uint32
	// ReplaceXDP lets Attach replace an XDP program that another tool
	// attached to the interface. Without it Attach refuses and says which
	// program is there.
	ReplaceXDP bool

	// ctBypass makes the XDP program ignore conntrack hits, so that one
	// repeated packet measures the new-flow path (benchmarks only).
	ctBypass bool
	// benchRestore makes the XDP program put the frame back as it came
	// after each run, so repeated runs can measure encapsulation and
	// decapsulation (benchmarks only).
	benchRestore bool
	// noPin keeps everything process-local (fuzz workers can be killed
	// before any cleanup runs). Attach is not available then.
	noPin bool
}

func (o *Options) setDefaults() {
	if o.PinRoot == "" {
		o.PinRoot = DefaultPinRoot
	}
	if o.MaglevSize == 0 {
		o.MaglevSize = DefaultMaglevSize
	}
	if o.MaxServices == 0 {
		o.MaxServices = 16384
	}
	if o.MaxBackends == 0 {
		o.MaxBackends = 65536
	}
	if o.MaxFlows == 0 {
		o.MaxFlows = 131072
	}
	if o.MaxSourceRanges == 0 {
		o.MaxSourceRanges = 65536
	}
}

// Datapath is a loaded datapath. Methods are safe for concurrent use.
type Datapath struct {
	opts Options
	objs zhObjects
	ncpu int

	mu       sync.Mutex
	services map[ServiceKey]*service
	vips     map[netip.Addr]int // services per VIP address
	bits     map[uint32]int     // VIP addresses per filter bit
	filter   [filterWords]uint64
	svcIDs   *idAlloc
	beIDs    *idAlloc

	// writeTable's buffers, reused under mu.
	scratchIdx    []uint32
	scratchChunks [][maglevChunkMax]uint32
	scratchKeys   []zhMaglevKey
	noBatch       bool // the kernel has no BPF_MAP_UPDATE_BATCH

	nextSlot uint32 // where SetPodLinks looks for a free pod_slots entry
}

type service struct {
	key      ServiceKey
	id       uint32
	active   uint32 // which maglev table slot is live
	backends backendIDs
	ranges   map[netip.Prefix]bool // masked; in src_ranges under id
	flags    ServiceFlags
}

// backendIDs are a service's backends with their ids, sorted by address
// and port. A node can hold 100,000 backends: as a sorted slice they take
// a third of the memory of a map per service.
type backendIDs []backendID

type backendID struct {
	ap netip.AddrPort
	id uint32
}

func (b backendIDs) get(ap netip.AddrPort) (uint32, bool) {
	i, ok := slices.BinarySearchFunc(b, ap, func(e backendID, t netip.AddrPort) int { return e.ap.Compare(t) })
	if !ok {
		return 0, false
	}
	return b[i].id, true
}

func (b backendIDs) sort() {
	slices.SortFunc(b, func(x, y backendID) int { return x.ap.Compare(y.ap) })
}

// pinnedMaps are shared between loads; .rodata is per program.
var pinnedMaps = []string{
	zhMapServices, zhMapMaglev, zhMapBackends, zhMapConntrack,
	zhMapRevnat, zhMapStats, zhMapTxPorts, zhMapConfig, zhMapVipFilter,
	zhMapNode, zhMapPeers, zhMapFrags, zhMapVips, zhMapEvents,
	zhMapSrcRanges, zhMapAffinity, zhMapPodLinks, zhMapPodSlots, zhMapPodFdb, zhMapDelivery,
	zhMapRejects,
}

// Load loads the programs and opens the maps, re-using maps already pinned
// under opts.PinRoot (their contents, and so all services and flows, carry
// over), and pins programs and maps. It does not attach; see Attach.
func Load(opts Options) (*Datapath, error) {
	opts.setDefaults()
	if !IsPrime(opts.MaglevSize) || opts.MaglevSize < 3 {
		return nil, fmt.Errorf("maglev size %d is not a prime >= 3", opts.MaglevSize)
	}
	if !opts.noPin {
		if err := ensureBPFFS(filepath.Dir(opts.PinRoot)); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(opts.PinRoot, 0o700); err != nil {
			return nil, fmt.Errorf("pin root: %w", err)
		}
	}
	spec, err := loadZh()
	if err != nil {
		return nil, err
	}
	chunk, chunks := maglevChunks(opts.MaglevSize)
	sizes := map[string]uint32{
		zhMapServices:  opts.MaxServices,
		zhMapMaglev:    2*opts.MaxServices*chunks + opts.MaxServices,
		zhMapBackends:  opts.MaxBackends,
		zhMapConntrack: opts.MaxFlows,
		zhMapRevnat:    opts.MaxFlows,
		zhMapStats:     opts.MaxServices + opts.MaxBackends,
		zhMapRejects:   opts.MaxServices,
		zhMapFrags:     max(opts.MaxFlows/8, 1024),
		zhMapVips:      opts.MaxServices,
		zhMapSrcRanges: opts.MaxSourceRanges,
		zhMapAffinity:  opts.MaxFlows,
	}
	for name, n := range sizes {
		spec.Maps[name].MaxEntries = n
	}
	mg := spec.Maps[zhMapMaglev]
	mg.ValueSize = 4 * chunk
	mg.Key, mg.Value = nil, nil // BTF describes the default size only
	for _, name := range pinnedMaps {
		if !opts.noPin {
			spec.Maps[name].Pinning = ebpf.PinByName
		}
	}
	vars := map[string]uint32{
		zhVarZhMaglevM:     opts.MaglevSize,
		zhVarZhChunkSlots:  chunk,
		zhVarZhSeed:        opts.Seed,
		zhVarZhMaxServices: opts.MaxServices,
	}
	if opts.ctBypass {
		vars[zhVarZhCtBypass] = 1
	}
	if opts.benchRestore {
		vars[zhVarZhBenchRestore] = 1
	}
	for name, v := range vars {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}

	d := &Datapath{
		opts:     opts,
		ncpu:     ebpf.MustPossibleCPU(),
		services: map[ServiceKey]*service{},
		vips:     map[netip.Addr]int{},
		bits:     map[uint32]int{},
		svcIDs:   newIDAlloc(0, opts.MaxServices),
		beIDs:    newIDAlloc(1, opts.MaxBackends), // 0 never names a backend
	}
	err = spec.LoadAndAssign(&d.objs, &ebpf.CollectionOptions{
		Maps: ebpf.MapOptions{PinPath: opts.PinRoot},
	})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load datapath: %+v", ve)
		}
		return nil, fmt.Errorf("load datapath (pinned maps under %s from an incompatible version? "+
			"remove them with `zerohop speaker --cleanup --bpf-pin-root %s`): %w", opts.PinRoot, opts.PinRoot, err)
	}
	if err := d.checkConfig(); err != nil {
		d.objs.Close()
		return nil, err
	}
	for name, p := range map[string]*ebpf.Program{"prog_xdp": d.objs.ZhXdp, "prog_tc_ingress": d.objs.ZhTcIngress,
		"prog_tc_egress": d.objs.ZhTcEgress, "prog_tc_pod": d.objs.ZhTcPod} {
		if opts.noPin {
			break
		}
		path := filepath.Join(opts.PinRoot, name)
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			d.objs.Close()
			return nil, fmt.Errorf("replace pinned %s: %w", name, err)
		}
		if err := p.Pin(path); err != nil {
			d.objs.Close()
			return nil, fmt.Errorf("pin %s: %w", name, err)
		}
	}
	if err := d.restore(); err != nil {
		d.objs.Close()
		return nil, err
	}
	return d, nil
}

// ensureBPFFS makes sure dir is on a bpf filesystem. It mounts one at the
// conventional /sys/fs/bpf when nothing is (as systemd would at boot); any
// other directory must already be on bpffs.
func ensureBPFFS(dir string) error {
	const bpffsMagic = 0xcafe4a11
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Type == bpffsMagic {
		return nil
	}
	if dir != "/sys/fs/bpf" {
		return fmt.Errorf("%s is not on a bpf filesystem", dir)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs on %s: %w", dir, err)
	}
	return nil
}

// checkConfig records the load-time constants in the pinned config map, or
// refuses to mix with maps built under different ones.
func (d *Datapath) checkConfig() error {
	want := zhDpConfig{
		MaglevM:     d.opts.MaglevSize,
		Seed:        d.opts.Seed,
		MaxServices: d.opts.MaxServices,
		Version:     configVersion,
	}
	var have zhDpConfig
	if err := d.objs.Config.Lookup(uint32(0), &have); err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	if have.Version == 0 {
		if err := d.objs.Config.Put(uint32(0), want); err != nil {
			return fmt.Errorf("write config: %w", err)
		}
		return nil
	}
	if have.Version != want.Version {
		return fmt.Errorf("pinned datapath under %s has map layout version %d, this binary uses %d: "+
			"remove it with `zerohop speaker --cleanup --bpf-pin-root %s` (forwarding stops until the speaker loads again)",
			d.opts.PinRoot, have.Version, want.Version, d.opts.PinRoot)
	}
	if have != want {
		return fmt.Errorf("pinned datapath under %s was built with %+v, not %+v", d.opts.PinRoot, have, want)
	}
	return nil
}

// restore rebuilds the in-memory view (ids, backends of each service) from
// the maps, so a new process can continue where the last one stopped.
func (d *Datapath) restore() error {
	byID := map[uint32]*service{}
	var k zhSvcKey
	var v zhSvcValue
	it := d.objs.Services.Iterate()
	for it.Next(&k, &v) {
		sk := fromSvcKey(k)
		s := &service{key: sk, id: v.Id, active: v.Active & 1, ranges: map[netip.Prefix]bool{}, flags: ServiceFlags(v.Flags)}
		d.services[sk] = s
		byID[v.Id] = s
		if err := d.addVIP(sk.Addr); err != nil {
			return err
		}
		d.svcIDs.mark(v.Id)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read services: %w", err)
	}
	var id uint32
	var be zhBackend
	bit := d.objs.Backends.Iterate()
	for bit.Next(&id, &be) {
		if be.Family == 0 {
			continue
		}
		s, ok := byID[be.Svc]
		if !ok {
			continue // left over from an interrupted delete
		}
		s.backends = append(s.backends, backendID{netip.AddrPortFrom(wordsAddr(be.Addr, be.Family), hostPort(be.Port)), id})
		d.beIDs.mark(id)
	}
	if err := bit.Err(); err != nil {
		return fmt.Errorf("read backends: %w", err)
	}
	for _, s := range byID {
		s.backends.sort()
	}
	var rk zhSrcKey
	var rv uint32
	var orphans []zhSrcKey
	rit := d.objs.SrcRanges.Iterate()
	for rit.Next(&rk, &rv) {
		s, ok := byID[rk.Svc]
		if !ok {
			orphans = append(orphans, rk) // left over from an interrupted delete
			continue
		}
		s.ranges[srcPrefix(rk, family(s.key.Addr))] = true
	}
	if err := rit.Err(); err != nil {
		return fmt.Errorf("read source ranges: %w", err)
	}
	for _, k := range orphans {
		if err := d.objs.SrcRanges.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("drop stale source range: %w", err)
		}
	}
	return nil
}

// Attach attaches XDP, tcx ingress and tcx egress to the named interface
// with bpf_links pinned under the root. Links already pinned for the
// interface are switched to this Datapath's programs in place, so
// forwarding does not stop during an upgrade. XDP goes first: it drops
// frames that carry the mark tc ingress acts on (see SetPodLinks), so tc
// never sees one that XDP did not write.
func (d *Datapath) Attach(ifname string) error {
	if d.opts.noPin {
		return errors.New("attach: datapath loaded without pinning")
	}
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("attach %s: %w", ifname, err)
	}
	if err := d.attachOne(ifname, ifc.Index, "xdp", d.objs.ZhXdp, func() (link.Link, error) {
		if err := d.clearForeignXDP(ifname, ifc.Index); err != nil {
			return nil, err
		}
		return link.AttachXDP(link.XDPOptions{Program: d.objs.ZhXdp, Interface: ifc.Index})
	}); err != nil {
		return err
	}
	if err := d.attachOne(ifname, ifc.Index, "tc_ingress", d.objs.ZhTcIngress, func() (link.Link, error) {
		return link.AttachTCX(link.TCXOptions{Program: d.objs.ZhTcIngress, Interface: ifc.Index, Attach: ebpf.AttachTCXIngress})
	}); err != nil {
		return err
	}
	return d.attachOne(ifname, ifc.Index, "tc_egress", d.objs.ZhTcEgress, func() (link.Link, error) {
		return link.AttachTCX(link.TCXOptions{Program: d.objs.ZhTcEgress, Interface: ifc.Index, Attach: ebpf.AttachTCXEgress})
	})
}

func (d *Datapath) linkPath(kind, ifname string) string {
	return filepath.Join(d.opts.PinRoot, "link_"+kind+"_"+ifname)
}

func (d *Datapath) attachOne(ifname string, ifindex int, kind string, prog *ebpf.Program, attach func() (link.Link, error)) error {
	path := d.linkPath(kind, ifname)
	if l, err := link.LoadPinnedLink(path, nil); err == nil {
		ok := linkIfindex(l) == ifindex && l.Update(prog) == nil
		if !ok {
			// Interface re-created or link defunct: start over.
			_ = l.Unpin()
		}
		_ = l.Close()
		if ok {
			return nil
		}
	}
	l, err := attach()
	if err != nil {
		return fmt.Errorf("attach %s to %s: %w", kind, ifname, err)
	}
	defer l.Close()
	if err := l.Pin(path); err != nil {
		return fmt.Errorf("pin %s link of %s: %w", kind, ifname, err)
	}
	return nil
}

func linkIfindex(l link.Link) int {
	info, err := l.Info()
	if err != nil {
		return -1
	}
	if x := info.XDP(); x != nil {
		return int(x.Ifindex)
	}
	if t := info.TCX(); t != nil {
		return int(t.Ifindex)
	}
	return -1
}

// Detach removes the programs from the named interface.
func (d *Datapath) Detach(ifname string) error {
	var errs []error
	for _, kind := range []string{"xdp", "tc_ingress", "tc_egress"} {
		path := d.linkPath(kind, ifname)
		l, err := link.LoadPinnedLink(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("detach %s from %s: %w", kind, ifname, err))
			continue
		}
		if err := l.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpin %s link of %s: %w", kind, ifname, err))
		}
		// Closing the last reference detaches the program.
		_ = l.Close()
	}
	return errors.Join(errs...)
}

// EnableRedirect marks an interface as able to take XDP redirects: VIP
// packets to a local Pod behind it leave XDP as frames into it, skipping
// the stack, and Cluster mode may send encapsulated frames out of it. The
// interface's far end must run XDP (or have GRO on), or the kernel drops
// the frames: the speaker does not use it; it delivers to Pods with
// SetPodLinks.
func (d *Datapath) EnableRedirect(ifname string) error {
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("enable redirect: %w", err)
	}
	idx := uint32(ifc.Index)
	if err := d.objs.TxPorts.Put(idx, idx); err != nil {
		return fmt.Errorf("enable redirect to %s: %w", ifname, err)
	}
	if err := d.objs.PodLinks.Put(idx, zhPodLink{How: podXDP}); err != nil {
		return fmt.Errorf("enable redirect to %s: %w", ifname, err)
	}
	return nil
}

// DisableRedirect undoes EnableRedirect.
func (d *Datapath) DisableRedirect(ifname string) error {
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("disable redirect: %w", err)
	}
	idx := uint32(ifc.Index)
	var pl zhPodLink
	if err := d.objs.PodLinks.Lookup(idx, &pl); err == nil && pl.How == podXDP {
		if err := d.objs.PodLinks.Delete(idx); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("disable redirect to %s: %w", ifname, err)
		}
	}
	if err := d.objs.TxPorts.Delete(idx); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("disable redirect to %s: %w", ifname, err)
	}
	return nil
}

// Close releases this process's handles. Pinned objects stay, and attached
// programs keep forwarding.
func (d *Datapath) Close() error {
	return d.objs.Close()
}

// Remove detaches everything attached from this pin root, unpins all
// objects and deletes the root directory, then closes.
func (d *Datapath) Remove() error {
	cerr := d.objs.Close()
	if d.opts.noPin {
		return cerr
	}
	// Removing the pins drops the last references: links detach, maps go.
	if err := os.RemoveAll(d.opts.PinRoot); err != nil {
		return fmt.Errorf("remove %s: %w", d.opts.PinRoot, err)
	}
	return cerr
}

// UpsertService creates or replaces a service with backends and flags
// alone; see Upsert.
func (d *Datapath) UpsertService(key ServiceKey, backends []Backend, flags ServiceFlags) error {
	return d.Upsert(key, ServiceConfig{Backends: backends, Flags: flags})
}

// Upsert creates or replaces a service. Backends not flagged terminating
// (and, in Local mode, flagged local) form a new Maglev table, built from
// the backends sorted by address and port so that every node builds the
// same one; RejectWeight adds the reject share after them. The table is written into the service's inactive slot and the
// service entry flipped in one update. Backends that are gone lose their
// flows; terminating backends keep theirs but get no new ones. Source
// ranges are replaced exactly: new prefixes are added before the service
// changes, prefixes no longer listed removed after.
func (d *Datapath) Upsert(key ServiceKey, cfg ServiceConfig) error {
	backends, flags := cfg.Backends, cfg.Flags
	if err := validate(key, cfg); err != nil {
		return err
	}
	ranges := map[netip.Prefix]bool{}
	if flags&ServiceSourceRanges != 0 {
		for _, p := range cfg.SourceRanges {
			ranges[p.Masked()] = true
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()

	s, exists := d.services[key]
	if !exists {
		id, ok := d.svcIDs.get()
		if !ok {
			return fmt.Errorf("service %s: all %d service ids in use", key, d.opts.MaxServices)
		}
		s = &service{key: key, id: id, ranges: map[netip.Prefix]bool{}}
		if err := d.resetStats(id); err != nil {
			d.svcIDs.put(id)
			return fmt.Errorf("service %s: %w", key, err)
		}
	}

	// Ranges first: once the flag is on a backend or the service, the
	// program checks every packet against them.
	for p := range ranges {
		if s.ranges[p] {
			continue
		}
		if err := d.objs.SrcRanges.Put(srcKey(s.id, p), uint32(1)); err != nil {
			d.dropRanges(s.id, ranges, s.ranges)
			if !exists {
				d.svcIDs.put(s.id)
			}
			return fmt.Errorf("service %s: source range %s: %w", key, p, err)
		}
	}
	fail := func(next backendIDs, err error) error {
		d.dropRanges(s.id, ranges, s.ranges)
		d.releaseNew(s, next, !exists)
		return err
	}
	beFlags := BackendFlags(0)
	if flags&ServiceSourceRanges != 0 {
		beFlags = backendSvcSourceRanges
	}

	// Backend entries next: the table written next refers to them. New
	// ids get zeroed counters first. Both are written in one batch each:
	// per-entry syscalls were a good part of a large sync.
	next := make(backendIDs, 0, len(backends))
	var eligible []Backend
	var fresh []uint32 // stats indices of newly allocated backend ids
	beKeys := make([]uint32, 0, len(backends))
	beVals := make([]zhBackend, 0, len(backends))
	for _, b := range backends {
		ap := b.AddrPort()
		id, ok := s.backends.get(ap)
		if !ok {
			if id, ok = d.beIDs.get(); !ok {
				return fail(next, fmt.Errorf("service %s: all %d backend ids in use", key, d.opts.MaxBackends))
			}
			fresh = append(fresh, d.opts.MaxServices+id)
		}
		next = append(next, backendID{ap, id})
		beKeys = append(beKeys, id)
		beVals = append(beVals, zhBackend{
			Addr:   addrWords(b.Addr),
			Node:   addrWords(b.Node),
			Port:   netPort(b.Port),
			Family: family(b.Addr),
			Flags:  uint32(b.Flags | beFlags),
			Svc:    s.id,
		})
		if b.Flags&BackendTerminating == 0 && (flags&ServiceLocal == 0 || b.Flags&BackendLocal != 0) {
			eligible = append(eligible, b)
		}
	}
	next.sort() // validate refused duplicates
	if err := d.resetStatsBatch(fresh); err != nil {
		return fail(next, fmt.Errorf("service %s: %w", key, err))
	}
	if err := d.batchPut(d.objs.Backends, beKeys, beVals, func(i int) error {
		return d.objs.Backends.Put(beKeys[i], beVals[i])
	}); err != nil {
		return fail(next, fmt.Errorf("service %s: backends: %w", key, err))
	}
	if err := d.writeLocalSet(s.id, backends, next); err != nil {
		return fail(next, fmt.Errorf("service %s: %w", key, err))
	}
	slices.SortFunc(eligible, func(a, b Backend) int { return a.AddrPort().Compare(b.AddrPort()) })

	old := s.id*2 + s.active
	active := s.active
	entries := len(eligible)
	if cfg.RejectWeight != 0 {
		entries++
	}
	if entries > 0 {
		active = s.active ^ 1
		if !exists {
			active = 0
		}
		if err := d.writeTable(s.id*2+active, eligible, cfg.RejectWeight, next); err != nil {
			return fail(next, fmt.Errorf("service %s: %w", key, err))
		}
	}
	if !exists {
		// Filter bit first: the program must never miss a VIP.
		if err := d.addVIP(key.Addr); err != nil {
			return fail(next, fmt.Errorf("service %s: %w", key, err))
		}
	}
	v := zhSvcValue{Id: s.id, Flags: uint32(flags), Count: uint32(entries), Active: active, AffinityTimeout: affinitySeconds(cfg)}
	if err := d.objs.Services.Put(svcKey(key), v); err != nil {
		if !exists {
			_ = d.delVIP(key.Addr)
		}
		return fail(next, fmt.Errorf("service %s: %w", key, err))
	}
	// The old table may still be in use by a packet that read the old
	// entry; hash elements are freed after an RCU grace period, and the
	// program falls back to the other table if it finds this one gone.
	if exists && (entries == 0 || active != s.active) {
		if err := d.deleteTable(old); err != nil {
			return fmt.Errorf("service %s: drop old table: %w", key, err)
		}
	}
	for _, b := range s.backends {
		if _, keep := next.get(b.ap); !keep {
			d.dropBackend(b.id)
		}
	}
	// Prefixes no longer listed go last, once nothing admits by them.
	for p := range s.ranges {
		if ranges[p] {
			continue
		}
		if err := d.objs.SrcRanges.Delete(srcKey(s.id, p)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("service %s: remove source range %s: %w", key, p, err)
		}
	}
	if s.flags&ServiceAffinity != 0 && flags&ServiceAffinity == 0 {
		if err := d.dropAffinity(s.id); err != nil {
			return fmt.Errorf("service %s: %w", key, err)
		}
	}
	s.backends, s.active, s.ranges, s.flags = next, active, ranges, flags
	d.services[key] = s
	return nil
}

// DefaultAffinityTimeout is Kubernetes' default sessionAffinityConfig
// clientIP timeoutSeconds.
const DefaultAffinityTimeout = 10800 * time.Second

// affinitySeconds is the service's affinity timeout in whole seconds,
// rounded up.
func affinitySeconds(cfg ServiceConfig) uint32 {
	if cfg.Flags&ServiceAffinity == 0 {
		return 0
	}
	t := cfg.AffinityTimeout
	if t == 0 {
		t = DefaultAffinityTimeout
	}
	return uint32((t + time.Second - 1) / time.Second)
}

// dropAffinity deletes the affinity entries of a service id, so that a
// later service with the same id starts without them.
func (d *Datapath) dropAffinity(id uint32) error {
	var k zhAffKey
	var v zhAffValue
	var stale []zhAffKey
	it := d.objs.Affinity.Iterate()
	for it.Next(&k, &v) {
		if k.Svc == id {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read affinity: %w", err)
	}
	for _, k := range stale {
		if err := d.objs.Affinity.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("drop affinity: %w", err)
		}
	}
	return nil
}

// dropRanges removes the prefixes of added that were not in had: what a
// failed upsert put in.
func (d *Datapath) dropRanges(id uint32, added, had map[netip.Prefix]bool) {
	for p := range added {
		if !had[p] {
			_ = d.objs.SrcRanges.Delete(srcKey(id, p))
		}
	}
}

func srcKey(id uint32, p netip.Prefix) zhSrcKey {
	return zhSrcKey{Prefixlen: uint32(32 + p.Bits()), Svc: id, Addr: addrWords(p.Addr())}
}

func srcPrefix(k zhSrcKey, fam uint8) netip.Prefix {
	return netip.PrefixFrom(wordsAddr(k.Addr, fam), int(k.Prefixlen)-32)
}

// releaseNew frees the ids a failed upsert allocated.
func (d *Datapath) releaseNew(s *service, next backendIDs, isNew bool) {
	for _, b := range next {
		if _, had := s.backends.get(b.ap); !had {
			d.dropBackend(b.id)
		}
	}
	if isNew {
		d.svcIDs.put(s.id)
	}
}

func (d *Datapath) dropBackend(id uint32) {
	// A zeroed entry (family 0) makes conntrack hits on it choose again.
	_ = d.objs.Backends.Put(id, zhBackend{})
	d.beIDs.put(id)
}

// maglevChunkMax slots (4000 bytes) keep a chunk and its hash element
// header within one 4 KiB allocation.
const maglevChunkMax = 1000

// maglevChunks returns the slots per chunk and the chunks per table.
func maglevChunks(m uint32) (chunk, chunks uint32) {
	chunk = min(m, maglevChunkMax)
	return chunk, (m + chunk - 1) / chunk
}

// rejectSlot is what a Maglev slot of the reject share holds: ZH_BE_REJECT
// in c/zerohop.h, an id no backend has.
const rejectSlot = ^uint32(0)

// rejectName is the reject share's name in the Maglev permutation: no
// backend's (an address and port) can be the same.
const rejectName = "reject"

func (d *Datapath) writeTable(table uint32, eligible []Backend, reject uint32, ids backendIDs) error {
	n := len(eligible)
	if reject != 0 {
		n++
	}
	names := make([]string, n)
	beIDs := make([]uint32, n)
	var weights []uint32
	for i, b := range eligible {
		names[i] = b.AddrPort().String()
		beIDs[i], _ = ids.get(b.AddrPort())
		if b.Weight != 0 && weights == nil {
			weights = make([]uint32, n)
		}
	}
	if reject != 0 {
		// Last, so the backends' permutations are the ones they have
		// without it.
		names[n-1], beIDs[n-1] = rejectName, rejectSlot
		if weights == nil {
			weights = make([]uint32, n)
		}
	}
	for i := range weights {
		if i < len(eligible) {
			weights[i] = eligible[i].Weight
		} else {
			weights[i] = reject
		}
	}
	// The scratch buffers live as long as d (callers hold d.mu): a table
	// is 64 KiB at the default size, and a sync of thousands of services
	// would otherwise allocate one per service, twice.
	idx, err := maglevWeightedInto(d.scratchIdx, names, weights, d.opts.MaglevSize, d.opts.Seed)
	if err != nil {
		return err
	}
	d.scratchIdx = idx
	chunk, chunks := maglevChunks(d.opts.MaglevSize)
	// Chunks are whole arrays so that a batch update can take them as
	// one value slice; a smaller table (chunk < maglevChunkMax) is one
	// chunk, written with the first chunk slots of the array. The tail
	// of the last chunk is never indexed.
	if cap(d.scratchChunks) < int(chunks) {
		d.scratchChunks = make([][maglevChunkMax]uint32, chunks)
	}
	vals := d.scratchChunks[:chunks]
	for i, j := range idx {
		vals[uint32(i)/chunk][uint32(i)%chunk] = beIDs[j]
	}
	keys := d.scratchKeys[:0]
	for c := range chunks {
		keys = append(keys, zhMaglevKey{Table: table, Chunk: c})
	}
	d.scratchKeys = keys
	// One syscall for the whole table where the kernel has batch updates
	// and chunks are full arrays; chunk by chunk otherwise.
	put := func(c int) error { return d.objs.Maglev.Put(keys[c], vals[c][:chunk]) }
	if chunks == 1 {
		err = put(0)
	} else {
		err = d.batchPut(d.objs.Maglev, keys, vals, put)
	}
	if err != nil {
		return fmt.Errorf("write maglev table %d: %w", table, err)
	}
	return nil
}

// localSetMax is ZH_LOCAL_MAX: the local backends a local set holds.
const localSetMax = 16

// writeLocalSet writes the service's local set (local_pick in
// bpf/c/backend.h): the ids of its ready backends on this node, or, if it
// has none, of those still in place, sorted by address so that a flow
// maps the same way while the set is unchanged. An update replaces the
// whole element, so a packet reads the old set or the new one.
func (d *Datapath) writeLocalSet(svc uint32, backends []Backend, ids backendIDs) error {
	var ready, standby []Backend
	for _, b := range backends {
		switch {
		case b.Flags&BackendLocal == 0:
		case b.Flags&BackendTerminating == 0:
			ready = append(ready, b)
		default:
			standby = append(standby, b)
		}
	}
	set := ready
	if len(set) == 0 {
		set = standby
	}
	key := zhMaglevKey{Table: svc, Chunk: localChunk}
	if len(set) == 0 {
		if err := d.objs.Maglev.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete local set: %w", err)
		}
		return nil
	}
	slices.SortFunc(set, func(a, b Backend) int { return a.AddrPort().Compare(b.AddrPort()) })
	chunk, _ := maglevChunks(d.opts.MaglevSize)
	n := min(len(set), localSetMax, int(chunk)-1)
	val := make([]uint32, chunk)
	val[0] = uint32(n)
	for i, b := range set[:n] {
		val[1+i], _ = ids.get(b.AddrPort())
	}
	if err := d.objs.Maglev.Put(key, val); err != nil {
		return fmt.Errorf("write local set: %w", err)
	}
	return nil
}

// localChunk is ZH_LOCAL_CHUNK: the chunk number of a local set's key.
const localChunk = 0xffffffff

func (d *Datapath) deleteTable(table uint32) error {
	_, chunks := maglevChunks(d.opts.MaglevSize)
	for c := range chunks {
		err := d.objs.Maglev.Delete(zhMaglevKey{Table: table, Chunk: c})
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete maglev table %d chunk %d: %w", table, c, err)
		}
	}
	return nil
}

// batchPut writes keys and vals (slices of the same length) into m in
// one syscall where the kernel has batch updates (5.6+), else one by one
// with put.
func (d *Datapath) batchPut(m *ebpf.Map, keys, vals any, put func(i int) error) error {
	n := reflect.ValueOf(keys).Len()
	if n == 0 {
		return nil
	}
	if !d.noBatch {
		_, err := m.BatchUpdate(keys, vals, nil)
		if err == nil || !errors.Is(err, ebpf.ErrNotSupported) {
			return err
		}
		d.noBatch = true
	}
	for i := range n {
		if err := put(i); err != nil {
			return err
		}
	}
	return nil
}

// resetStatsBatch zeroes the counters at stats indices idx.
func (d *Datapath) resetStatsBatch(idx []uint32) error {
	if len(idx) == 0 {
		return nil
	}
	zero := make([]zhCounters, d.ncpu*len(idx))
	if err := d.batchPut(d.objs.Stats, idx, zero, func(i int) error {
		return d.objs.Stats.Put(idx[i], zero[:d.ncpu])
	}); err != nil {
		return fmt.Errorf("reset stats: %w", err)
	}
	return nil
}

// resetStats zeroes a new service's counters.
func (d *Datapath) resetStats(id uint32) error {
	zero := make([]zhCounters, d.ncpu)
	if err := d.objs.Stats.Put(id, zero); err != nil {
		return fmt.Errorf("reset stats %d: %w", id, err)
	}
	if err := d.objs.Rejects.Put(id, make([]uint64, d.ncpu)); err != nil {
		return fmt.Errorf("reset rejects %d: %w", id, err)
	}
	return nil
}

// DeleteService removes a service; its flows stop at once.
func (d *Datapath) DeleteService(key ServiceKey) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.services[key]
	if !ok {
		return nil
	}
	if err := d.objs.Services.Delete(svcKey(key)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete service %s: %w", key, err)
	}
	for _, table := range []uint32{s.id * 2, s.id*2 + 1} {
		if err := d.deleteTable(table); err != nil {
			return fmt.Errorf("delete service %s: %w", key, err)
		}
	}
	if err := d.objs.Maglev.Delete(zhMaglevKey{Table: s.id, Chunk: localChunk}); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete service %s: local set: %w", key, err)
	}
	for _, b := range s.backends {
		d.dropBackend(b.id)
	}
	for p := range s.ranges {
		if err := d.objs.SrcRanges.Delete(srcKey(s.id, p)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete service %s: source range %s: %w", key, p, err)
		}
	}
	if s.flags&ServiceAffinity != 0 {
		if err := d.dropAffinity(s.id); err != nil {
			return fmt.Errorf("delete service %s: %w", key, err)
		}
	}
	d.svcIDs.put(s.id)
	delete(d.services, key)
	if err := d.delVIP(key.Addr); err != nil {
		return fmt.Errorf("delete service %s: %w", key, err)
	}
	return nil
}

// filterWords x 64 bits: the VIP pre-filter (vip_filter in the C code).
const filterWords = 16384

// filterBit must match maybe_vip() in c/backend.h.
func filterBit(a netip.Addr) uint32 {
	w := addrWords(a)
	x := w[0]
	if !a.Is4() {
		x ^= w[1] ^ w[2] ^ w[3]
	}
	return (x * 0x9e3779b1) >> 12
}

func (d *Datapath) addVIP(a netip.Addr) error {
	d.vips[a]++
	if d.vips[a] > 1 {
		return nil
	}
	// Echo requests are answered for exactly these addresses.
	if err := d.objs.Vips.Put(vipKey(a), uint32(1)); err != nil {
		return fmt.Errorf("vips: %w", err)
	}
	bit := filterBit(a)
	d.bits[bit]++
	if d.bits[bit] > 1 {
		return nil
	}
	d.filter[bit/64] |= 1 << (bit % 64)
	if err := d.objs.VipFilter.Put(bit/64, d.filter[bit/64]); err != nil {
		return fmt.Errorf("vip filter: %w", err)
	}
	return nil
}

func (d *Datapath) delVIP(a netip.Addr) error {
	if d.vips[a]--; d.vips[a] > 0 {
		return nil
	}
	delete(d.vips, a)
	if err := d.objs.Vips.Delete(vipKey(a)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("vips: %w", err)
	}
	bit := filterBit(a)
	if d.bits[bit]--; d.bits[bit] > 0 {
		return nil
	}
	delete(d.bits, bit)
	d.filter[bit/64] &^= 1 << (bit % 64)
	if err := d.objs.VipFilter.Put(bit/64, d.filter[bit/64]); err != nil {
		return fmt.Errorf("vip filter: %w", err)
	}
	return nil
}

// Services lists the configured services.
func (d *Datapath) Services() []ServiceKey {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]ServiceKey, 0, len(d.services))
	for k := range d.services {
		out = append(out, k)
	}
	return out
}

// Stats returns the counters of every service and its backends.
func (d *Datapath) Stats() (map[ServiceKey]ServiceStats, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[ServiceKey]ServiceStats, len(d.services))
	for k, s := range d.services {
		c, err := d.counters(s.id)
		if err != nil {
			return nil, fmt.Errorf("stats of %s: %w", k, err)
		}
		if c.Rejects, err = sumRejects(d.objs.Rejects, s.id); err != nil {
			return nil, fmt.Errorf("rejects of %s: %w", k, err)
		}
		st := ServiceStats{Counters: c, Backends: map[netip.AddrPort]Counters{}}
		for _, b := range s.backends {
			if st.Backends[b.ap], err = d.counters(d.opts.MaxServices + b.id); err != nil {
				return nil, fmt.Errorf("stats of %s backend %s: %w", k, b.ap, err)
			}
		}
		out[k] = st
	}
	return out, nil
}

func (d *Datapath) counters(idx uint32) (Counters, error) {
	var per []zhCounters
	if err := d.objs.Stats.Lookup(idx, &per); err != nil {
		return Counters{}, err
	}
	var c Counters
	for _, p := range per {
		c.add(Counters{Packets: p.Packets, Bytes: p.Bytes, Drops: p.Drops, CTMiss: p.CtMiss, Flows: p.Flows, Denied: p.Denied})
	}
	return c, nil
}

// sumRejects reads a service's count of rejected new flows.
func sumRejects(m *ebpf.Map, id uint32) (uint64, error) {
	var per []uint64
	if err := m.Lookup(id, &per); err != nil {
		return 0, err
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n, nil
}

func validate(key ServiceKey, cfg ServiceConfig) error {
	backends, flags := cfg.Backends, cfg.Flags
	if !key.Addr.IsValid() || key.Addr.Zone() != "" {
		return fmt.Errorf("service %s: invalid address", key)
	}
	if key.Proto != TCP && key.Proto != UDP {
		return fmt.Errorf("service %s: protocol must be tcp or udp", key)
	}
	if flags&^serviceFlagsKnown != 0 {
		return fmt.Errorf("service %s: unknown flags %#x", key, uint32(flags&^serviceFlagsKnown))
	}
	if len(cfg.SourceRanges) > 0 && flags&ServiceSourceRanges == 0 {
		return fmt.Errorf("service %s: source ranges given without ServiceSourceRanges", key)
	}
	for _, p := range cfg.SourceRanges {
		if !p.IsValid() || p.Addr().Is4() != key.Addr.Is4() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			return fmt.Errorf("service %s: source range %s: not a prefix of the VIP's family", key, p)
		}
	}
	if cfg.AffinityTimeout < 0 || cfg.AffinityTimeout > math.MaxUint32*time.Second {
		return fmt.Errorf("service %s: affinity timeout %v out of range", key, cfg.AffinityTimeout)
	}
	seen := map[netip.AddrPort]bool{}
	for _, b := range backends {
		if b.Flags&^backendFlagsKnown != 0 {
			return fmt.Errorf("service %s: backend %s: unknown flags %#x", key, b.AddrPort(), uint32(b.Flags&^backendFlagsKnown))
		}
		if !b.Addr.IsValid() || b.Addr.Is4() != key.Addr.Is4() || b.Addr.Is4In6() {
			return fmt.Errorf("service %s: backend %s: address family differs from the VIP", key, b.Addr)
		}
		// Cluster mode encapsulates to the node: v4 in v4, v6 in v6.
		if flags&ServiceCluster != 0 && b.Flags&BackendRemote != 0 && (!b.Node.IsValid() || b.Node.Is4() != key.Addr.Is4() || b.Node.Is4In6()) {
			return fmt.Errorf("service %s: remote backend %s: node address %s must be of the VIP's family", key, b.Addr, b.Node)
		}
		if b.Flags&BackendRemote != 0 && b.Flags&BackendLocal != 0 {
			return fmt.Errorf("service %s: backend %s is flagged both local and remote", key, b.Addr)
		}
		if seen[b.AddrPort()] {
			return fmt.Errorf("service %s: backend %s listed twice", key, b.AddrPort())
		}
		seen[b.AddrPort()] = true
	}
	return nil
}

// idAlloc hands out ids in [lo, hi), cycling through them so that a freed
// id is reused as late as possible (stale conntrack entries also carry the
// service id, which catches most reuse anyway).
type idAlloc struct {
	lo, hi, next uint32
	used         map[uint32]bool
}

func newIDAlloc(lo, hi uint32) *idAlloc {
	return &idAlloc{lo: lo, hi: hi, next: lo, used: map[uint32]bool{}}
}

func (a *idAlloc) get() (uint32, bool) {
	n := a.hi - a.lo
	if uint32(len(a.used)) >= n {
		return 0, false
	}
	for range n {
		id := a.next
		a.next++
		if a.next == a.hi {
			a.next = a.lo
		}
		if !a.used[id] {
			a.used[id] = true
			return id, true
		}
	}
	return 0, false
}

func (a *idAlloc) put(id uint32) { delete(a.used, id) }

func (a *idAlloc) mark(id uint32) {
	a.used[id] = true
	if id >= a.next && id+1 < a.hi {
		a.next = id + 1
	}
}
