package speaker

import (
	"context"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/zerohop/zerohop/bpf"
	"github.com/zerohop/zerohop/speaker/bgp"
	"github.com/zerohop/zerohop/speaker/datapath"
)

// programDatapath is the datapath phase: it translates every Service of
// the snapshot into datapath entries and writes the new and changed ones
// (speaker/datapath). It returns the entries wanted, for retireDatapath,
// and the Services whose VIPs may be announced: those with a VIP whose
// entries are not all in place have it taken out. Without a datapath it
// returns every Service.
func (r *reconciler) programDatapath(ctx context.Context, snap *snapshot, rd *round) (map[bpf.ServiceKey]datapath.Entry, []corev1.Service) {
	if r.dp == nil {
		return nil, snap.services
	}
	svcs, sls, addrs, down := translateInput(snap.services, snap.endpointSlices, snap.nodes)
	desired, errs := datapath.Translate(r.opts.NodeName, svcs, sls, addrs, down)
	rd.problem(errs...)
	var l2Interfaces []string
	for _, a := range snap.l2Advs {
		l2Interfaces = append(l2Interfaces, a.Spec.Interfaces...)
	}
	blocked, errs := r.dp.Program(ctx, &snap.node, snap.nodes, l2Interfaces, desired)
	rd.problem(errs...)
	r.noteDatapath(desired, blocked, errs, snap.slicesOf)
	return desired, announceable(snap.services, blocked)
}

// retireDatapath is the retire phase: entries no longer wanted go once
// their grace has passed; the announcement phases before it have already
// withdrawn them. It returns when to look again, or 0.
func (r *reconciler) retireDatapath(ctx context.Context, desired map[bpf.ServiceKey]datapath.Entry, rd *round) time.Duration {
	if r.dp == nil {
		return 0
	}
	next, err := r.dp.Retire(ctx, desired)
	if err != nil {
		rd.fail(err)
	}
	return next
}

// DefaultPodLinkInterval is how often the speaker looks for Pods'
// interfaces between reconciles.
const DefaultPodLinkInterval = 5 * time.Second

// podLinkLoop looks for Pods' interfaces now and then: a Pod's veth, or
// the MAC a bridge learns for it, appears without an event the speaker
// watches. Until then its packets go through the node's stack.
func (r *reconciler) podLinkLoop(ctx context.Context) error {
	if r.dp == nil || !r.opts.DirectToPods {
		return nil
	}
	every := r.opts.PodLinkInterval
	if every <= 0 {
		every = DefaultPodLinkInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := r.dp.SyncPodLinks(); err != nil {
				r.log.Error(err, "pod links")
			}
		}
	}
}

// announceable returns the Services with the blocked VIPs taken out of
// their status, so that neither BGP nor L2 announces an address whose
// datapath entries are not all in place. svcs is not modified.
func announceable(svcs []corev1.Service, blocked map[netip.Addr]bool) []corev1.Service {
	if len(blocked) == 0 {
		return svcs
	}
	out := make([]corev1.Service, len(svcs))
	for i := range svcs {
		out[i] = svcs[i]
		ing := svcs[i].Status.LoadBalancer.Ingress
		kept := make([]corev1.LoadBalancerIngress, 0, len(ing))
		for _, in := range ing {
			if ip, err := netip.ParseAddr(in.IP); err == nil && blocked[ip.Unmap()] {
				continue
			}
			kept = append(kept, in)
		}
		out[i].Status.LoadBalancer.Ingress = kept
	}
	return out
}

// translateInput adapts the snapshot's lists to datapath.Translate.
func translateInput(svcs []corev1.Service, sls []discoveryv1.EndpointSlice, nodes []corev1.Node) ([]*corev1.Service, []*discoveryv1.EndpointSlice, map[string][]netip.Addr, map[string]bool) {
	sp := make([]*corev1.Service, len(svcs))
	for i := range svcs {
		sp[i] = &svcs[i]
	}
	lp := make([]*discoveryv1.EndpointSlice, len(sls))
	for i := range sls {
		lp[i] = &sls[i]
	}
	addrs := make(map[string][]netip.Addr, len(nodes))
	down := map[string]bool{}
	for i := range nodes {
		addrs[nodes[i].Name] = datapath.NodeAddrs(&nodes[i])
		if bgp.NodeShuttingDown(&nodes[i]) {
			down[nodes[i].Name] = true
		}
	}
	return sp, lp, addrs, down
}
