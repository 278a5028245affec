package speaker

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/zerohop/zerohop/config/v1alpha1"
)

// snapshot is one consistent read of the cache: everything a reconcile
// decides from, read once at its start. Services, EndpointSlices and Nodes
// are the cache's own objects (no deep copy: at 10,000 Services a copy of
// them per reconcile was most of the speaker's garbage, and so of its peak
// memory) and must not be written.
type snapshot struct {
	// node is this node; nodeKnown is false while it does not exist.
	node      corev1.Node
	nodeKnown bool
	nodes     []corev1.Node

	pools    []*v1alpha1.IPAddressPool
	peers    []v1alpha1.BGPPeer
	bgpAdvs  []v1alpha1.BGPAdvertisement
	profiles []v1alpha1.BFDProfile
	l2Advs   []v1alpha1.L2Advertisement
	// statuses are the speakers' SpeakerStatuses, read only for L2 mode
	// (its majority); nil otherwise, so that other speakers do not cache
	// them.
	statuses []v1alpha1.SpeakerStatus

	// services are the Services of zerohop's class (servedClass).
	services       []corev1.Service
	endpointSlices []discoveryv1.EndpointSlice
	// slicesOf indexes endpointSlices by their Service.
	slicesOf map[types.NamespacedName][]*discoveryv1.EndpointSlice
}

// read takes the snapshot.
func (r *reconciler) read(ctx context.Context) (*snapshot, error) {
	s := &snapshot{nodeKnown: true}
	if err := r.client.Get(ctx, types.NamespacedName{Name: r.opts.NodeName}, &s.node); err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("node %s: %w", r.opts.NodeName, err)
		}
		s.nodeKnown = false
	}
	var (
		pools    v1alpha1.IPAddressPoolList
		peers    v1alpha1.BGPPeerList
		bgpAdvs  v1alpha1.BGPAdvertisementList
		profiles v1alpha1.BFDProfileList
		l2Advs   v1alpha1.L2AdvertisementList
		nodes    corev1.NodeList
		svcs     corev1.ServiceList
		sls      discoveryv1.EndpointSliceList
	)
	for _, l := range []struct {
		what string
		list client.ObjectList
		opts []client.ListOption
	}{
		{"pools", &pools, nil},
		{"bgppeers", &peers, nil},
		{"bgpadvertisements", &bgpAdvs, nil},
		{"bfdprofiles", &profiles, nil},
		{"l2advertisements", &l2Advs, nil},
		{"nodes", &nodes, []client.ListOption{client.UnsafeDisableDeepCopy}},
		{"services", &svcs, []client.ListOption{client.UnsafeDisableDeepCopy}},
		{"endpointslices", &sls, []client.ListOption{client.UnsafeDisableDeepCopy}},
	} {
		if err := r.client.List(ctx, l.list, l.opts...); err != nil {
			return nil, fmt.Errorf("list %s: %w", l.what, err)
		}
	}
	if len(l2Advs.Items) > 0 || r.l2.active() {
		var statuses v1alpha1.SpeakerStatusList
		if err := r.client.List(ctx, &statuses); err != nil {
			return nil, fmt.Errorf("list speakerstatuses: %w", err)
		}
		s.statuses = statuses.Items
	}
	for i := range pools.Items {
		s.pools = append(s.pools, &pools.Items[i])
	}
	s.peers, s.bgpAdvs, s.profiles, s.l2Advs = peers.Items, bgpAdvs.Items, profiles.Items, l2Advs.Items
	s.nodes, s.endpointSlices = nodes.Items, sls.Items
	// A Service of another loadBalancerClass belongs to another
	// implementation: never balance or announce it, even with an IP in a
	// zerohop pool.
	s.services = slices.DeleteFunc(svcs.Items, func(svc corev1.Service) bool { return !servedClass(&svc) })
	s.slicesOf = map[types.NamespacedName][]*discoveryv1.EndpointSlice{}
	for i := range s.endpointSlices {
		sl := &s.endpointSlices[i]
		name := sl.Labels[discoveryv1.LabelServiceName]
		if name == "" {
			continue
		}
		k := types.NamespacedName{Namespace: sl.Namespace, Name: name}
		s.slicesOf[k] = append(s.slicesOf[k], sl)
	}
	return s, nil
}

// servedClass reports whether svc is zerohop's to announce: no class (its
// address then came from zerohop's controller only if that runs with
// --default-class) or zerohop's own.
func servedClass(svc *corev1.Service) bool {
	c := svc.Spec.LoadBalancerClass
	return c == nil || *c == v1alpha1.LoadBalancerClass
}
