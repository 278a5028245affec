package speaker

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/zerohop/zerohop/bpf"
	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/speaker/datapath"
)

// Caps of SpeakerStatus.Datapath, like those of the announcements.
const (
	maxProgrammed     = 5000
	maxDatapathFailed = 50
	maxReason         = 256
)

var (
	datapathUnprogrammed = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "zerohop_speaker_datapath_unprogrammed_services",
		Help: "Services with a datapath entry that is not in place on this node after the last reconcile; their addresses are not announced from it.",
	})
	datapathStatusOnce sync.Once
)

func registerDatapathStatusMetrics() {
	datapathStatusOnce.Do(func() { metrics.Registry.MustRegister(datapathUnprogrammed) })
}

// noteDatapath records, for SpeakerStatus, which Services have every
// entry of desired in place after a Program round (a Service is
// programmed unless one of its addresses is blocked). errs are the
// round's errors: the first becomes the reason of the failed Services,
// which is all a write error says about which keys it hit.
//
// It lists too the generation of every EndpointSlice of a programmed
// Service, taken from the snapshot the entries were made from: the
// readiness gate reads it to know that a Pod's backend is in place here.
func (r *reconciler) noteDatapath(desired map[bpf.ServiceKey]datapath.Entry, blocked map[netip.Addr]bool, errs []error, slicesOf map[types.NamespacedName][]*discoveryv1.EndpointSlice) {
	failed := map[string]bool{}
	all := map[string]bool{}
	for key, e := range desired {
		all[e.Service] = true
		if blocked[key.Addr] {
			failed[e.Service] = true
		}
	}
	reason := ""
	if len(errs) > 0 {
		reason = errs[0].Error()
		if len(reason) > maxReason {
			reason = reason[:maxReason]
		}
	}
	st := &v1alpha1.DatapathStatus{}
	for _, s := range slices.Sorted(maps.Keys(all)) {
		switch {
		case failed[s]:
			if len(st.Failed) < maxDatapathFailed {
				st.Failed = append(st.Failed, v1alpha1.DatapathFailure{Service: s, Reason: reason})
			}
		case len(st.Programmed) == maxProgrammed:
			st.Truncated = true
		default:
			st.Programmed = append(st.Programmed, s)
		}
	}
	for _, s := range st.Programmed {
		ns, name, _ := strings.Cut(s, "/")
		for _, sl := range slicesOf[types.NamespacedName{Namespace: ns, Name: name}] {
			st.EndpointSlices = append(st.EndpointSlices, v1alpha1.SliceGeneration{Name: sl.Namespace + "/" + sl.Name, Generation: sl.Generation})
		}
	}
	slices.SortFunc(st.EndpointSlices, func(a, b v1alpha1.SliceGeneration) int { return strings.Compare(a.Name, b.Name) })
	if len(st.EndpointSlices) > maxProgrammed {
		st.EndpointSlices = st.EndpointSlices[:maxProgrammed]
		st.Truncated = true
	}
	datapathUnprogrammed.Set(float64(len(failed)))
	waiting := map[string]bool{}
	for _, s := range st.Programmed {
		ns, name, _ := strings.Cut(s, "/")
		for _, sl := range slicesOf[types.NamespacedName{Namespace: ns, Name: name}] {
			for _, ep := range sl.Endpoints {
				if datapath.Waiting(ep.Conditions) && len(ep.Addresses) > 0 {
					waiting[sl.Namespace+"/"+sl.Name+"/"+ep.Addresses[0]] = true
				}
			}
		}
	}
	r.mu.Lock()
	r.dpStatus = st
	for k := range waiting {
		if !r.waiting[k] {
			r.urgent = true
			break
		}
	}
	r.waiting = waiting
	r.mu.Unlock()
}
