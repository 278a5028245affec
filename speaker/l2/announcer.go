// Package l2 answers ARP and NDP for the VIPs this node owns and announces
// them when it takes them over (gratuitous ARP, unsolicited neighbour
// advertisements), so the segment's switches and hosts move traffic to the
// new owner at once instead of after their neighbour caches expire.
//
// Which VIPs a node owns is decided elsewhere (package election, from the
// live members of package member); this package only does the I/O for a set
// of owned VIPs per interface.
package l2

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// Options tune an Announcer. Zero values take the defaults.
type Options struct {
	// Burst is how many gratuitous ARPs / unsolicited NAs go out for a VIP
	// when this node takes it over. Default 3: one may be lost, and some
	// switches only learn from the second.
	Burst int
	// BurstInterval is the spacing within a burst. Default 100ms.
	BurstInterval time.Duration
	// RefreshInterval is how often every owned VIP is announced again,
	// which repairs caches that missed the burst. Default 10s.
	RefreshInterval time.Duration
	// Log receives errors of the background loops and, at V(1), each
	// change of the owned set. Default: discarded.
	Log logr.Logger
	// OnAnnounce, if set, is called after each gratuitous ARP or
	// unsolicited NA that went out (the speaker counts them in metrics).
	OnAnnounce func(vip netip.Addr)
}

func (o Options) withDefaults() Options {
	if o.Burst <= 0 {
		o.Burst = 3
	}
	if o.BurstInterval <= 0 {
		o.BurstInterval = 100 * time.Millisecond
	}
	if o.RefreshInterval <= 0 {
		o.RefreshInterval = 10 * time.Second
	}
	return o
}

// Announcer answers ARP and NDP for owned VIPs on a set of interfaces.
//
// Sockets are opened in the network namespace of the thread that calls
// SetOwned for an interface the first time; everything after that works
// from any thread.
type Announcer struct {
	opts Options

	mu     sync.Mutex
	ifaces map[string]*responder
	closed bool
}

// NewAnnouncer returns an Announcer that owns nothing yet.
func NewAnnouncer(opts Options) (*Announcer, error) {
	opts = opts.withDefaults()
	if opts.Burst > 100 {
		return nil, fmt.Errorf("burst %d: at most 100", opts.Burst)
	}
	return &Announcer{opts: opts, ifaces: map[string]*responder{}}, nil
}

// SetOwned makes vips the complete set of VIPs answered for on ifname.
// VIPs removed are not answered for from the moment SetOwned returns; VIPs
// added are announced with a burst. An empty vips releases the interface's
// sockets. On error the VIPs of the address family that failed are not
// answered for; the other family still is.
func (a *Announcer) SetOwned(ifname string, vips []netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return errors.New("announcer closed")
	}
	r := a.ifaces[ifname]
	if len(vips) == 0 {
		if r != nil {
			delete(a.ifaces, ifname)
			r.close()
		}
		return nil
	}
	if r == nil {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return fmt.Errorf("interface %s: %w", ifname, err)
		}
		if len(ifi.HardwareAddr) != 6 {
			return fmt.Errorf("interface %s: not an Ethernet interface (hardware address %q)", ifname, ifi.HardwareAddr)
		}
		r = newResponder(ifi, a.opts)
		a.ifaces[ifname] = r
	}
	return r.set(vips)
}

// Owned returns, sorted, the VIPs currently answered for on ifname.
func (a *Announcer) Owned(ifname string) []netip.Addr {
	a.mu.Lock()
	r := a.ifaces[ifname]
	a.mu.Unlock()
	if r == nil {
		return nil
	}
	return r.owned()
}

// Close stops answering on every interface and releases the sockets.
func (a *Announcer) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	for name, r := range a.ifaces {
		r.close()
		delete(a.ifaces, name)
	}
	return nil
}

// responder does the I/O on one interface.
type responder struct {
	ifi  *net.Interface
	opts Options
	log  logr.Logger

	mu      sync.Mutex
	v4      map[netip.Addr]bool
	v6      map[netip.Addr]bool
	pending map[netip.Addr]int // announcements left in a VIP's burst
	arpc    *arp.Client
	ndpc    *ndp.Conn
	joined  map[netip.Addr]bool // solicited-node groups joined

	kick chan struct{}
	done chan struct{}
	wg   sync.WaitGroup
}

func newResponder(ifi *net.Interface, opts Options) *responder {
	r := &responder{
		ifi: ifi, opts: opts,
		log:     opts.Log.WithValues("interface", ifi.Name),
		v4:      map[netip.Addr]bool{},
		v6:      map[netip.Addr]bool{},
		pending: map[netip.Addr]int{},
		joined:  map[netip.Addr]bool{},
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	r.wg.Add(1)
	go r.announceLoop()
	return r
}

func (r *responder) set(vips []netip.Addr) error {
	want4, want6 := map[netip.Addr]bool{}, map[netip.Addr]bool{}
	for _, v := range vips {
		v = v.Unmap().WithZone("")
		switch {
		case v.Is4():
			want4[v] = true
		case v.Is6():
			want6[v] = true
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	// Removal first, so a VIP lost to another node is never answered for
	// once this returns; the read loops look the set up per packet.
	var removed []netip.Addr
	for v := range r.v4 {
		if !want4[v] {
			delete(r.v4, v)
			delete(r.pending, v)
			removed = append(removed, v)
		}
	}
	for v := range r.v6 {
		if !want6[v] {
			delete(r.v6, v)
			delete(r.pending, v)
			removed = append(removed, v)
		}
	}
	var errs []error
	r.leaveGroups(want6)

	if len(want4) > 0 && r.arpc == nil {
		if err := r.openARP(); err != nil {
			errs = append(errs, err)
			want4 = nil
		}
	}
	if len(want6) > 0 && r.ndpc == nil {
		if err := r.openNDP(); err != nil {
			errs = append(errs, err)
			want6 = nil
		}
	}
	if err := r.joinGroups(want6); err != nil {
		errs = append(errs, err)
	}

	var added []netip.Addr
	for v := range want4 {
		if !r.v4[v] {
			r.v4[v] = true
			r.pending[v] = r.opts.Burst
			added = append(added, v)
		}
	}
	for v := range want6 {
		if !r.v6[v] {
			r.v6[v] = true
			r.pending[v] = r.opts.Burst
			added = append(added, v)
		}
	}
	if len(added) > 0 || len(removed) > 0 {
		slices.SortFunc(added, netip.Addr.Compare)
		slices.SortFunc(removed, netip.Addr.Compare)
		r.log.V(1).Info("owned VIPs changed", "added", added, "removed", removed)
	}
	if len(added) > 0 {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
	return errors.Join(errs...)
}

func (r *responder) owned() []netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]netip.Addr, 0, len(r.v4)+len(r.v6))
	for v := range r.v4 {
		out = append(out, v)
	}
	for v := range r.v6 {
		out = append(out, v)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// openARP needs r.mu held.
func (r *responder) openARP() error {
	c, err := arp.Dial(r.ifi)
	if err != nil {
		return fmt.Errorf("interface %s: ARP socket: %w", r.ifi.Name, err)
	}
	r.arpc = c
	r.wg.Add(1)
	go r.arpLoop(c)
	return nil
}

// openNDP needs r.mu held. The socket is bound to the unspecified address,
// not the link-local one, so it opens while that address is still
// tentative (DAD), and it is matched to the interface by the packet's
// ifindex instead.
func (r *responder) openNDP() error {
	c, _, err := ndp.Listen(r.ifi, ndp.Unspecified)
	if err != nil {
		return fmt.Errorf("interface %s: NDP socket: %w", r.ifi.Name, err)
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeNeighborSolicitation)
	if err := c.SetICMPFilter(&f); err != nil {
		_ = c.Close()
		return fmt.Errorf("interface %s: NDP filter: %w", r.ifi.Name, err)
	}
	if err := c.SetControlMessage(ipv6.FlagInterface|ipv6.FlagDst, true); err != nil {
		_ = c.Close()
		return fmt.Errorf("interface %s: NDP control messages: %w", r.ifi.Name, err)
	}
	r.ndpc = c
	r.wg.Add(1)
	go r.ndpLoop(c)
	return nil
}

// joinGroups joins the solicited-node multicast group of every VIP in
// want: without it the kernel drops the neighbour solicitations for the
// VIP before any socket sees them. Needs r.mu held.
func (r *responder) joinGroups(want map[netip.Addr]bool) error {
	var errs []error
	for v := range want {
		g, err := ndp.SolicitedNodeMulticast(v)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if r.joined[g] {
			continue
		}
		if err := r.ndpc.JoinGroup(g); err != nil {
			errs = append(errs, fmt.Errorf("interface %s: join %s: %w", r.ifi.Name, g, err))
			delete(want, v)
			continue
		}
		r.joined[g] = true
	}
	return errors.Join(errs...)
}

// leaveGroups leaves the groups no VIP in want needs; VIPs that share the
// last 24 bits share a group. Needs r.mu held.
func (r *responder) leaveGroups(want map[netip.Addr]bool) {
	need := map[netip.Addr]bool{}
	for v := range want {
		if g, err := ndp.SolicitedNodeMulticast(v); err == nil {
			need[g] = true
		}
	}
	for g := range r.joined {
		if need[g] {
			continue
		}
		if err := r.ndpc.LeaveGroup(g); err != nil {
			r.log.Info("leave solicited-node group", "group", g, "error", err.Error())
		}
		delete(r.joined, g)
	}
}

func (r *responder) close() {
	close(r.done)
	r.mu.Lock()
	clear(r.v4)
	clear(r.v6)
	// Closing the sockets ends the read loops and drops the group
	// memberships with them.
	if r.arpc != nil {
		_ = r.arpc.Close()
	}
	if r.ndpc != nil {
		_ = r.ndpc.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *responder) closing() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// readBackoff bounds how fast a read loop spins on a socket that keeps
// failing (interface gone, buffer errors) until it is closed.
const readBackoff = 50 * time.Millisecond

func (r *responder) arpLoop(c *arp.Client) {
	defer r.wg.Done()
	mac := r.ifi.HardwareAddr
	for {
		p, _, err := c.Read()
		if err != nil {
			if r.closing() {
				return
			}
			r.log.Info("ARP read", "error", err.Error())
			time.Sleep(readBackoff)
			continue
		}
		// A packet socket sees our own sends too; and a gratuitous ARP
		// from another host (sender IP = target IP) announces, it does not
		// ask.
		if p.Operation != arp.OperationRequest || equalMAC(p.SenderHardwareAddr, mac) ||
			p.SenderIP == p.TargetIP {
			continue
		}
		r.mu.Lock()
		ok := r.v4[p.TargetIP]
		r.mu.Unlock()
		if !ok {
			continue
		}
		if err := c.Reply(p, mac, p.TargetIP); err != nil {
			r.log.Info("ARP reply", "vip", p.TargetIP, "error", err.Error())
		}
	}
}

func (r *responder) ndpLoop(c *ndp.Conn) {
	defer r.wg.Done()
	buf := make([]byte, max(r.ifi.MTU, 1280))
	for {
		n, cm, from, err := c.ReadRaw(buf)
		if err != nil {
			if r.closing() {
				return
			}
			r.log.Info("NDP read", "error", err.Error())
			time.Sleep(readBackoff)
			continue
		}
		// The socket is not bound to the interface (see openNDP).
		if cm == nil || cm.IfIndex != r.ifi.Index {
			continue
		}
		m, err := ndp.ParseMessage(buf[:n])
		if err != nil {
			continue
		}
		ns, ok := m.(*ndp.NeighborSolicitation)
		if !ok {
			continue
		}
		r.mu.Lock()
		owned := r.v6[ns.TargetAddress]
		r.mu.Unlock()
		if !owned {
			continue
		}
		if err := r.advertise(c, ns.TargetAddress, from); err != nil {
			r.log.Info("NDP advertisement", "vip", ns.TargetAddress, "error", err.Error())
		}
	}
}

// advertise sends a neighbour advertisement for vip: solicited and unicast
// to the soliciting host, or — for a duplicate address detection probe
// (from ::) and for unsolicited announcements (to, invalid) — to all nodes.
func (r *responder) advertise(c *ndp.Conn, vip, to netip.Addr) error {
	solicited := to.IsValid() && !to.IsUnspecified()
	dst := netip.IPv6LinkLocalAllNodes()
	if solicited {
		dst = to
	}
	na := &ndp.NeighborAdvertisement{
		Solicited: solicited,
		// Override, so a host that cached the previous owner's MAC
		// replaces it.
		Override:      true,
		TargetAddress: vip,
		Options: []ndp.Option{&ndp.LinkLayerAddress{
			Direction: ndp.Target, Addr: r.ifi.HardwareAddr,
		}},
	}
	return c.WriteTo(na, nil, dst)
}

// gratuitousARP sends an ARP announcement (RFC 5227: a request whose
// sender and target IP are both the VIP) to broadcast; hosts and switches
// that hold the VIP in their caches update it to our MAC.
func (r *responder) gratuitousARP(c *arp.Client, vip netip.Addr) error {
	p, err := arp.NewPacket(arp.OperationRequest, r.ifi.HardwareAddr, vip, ethernet.Broadcast, vip)
	if err != nil {
		return err
	}
	// RFC 5227 asks for a zero target hardware address in announcements.
	p.TargetHardwareAddr = net.HardwareAddr{0, 0, 0, 0, 0, 0}
	return c.WriteTo(p, ethernet.Broadcast)
}

func (r *responder) announceLoop() {
	defer r.wg.Done()
	burst := time.NewTicker(r.opts.BurstInterval)
	defer burst.Stop()
	refresh := time.NewTicker(r.opts.RefreshInterval)
	defer refresh.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-r.kick:
			// The first of a burst goes out now; the ticker restarts so
			// the next one keeps the spacing.
			burst.Reset(r.opts.BurstInterval)
			r.announce(false)
		case <-burst.C:
			r.announce(false)
		case <-refresh.C:
			r.announce(true)
		}
	}
}

// announce sends one announcement for each VIP with a burst under way, or
// for every owned VIP when all is set. It holds r.mu while sending, so no
// announcement for a VIP leaves after SetOwned removed it.
func (r *responder) announce(all bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var send []netip.Addr
	if all {
		for v := range r.v4 {
			send = append(send, v)
		}
		for v := range r.v6 {
			send = append(send, v)
		}
	} else {
		for v, n := range r.pending {
			send = append(send, v)
			if n <= 1 {
				delete(r.pending, v)
			} else {
				r.pending[v] = n - 1
			}
		}
	}
	for _, v := range send {
		switch {
		case v.Is4() && r.arpc != nil:
			if err := r.gratuitousARP(r.arpc, v); err != nil {
				r.log.Info("gratuitous ARP", "vip", v, "error", err.Error())
			} else if r.opts.OnAnnounce != nil {
				r.opts.OnAnnounce(v)
			}
		case v.Is6() && r.ndpc != nil:
			if err := r.advertise(r.ndpc, v, netip.Addr{}); err != nil {
				r.log.Info("unsolicited NA", "vip", v, "error", err.Error())
			} else if r.opts.OnAnnounce != nil {
				r.opts.OnAnnounce(v)
			}
		}
	}
}
