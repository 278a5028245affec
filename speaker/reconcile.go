package speaker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/zerohop/zerohop/bpf"
	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/speaker/announce"
	"github.com/zerohop/zerohop/speaker/bgp"
	"github.com/zerohop/zerohop/speaker/datapath"
)

type eventRecorder = recorder.EventRecorder

// Caps keep SpeakerStatus well below etcd's object size limit.
const (
	maxAnnouncements = 5000
	maxErrors        = 50
)

func (r *reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	res, err := r.reconcileAll(ctx, req)
	// L2 mode counts its majority against the speakers' SpeakerStatuses,
	// which are not watched: look again now and then.
	if err == nil && res.RequeueAfter == 0 && r.l2.active() {
		res.RequeueAfter = 10 * time.Second
	}
	return res, err
}

func (r *reconciler) reconcileAll(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	var node corev1.Node
	nodeKnown := true
	if err := r.client.Get(ctx, types.NamespacedName{Name: r.opts.NodeName}, &node); err != nil {
		if !apierrors.IsNotFound(err) {
			return reconcile.Result{}, fmt.Errorf("node %s: %w", r.opts.NodeName, err)
		}
		nodeKnown = false
	}
	var (
		pools     v1alpha1.IPAddressPoolList
		peers     v1alpha1.BGPPeerList
		advs      v1alpha1.BGPAdvertisementList
		profiles  v1alpha1.BFDProfileList
		svcs      corev1.ServiceList
		sliceList discoveryv1.EndpointSliceList
	)
	if err := r.client.List(ctx, &pools); err != nil {
		return reconcile.Result{}, fmt.Errorf("list pools: %w", err)
	}
	if err := r.client.List(ctx, &peers); err != nil {
		return reconcile.Result{}, fmt.Errorf("list bgppeers: %w", err)
	}
	if err := r.client.List(ctx, &advs); err != nil {
		return reconcile.Result{}, fmt.Errorf("list bgpadvertisements: %w", err)
	}
	if err := r.client.List(ctx, &profiles); err != nil {
		return reconcile.Result{}, fmt.Errorf("list bfdprofiles: %w", err)
	}
	// Services and EndpointSlices are read, never written, below: at 10,000
	// Services a deep copy of both per reconcile was most of the speaker's
	// garbage, and so of its peak memory.
	if err := r.client.List(ctx, &svcs, client.UnsafeDisableDeepCopy); err != nil {
		return reconcile.Result{}, fmt.Errorf("list services: %w", err)
	}
	if err := r.client.List(ctx, &sliceList, client.UnsafeDisableDeepCopy); err != nil {
		return reconcile.Result{}, fmt.Errorf("list endpointslices: %w", err)
	}

	// A Service of another loadBalancerClass belongs to another
	// implementation: never announce or balance it, even with an IP in a
	// zerohop pool. The datapath gets every other Service; announcements only those VIPs
	// whose entries are all in place on this node.
	svcs.Items = slices.DeleteFunc(svcs.Items, func(s corev1.Service) bool { return !servedClass(&s) })
	var (
		desired      map[bpf.ServiceKey]datapath.Entry
		dpErrs       []error
		announceSvcs = svcs.Items
		l2advs       v1alpha1.L2AdvertisementList
	)
	if r.opts.Datapath != nil {
		var nodes corev1.NodeList
		if err := r.client.List(ctx, &nodes); err != nil {
			return reconcile.Result{}, fmt.Errorf("list nodes: %w", err)
		}
		if err := r.client.List(ctx, &l2advs); err != nil {
			return reconcile.Result{}, fmt.Errorf("list l2advertisements: %w", err)
		}
		ts, tl, addrs := translateInput(svcs.Items, sliceList.Items, nodes.Items)
		desired, dpErrs = datapath.Translate(r.opts.NodeName, ts, tl, addrs)
		blocked, errs := r.programDatapath(ctx, &node, nodes.Items, l2advs.Items, desired)
		dpErrs = append(dpErrs, errs...)
		announceSvcs = announceable(svcs.Items, blocked)
	}

	in := announce.Input{Node: announce.Node{Name: r.opts.NodeName}}
	if nodeKnown {
		in.Node.Labels = node.Labels
		in.Node.Healthy = announce.NodeHealthy(&node)
	}
	for i := range pools.Items {
		in.Pools = append(in.Pools, &pools.Items[i])
	}
	for i := range peers.Items {
		in.Peers = append(in.Peers, &peers.Items[i])
	}
	for i := range advs.Items {
		in.Advertisements = append(in.Advertisements, &advs.Items[i])
	}
	bySvc := map[types.NamespacedName][]*discoveryv1.EndpointSlice{}
	for i := range sliceList.Items {
		sl := &sliceList.Items[i]
		name := sl.Labels[discoveryv1.LabelServiceName]
		if name == "" {
			continue
		}
		k := types.NamespacedName{Namespace: sl.Namespace, Name: name}
		bySvc[k] = append(bySvc[k], sl)
	}
	for i := range announceSvcs {
		svc := &announceSvcs[i]
		if svc.DeletionTimestamp != nil {
			continue
		}
		if s, ok := announce.ServiceFrom(svc, bySvc[types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}], r.opts.NodeName); ok {
			in.Services = append(in.Services, s)
		}
	}
	plan, planErrs := announce.Compute(in)
	r.bgpEvents(plan, announceSvcs)
	// L2 first: it needs no BGP server, which may fail to start below.
	planErrs = append(planErrs, r.reconcileL2(ctx, &node, in.Pools, announceSvcs, bySvc)...)
	planErrs = append(planErrs, dpErrs...)

	srv, err := r.server(ctx, plan, &node)
	if err != nil {
		r.setStatus(plan, append(planErrs, err))
		return reconcile.Result{RequeueAfter: 5 * time.Second}, nil
	}

	var cfgErrs []error
	cfgErrs = append(cfgErrs, planErrs...)
	var bgpPeers []bgp.Peer
	paths := map[netip.Addr][]announce.Path{}
	names := map[netip.Addr]string{}
	var bfd []BFDSession
	profileByName := map[string]*v1alpha1.BFDProfile{}
	for i := range profiles.Items {
		profileByName[profiles.Items[i].Name] = &profiles.Items[i]
	}
	// The node's addresses are the next hops of prefixes sent over a
	// session of the other family.
	var nh4, nh6 netip.Addr
	for _, a := range node.Status.Addresses {
		ip, err := netip.ParseAddr(a.Address)
		if a.Type != corev1.NodeInternalIP || err != nil {
			continue
		}
		if ip = ip.Unmap(); ip.Is4() && !nh4.IsValid() {
			nh4 = ip
		} else if ip.Is6() && !nh6.IsValid() {
			nh6 = ip
		}
	}
	for _, pp := range plan.Peers {
		p, err := r.peerOf(ctx, pp.Peer)
		if err != nil {
			cfgErrs = append(cfgErrs, err)
			continue
		}
		p.NextHop4, p.NextHop6 = nh4, nh6
		if _, dup := names[p.Address]; dup {
			cfgErrs = append(cfgErrs, fmt.Errorf("bgppeer %s: address %v used by bgppeer %s too", p.Name, p.Address, names[p.Address]))
			continue
		}
		names[p.Address] = p.Name
		bgpPeers = append(bgpPeers, p)
		paths[p.Address] = pp.Paths
		if name := pp.Peer.Spec.BFDProfile; name != "" {
			prof, ok := profileByName[name]
			if !ok {
				cfgErrs = append(cfgErrs, fmt.Errorf("bgppeer %s: bfdProfile %s not found", p.Name, name))
				continue
			}
			bfd = append(bfd, BFDSession{Peer: p.Address, Local: p.SourceAddress, Profile: prof.Spec})
		}
	}
	r.mu.Lock()
	r.peers = names
	r.bfdPeers = map[netip.Addr]bool{}
	for _, b := range bfd {
		r.bfdPeers[b.Peer] = true
	}
	r.mu.Unlock()

	// Apply fills the RIB before it opens new sessions, so that a
	// restarted speaker's first UPDATEs and End-of-RIB carry every path
	// and routers drop none of the stale ones it still announces.
	var bgpErrs []error
	if err := srv.Apply(ctx, bgpPeers, paths); err != nil {
		bgpErrs = append(bgpErrs, err)
	}
	if r.opts.BFD != nil {
		if err := r.opts.BFD.SetSessions(bfd); err != nil {
			bgpErrs = append(bgpErrs, fmt.Errorf("bfd: %w", err))
		}
	}
	announced.Reset()
	for _, pp := range plan.Peers {
		announced.WithLabelValues(pp.Peer.Name).Set(float64(len(pp.Paths)))
	}
	// Withdrawn above; now the entries nobody wants may go.
	var res reconcile.Result
	if r.opts.Datapath != nil {
		next, err := r.retireDatapath(ctx, desired)
		if err != nil {
			bgpErrs = append(bgpErrs, err)
		}
		res.RequeueAfter = next
	}
	r.setStatus(plan, append(cfgErrs, bgpErrs...))
	if len(cfgErrs) > 0 {
		r.log.Info("configuration problems", "errors", errors.Join(cfgErrs...).Error())
	}
	if err := errors.Join(bgpErrs...); err != nil {
		return reconcile.Result{}, err
	}
	return res, nil
}

// server returns the BGP server, starting it on first use: the router ID
// comes from the flags, a selected peer, or the node's address.
func (r *reconciler) server(ctx context.Context, plan announce.Plan, node *corev1.Node) (*bgp.Server, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bgp != nil {
		return r.bgp, nil
	}
	id := r.opts.RouterID
	for _, pp := range plan.Peers {
		if id.IsValid() {
			break
		}
		if a, err := netip.ParseAddr(pp.Peer.Spec.RouterID); err == nil && a.Is4() {
			id = a
		}
	}
	for _, a := range node.Status.Addresses {
		if id.IsValid() {
			break
		}
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Is4() {
			id = ip
		}
	}
	if !id.IsValid() {
		return nil, errors.New("no BGP router ID: set --router-id, a BGPPeer routerID, or an IPv4 InternalIP on the node")
	}
	s, err := bgp.New(ctx, bgp.Options{
		RouterID:   id,
		Restarting: true,
		Log:        ctrl.Log.WithName("gobgp"),
	})
	if err != nil {
		return nil, err
	}
	s.Watch(r.sessionChanged)
	r.bgp = s
	return s, nil
}

func (r *reconciler) peerOf(ctx context.Context, bp *v1alpha1.BGPPeer) (bgp.Peer, error) {
	addr, err := netip.ParseAddr(bp.Spec.PeerAddress)
	if err != nil {
		return bgp.Peer{}, fmt.Errorf("bgppeer %s: peerAddress: %w", bp.Name, err)
	}
	p := bgp.Peer{
		Name: bp.Name, Address: addr.Unmap(), Port: bp.Spec.PeerPort,
		MyASN: bp.Spec.MyASN, PeerASN: bp.Spec.PeerASN,
		EBGPMultiHop: bp.Spec.EBGPMultiHop, GracefulRestart: bp.Spec.EnableGracefulRestart,
		// Reconnect quickly by default: a router that restarts should
		// get its routes back in seconds, not GoBGP's two minutes.
		ConnectTime: 5 * time.Second,
	}
	if bp.Spec.SourceAddress != "" {
		src, err := netip.ParseAddr(bp.Spec.SourceAddress)
		if err != nil {
			return bgp.Peer{}, fmt.Errorf("bgppeer %s: sourceAddress: %w", bp.Name, err)
		}
		p.SourceAddress = src.Unmap()
	}
	if d := bp.Spec.HoldTime; d != nil {
		p.HoldTime = d.Duration
	}
	if d := bp.Spec.KeepaliveTime; d != nil {
		p.KeepaliveTime = d.Duration
	}
	if d := bp.Spec.ConnectTime; d != nil {
		p.ConnectTime = d.Duration
	}
	if ref := bp.Spec.PasswordSecret; ref != nil {
		pw, err := r.password(ctx, ref)
		if err != nil {
			return bgp.Peer{}, fmt.Errorf("bgppeer %s: %w", bp.Name, err)
		}
		p.Password = pw
	}
	return p, nil
}

// password reads a peer's MD5 password. Secrets in the speaker's own
// namespace come from the cache (and changes to them reconfigure the
// session); others are read directly.
func (r *reconciler) password(ctx context.Context, ref *v1alpha1.SecretReference) (string, error) {
	ns := ref.Namespace
	if ns == "" {
		ns = r.opts.Namespace
	}
	var sec corev1.Secret
	key := types.NamespacedName{Namespace: ns, Name: ref.Name}
	var err error
	if ns == r.opts.Namespace {
		err = r.client.Get(ctx, key, &sec)
	} else {
		err = r.reader.Get(ctx, key, &sec)
	}
	if err != nil {
		return "", fmt.Errorf("password secret %s: %w", key, err)
	}
	pw, ok := sec.Data["password"]
	if !ok {
		return "", fmt.Errorf("password secret %s has no \"password\" key", key)
	}
	return string(pw), nil
}

// sessionChanged refreshes the status on every state change, and records
// an Event only when a session comes up or goes down from up: a session
// that cannot connect cycles through connect and active every few seconds,
// which is status, not news.
func (r *reconciler) sessionChanged(st bgp.SessionState) {
	r.mu.Lock()
	r.dirty = true
	name := st.Name
	if name == "" {
		name = r.peers[st.Address]
	}
	wasUp := r.up[st.Address]
	if r.up == nil {
		r.up = map[netip.Addr]bool{}
	}
	r.up[st.Address] = st.Up
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
	if name == "" {
		return
	}
	up := 0.0
	if st.Up {
		up = 1
	}
	sessionUp.WithLabelValues(name, st.Address.String()).Set(up)
	flaps := sessionFlaps.WithLabelValues(name) // exported from the first state seen
	if st.Up == wasUp {
		return
	}
	if wasUp {
		flaps.Inc()
	}
	peer := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}}
	peer.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("BGPPeer"))
	if st.Up {
		r.rec.Eventf(peer, nil, corev1.EventTypeNormal, "SessionUp", "BGP", "node %s: session to %s established", r.opts.NodeName, st.Address)
	} else {
		r.rec.Eventf(peer, nil, corev1.EventTypeWarning, "SessionDown", "BGP", "node %s: session to %s is %s", r.opts.NodeName, st.Address, st.State)
	}
}

// setStatus records what the last reconcile decided, for the status loop.
func (r *reconciler) setStatus(plan announce.Plan, errs []error) {
	type ann struct{ prefixes, peers map[string]bool }
	bySvc := map[string]*ann{}
	for _, pp := range plan.Peers {
		for _, p := range pp.Paths {
			for _, s := range p.Services {
				a := bySvc[s]
				if a == nil {
					a = &ann{prefixes: map[string]bool{}, peers: map[string]bool{}}
					bySvc[s] = a
				}
				a.prefixes[p.Prefix.String()] = true
				a.peers[pp.Peer.Name] = true
			}
		}
	}
	st := v1alpha1.SpeakerStatusStatus{Node: r.opts.NodeName}
	for _, s := range slices.Sorted(maps.Keys(bySvc)) {
		if len(st.Announcements) == maxAnnouncements {
			st.Truncated = true
			break
		}
		st.Announcements = append(st.Announcements, v1alpha1.ServiceAnnouncement{
			Service:  s,
			Prefixes: slices.Sorted(maps.Keys(bySvc[s].prefixes)),
			Peers:    slices.Sorted(maps.Keys(bySvc[s].peers)),
		})
	}
	seen := map[string]bool{}
	for _, e := range errs {
		if len(st.Errors) == maxErrors {
			break
		}
		// One bad selector is reported once, not once per Service.
		if msg := e.Error(); !seen[msg] {
			seen[msg] = true
			st.Errors = append(st.Errors, msg)
		}
	}
	r.mu.Lock()
	st.L2 = r.status.L2 // owned by applyL2
	if !equality.Semantic.DeepEqual(st, r.status) {
		r.status = st
		r.dirty = true
	}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// statusLoop writes SpeakerStatus when it changed, at most once per
// StatusInterval, so a burst of endpoint changes costs one write.
func (r *reconciler) statusLoop(ctx context.Context) error {
	t := time.NewTicker(r.opts.StatusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
		}
		if err := r.writeStatus(ctx); err != nil {
			r.log.Error(err, "write SpeakerStatus")
			// Try again on the next kick or tick.
			select {
			case r.kick <- struct{}{}:
			default:
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (r *reconciler) writeStatus(ctx context.Context) error {
	r.mu.Lock()
	if !r.dirty {
		r.mu.Unlock()
		return nil
	}
	st := *r.status.DeepCopy()
	srv := r.bgp
	bfdUp := maps.Clone(r.bfdUp)
	bfdPeers := r.bfdPeers
	r.dirty = false
	r.mu.Unlock()
	if srv != nil {
		for _, s := range srv.Sessions() {
			ss := v1alpha1.BGPSessionStatus{Peer: s.Name, Address: s.Address.String(), State: s.State}
			if bfdPeers[s.Address] {
				ss.BFD = "down"
				if bfdUp[s.Address] {
					ss.BFD = "up"
				}
			}
			if !s.Since.IsZero() {
				t := metav1.NewTime(s.Since.Truncate(time.Second))
				ss.Since = &t
			}
			st.Sessions = append(st.Sessions, ss)
		}
	}
	err := r.putStatus(ctx, st)
	if err != nil {
		r.mu.Lock()
		r.dirty = true
		r.mu.Unlock()
	}
	return err
}

func (r *reconciler) putStatus(ctx context.Context, st v1alpha1.SpeakerStatusStatus) error {
	var obj v1alpha1.SpeakerStatus
	err := r.reader.Get(ctx, types.NamespacedName{Name: r.opts.NodeName}, &obj)
	if apierrors.IsNotFound(err) {
		obj = v1alpha1.SpeakerStatus{ObjectMeta: metav1.ObjectMeta{Name: r.opts.NodeName}}
		if err := r.client.Create(ctx, &obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create: %w", err)
		}
		if err := r.reader.Get(ctx, types.NamespacedName{Name: r.opts.NodeName}, &obj); err != nil {
			return fmt.Errorf("get: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if equality.Semantic.DeepEqual(obj.Status, st) {
		return nil
	}
	obj.Status = st
	if err := r.client.Status().Update(ctx, &obj); err != nil {
		return fmt.Errorf("update status: %w", err)
	}
	return nil
}

// servedClass reports whether svc is zerohop's to announce: no class (its
// address then came from zerohop's controller only if that runs with
// --default-class) or zerohop's own.
func servedClass(svc *corev1.Service) bool {
	c := svc.Spec.LoadBalancerClass
	return c == nil || *c == v1alpha1.LoadBalancerClass
}
