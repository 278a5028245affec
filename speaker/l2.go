package speaker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/speaker/bgp"
	"github.com/zerohop/zerohop/speaker/l2"
	"github.com/zerohop/zerohop/speaker/l2/election"
	"github.com/zerohop/zerohop/speaker/l2/member"
)

// DefaultMemberlistPort is where speakers gossip (UDP and TCP).
const DefaultMemberlistPort = 7946

// memberlistSecretKey is the key of the memberlist Secret that holds the
// shared gossip key.
const memberlistSecretKey = "secretkey"

// l2EventInterval bounds the ownership Events per Service: a flapping
// node must not flood the API server.
const l2EventInterval = 10 * time.Second

// l2State is the speaker's L2 mode: the memberlist cluster, the ARP/NDP
// responder, and the inputs of the last reconcile, so that a membership
// change is acted on at once without relisting everything.
type l2State struct {
	mu        sync.Mutex
	cluster   *member.Cluster
	ann       *l2.Announcer
	in        l2.Input
	svcs      map[types.NamespacedName]*corev1.Service
	peers     map[string]string // other nodes' gossip addresses by name
	joining   bool
	lastJoin  time.Time
	owned     []l2.Owned
	answering map[string]bool // interfaces with a non-empty owned set
	lastEvent map[types.NamespacedName]time.Time
	applyErrs []error
}

// active says whether L2 mode runs (an L2Advertisement exists and the
// cluster was started).
func (s *l2State) active() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cluster != nil
}

// changes is the cluster's change signal, nil before it starts.
func (s *l2State) changes() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cluster == nil {
		return nil
	}
	return s.cluster.Changes()
}

// announceL2 is the L2 phase: it finds the L2 VIPs among the Services
// whose VIPs may be announced (speaker/l2), starts the memberlist cluster
// on first need, joins the other nodes, and applies. Errors are
// configuration problems for the status.
func (r *reconciler) announceL2(ctx context.Context, snap *snapshot, svcs []corev1.Service, rd *round) {
	vips, errs := l2.VIPs(snap.pools, snap.l2Advs, svcs, snap.slicesOf)
	rd.problem(errs...)
	s := &r.l2
	if len(snap.l2Advs) == 0 && !s.active() {
		return
	}
	hasStatus := map[string]bool{}
	for _, st := range snap.statuses {
		hasStatus[st.Name] = true
	}
	var (
		enodes   []election.Node
		peers    = map[string]string{}
		expected = []string{r.opts.NodeName}
	)
	port := r.opts.MemberlistPort
	for i := range snap.nodes {
		n := &snap.nodes[i]
		// A node that may not announce by BGP (cordoned, excluded,
		// shutting down) hands its L2 addresses over too.
		if bgp.NodeHealthy(n) {
			enodes = append(enodes, election.Node{Name: n.Name, Labels: n.Labels})
		}
		if n.Name == r.opts.NodeName {
			continue
		}
		// Speakers that ever ran write a SpeakerStatus: those are the
		// ones a majority is counted against.
		if hasStatus[n.Name] {
			expected = append(expected, n.Name)
		}
		if ip := internalIP(n); ip.IsValid() {
			peers[n.Name] = net.JoinHostPort(ip.String(), strconv.Itoa(port))
		}
	}
	svcByKey := map[types.NamespacedName]*corev1.Service{}
	for i := range svcs {
		svcByKey[types.NamespacedName{Namespace: svcs[i].Namespace, Name: svcs[i].Name}] = &svcs[i]
	}

	if err := r.startL2(ctx, &snap.node); err != nil {
		rd.problem(err)
		return
	}
	s.mu.Lock()
	s.in.Self, s.in.Nodes, s.in.VIPs = r.opts.NodeName, enodes, vips
	s.svcs, s.peers = svcByKey, peers
	cluster := s.cluster
	s.mu.Unlock()
	cluster.SetExpected(expected)
	r.maybeJoin()
	rd.problem(r.applyL2()...)
}

// startL2 creates the memberlist member and the responder once.
func (r *reconciler) startL2(ctx context.Context, node *corev1.Node) error {
	s := &r.l2
	s.mu.Lock()
	started := s.cluster != nil
	s.mu.Unlock()
	if started {
		return nil
	}
	key := r.opts.MemberlistKey
	if len(key) == 0 && r.opts.MemberlistSecret != "" {
		var sec corev1.Secret
		if err := r.client.Get(ctx, types.NamespacedName{Namespace: r.opts.Namespace, Name: r.opts.MemberlistSecret}, &sec); err != nil {
			return fmt.Errorf("l2: memberlist secret %s/%s: %w", r.opts.Namespace, r.opts.MemberlistSecret, err)
		}
		key = sec.Data[memberlistSecretKey]
	}
	if len(key) == 0 {
		return errors.New("l2: no memberlist key: set $ZEROHOP_MEMBERLIST_KEY or --memberlist-secret")
	}
	adv := internalIP(node)
	if !adv.IsValid() {
		return fmt.Errorf("l2: node %s has no InternalIP to gossip from", r.opts.NodeName)
	}
	c, err := member.New(member.Options{
		Name: r.opts.NodeName, BindPort: r.opts.MemberlistPort,
		AdvertiseAddr: adv.String(), Key: key, Log: r.opts.Log.WithName("memberlist"),
	})
	if err != nil {
		return fmt.Errorf("l2: %w", err)
	}
	a, err := l2.NewAnnouncer(l2.Options{Log: r.opts.Log.WithName("l2").WithValues("node", r.opts.NodeName), OnAnnounce: countL2Announcement})
	if err != nil {
		_ = c.Close()
		return fmt.Errorf("l2: %w", err)
	}
	s.mu.Lock()
	s.cluster, s.ann = c, a
	s.mu.Unlock()
	r.log.Info("L2 mode started", "memberlist", c.Addr())
	return nil
}

// maybeJoin joins the other nodes in the background when some are not
// members, at most every two seconds: a dead node's address makes Join
// wait for its TCP timeout, which must not hold up a reconcile.
func (r *reconciler) maybeJoin() {
	s := &r.l2
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cluster == nil || s.joining || time.Since(s.lastJoin) < 2*time.Second {
		return
	}
	have := map[string]bool{}
	for _, m := range s.cluster.Members() {
		have[m] = true
	}
	// Only nodes not yet members: joining a member again costs a full
	// state exchange for nothing.
	var peers []string
	for name, addr := range s.peers {
		if !have[name] {
			peers = append(peers, addr)
		}
	}
	if len(peers) == 0 {
		return
	}
	slices.Sort(peers)
	s.joining, s.lastJoin = true, time.Now()
	c := s.cluster
	go func() {
		if _, err := c.Join(peers); err != nil {
			r.log.V(1).Info("memberlist join", "error", err.Error())
		}
		s.mu.Lock()
		s.joining = false
		s.mu.Unlock()
	}()
}

// applyL2 recomputes what this node answers for from the last inputs and
// the current members, and tells the responder. It runs on every
// reconcile, membership change and tick.
func (r *reconciler) applyL2() []error {
	s := &r.l2
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cluster == nil {
		return nil
	}
	var errs []error
	ifaces, err := l2.Interfaces()
	if err != nil {
		errs = append(errs, fmt.Errorf("l2: %w", err))
	}
	s.in.Ifaces = ifaces
	s.in.LinkDown = nil
	for _, name := range l2.AnnouncingInterfaces(s.in.VIPs, ifaces) {
		if up, err := l2.LinkUp(name); err != nil || !up {
			if s.in.LinkDown == nil {
				s.in.LinkDown = map[string]bool{}
			}
			s.in.LinkDown[name] = true
		}
	}
	if err := s.cluster.SetReady(len(s.in.LinkDown) == 0, time.Second); err != nil {
		errs = append(errs, fmt.Errorf("l2: %w", err))
	}
	s.in.Members = s.cluster.Members()
	s.in.Majority = s.cluster.HasMajority()
	owned, planErrs := l2.Compute(s.in)
	errs = append(errs, planErrs...)

	byIface := map[string][]netip.Addr{}
	for _, o := range owned {
		for _, ifc := range o.Interfaces {
			byIface[ifc] = append(byIface[ifc], o.VIP.IP)
		}
	}
	// Interfaces no longer answered on get an empty set, which closes
	// their sockets.
	for name := range s.answering {
		if _, ok := byIface[name]; !ok {
			byIface[name] = nil
		}
	}
	answering := map[string]bool{}
	for name, vips := range byIface {
		if err := s.ann.SetOwned(name, vips); err != nil {
			errs = append(errs, fmt.Errorf("l2: answer on %s: %w", name, err))
			if len(vips) > 0 {
				answering[name] = true // retry the release next time
			}
			continue
		}
		if len(vips) > 0 {
			answering[name] = true
		}
	}
	s.answering = answering

	r.l2Events(s.owned, owned)
	if !sameOwned(s.owned, owned) {
		var ips []string
		for _, o := range owned {
			ips = append(ips, o.VIP.IP.String())
		}
		r.log.Info("L2 ownership changed", "owned", ips, "members", s.in.Members, "majority", s.in.Majority)
		s.owned = owned
		r.mu.Lock()
		r.status.L2 = l2Status(owned)
		r.dirty = true
		r.mu.Unlock()
		r.wake()
	}
	s.applyErrs = errs
	return errs
}

// l2Events records an Event on a Service whose VIP this node took over,
// at most one per Service per l2EventInterval. Called with s.mu held.
func (r *reconciler) l2Events(before, after []l2.Owned) {
	countL2Changes(before, after)
	s := &r.l2
	had := map[netip.Addr]bool{}
	for _, o := range before {
		had[o.VIP.IP] = true
	}
	now := time.Now()
	for _, o := range after {
		if had[o.VIP.IP] {
			continue
		}
		svc := s.svcs[o.VIP.Service]
		if svc == nil || now.Sub(s.lastEvent[o.VIP.Service]) < l2EventInterval {
			continue
		}
		if s.lastEvent == nil {
			s.lastEvent = map[types.NamespacedName]time.Time{}
		}
		s.lastEvent[o.VIP.Service] = now
		r.rec.Eventf(svc, nil, corev1.EventTypeNormal, "L2Owner", "Announce",
			"node %s answers ARP/NDP for %s on %v", r.opts.NodeName, o.VIP.IP, o.Interfaces)
	}
}

func sameOwned(a, b []l2.Owned) bool {
	return slices.EqualFunc(a, b, func(x, y l2.Owned) bool {
		return x.VIP.IP == y.VIP.IP && x.VIP.Service == y.VIP.Service && slices.Equal(x.Interfaces, y.Interfaces)
	})
}

// l2Status renders the owned VIPs for SpeakerStatus, sorted by address.
func l2Status(owned []l2.Owned) []v1alpha1.L2Ownership {
	out := make([]v1alpha1.L2Ownership, 0, len(owned))
	for _, o := range owned {
		out = append(out, v1alpha1.L2Ownership{
			IP: o.VIP.IP.String(), Service: o.VIP.Service.String(), Interfaces: o.Interfaces,
		})
	}
	slices.SortFunc(out, func(a, b v1alpha1.L2Ownership) int {
		return netip.MustParseAddr(a.IP).Compare(netip.MustParseAddr(b.IP))
	})
	if len(out) > maxAnnouncements {
		out = out[:maxAnnouncements]
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// l2Loop acts on membership changes at once and rechecks links every
// second; on exit it stops answering and leaves the cluster, so the
// others take the VIPs over without waiting for failure detection.
func (r *reconciler) l2Loop(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.stopL2()
			return nil
		case <-r.l2.changes():
		case <-t.C:
		}
		r.maybeJoin()
		r.applyL2()
	}
}

func (r *reconciler) stopL2() {
	s := &r.l2
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ann != nil {
		_ = s.ann.Close()
	}
	if s.cluster != nil {
		if err := s.cluster.Leave(time.Second); err != nil {
			r.log.Info("memberlist leave", "error", err.Error())
		}
	}
}

// internalIP is the node's first InternalIP, IPv4 preferred.
func internalIP(n *corev1.Node) netip.Addr {
	var v6 netip.Addr
	for _, a := range n.Status.Addresses {
		ip, err := netip.ParseAddr(a.Address)
		if a.Type != corev1.NodeInternalIP || err != nil {
			continue
		}
		if ip = ip.Unmap(); ip.Is4() {
			return ip
		} else if !v6.IsValid() {
			v6 = ip
		}
	}
	return v6
}
