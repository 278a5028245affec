package controller_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/controller"
)

// TestServiceConditions plays three speakers by writing their
// SpeakerStatuses and checks the conditions the controller writes on the
// Service from them: the address and its pool, the announcing nodes and
// the peers with an established session, the datapath on N of M nodes, a
// node that is not Ready left out; then a peer flapping 40 times in two
// seconds, which must cost a bounded number of writes and still end on the
// last state.
func TestServiceConditions(t *testing.T) {
	e := newEnv(t)
	const ns = "zh-conditions"
	e.namespace(t, ns, nil)
	interval := time.Second
	stop := e.startController(t, controller.Options{ConditionInterval: interval})
	defer stop()
	e.pool(t, "cond-pool", []string{"192.0.2.80/29"})
	for _, n := range []string{"c1", "c2", "c3"} {
		e.node(t, n, true)
	}
	e.svc(t, ns, "web")
	e.waitIPs(t, ns, "web", "192.0.2.80")
	e.waitCondition(t, ns, "web", controller.ConditionAddressAssigned, metav1.ConditionTrue, "192.0.2.80 from pool cond-pool")
	e.waitCondition(t, ns, "web", controller.ConditionAnnounced, metav1.ConditionFalse, "no ready node announces 192.0.2.80")

	const svc = ns + "/web"
	announce := func(st *v1alpha1.SpeakerStatusStatus, state string) {
		st.Sessions = []v1alpha1.BGPSessionStatus{{Peer: "r1", State: state}}
		st.Announcements = []v1alpha1.ServiceAnnouncement{{Service: svc, Prefixes: []string{"192.0.2.80/32"}, Peers: []string{"r1"}}}
		st.Datapath = &v1alpha1.DatapathStatus{Programmed: []string{svc}}
	}
	e.speakerStatus(t, "c1", func(st *v1alpha1.SpeakerStatusStatus) { announce(st, "established") })
	e.speakerStatus(t, "c2", func(st *v1alpha1.SpeakerStatusStatus) { announce(st, "established") })
	e.speakerStatus(t, "c3", func(st *v1alpha1.SpeakerStatusStatus) {
		st.Sessions = []v1alpha1.BGPSessionStatus{{Peer: "r1", State: "established"}}
		st.Datapath = &v1alpha1.DatapathStatus{Failed: []v1alpha1.DatapathFailure{{Service: svc, Reason: "datapath: map full"}}}
	})
	e.waitCondition(t, ns, "web", controller.ConditionAnnounced, metav1.ConditionTrue, "192.0.2.80 by c1 (BGP to r1), c2 (BGP to r1)")
	e.waitCondition(t, ns, "web", controller.ConditionDatapathProgrammed, metav1.ConditionFalse, "programmed on 2 of 3 nodes; c3: datapath: map full")
	e.waitEvent(t, ns, "web", "Datapath", "NotProgrammed: programmed on 2 of 3 nodes; c3: datapath: map full")

	// c3 is not Ready: its report no longer counts.
	e.node(t, "c3", false)
	e.waitCondition(t, ns, "web", controller.ConditionDatapathProgrammed, metav1.ConditionTrue, "programmed on 2 of 2 nodes")
	e.waitEvent(t, ns, "web", "Datapath", "Programmed: programmed on 2 of 2 nodes")
	e.waitEvent(t, ns, "web", "Announcement", "Announced: 192.0.2.80 by c1 (BGP to r1), c2 (BGP to r1)")

	// c1's peer flaps 40 times in two seconds; count the condition
	// writes (the controller runs in this process, its registry too).
	before := counter(t, "zerohop_service_condition_writes_total")
	delayedBefore := counter(t, "zerohop_service_condition_writes_delayed_total")
	start := time.Now()
	for i := range 40 {
		state := "active"
		if i%2 == 0 {
			state = "established"
		}
		e.speakerStatus(t, "c1", func(st *v1alpha1.SpeakerStatusStatus) { announce(st, state) })
		time.Sleep(50 * time.Millisecond)
	}
	elapsed := time.Since(start)
	// The last state is c1 not established: the condition must end there.
	e.waitCondition(t, ns, "web", controller.ConditionAnnounced, metav1.ConditionTrue,
		"192.0.2.80 by c2 (BGP to r1); sent but not accepted from c1 (no established session: r1 (active))")
	writes := int(counter(t, "zerohop_service_condition_writes_total") - before)
	delayed := int(counter(t, "zerohop_service_condition_writes_delayed_total") - delayedBefore)
	// A burst of 3, then one per interval.
	limit := 3 + int(elapsed/interval) + 1
	t.Logf("40 session flaps in %s: %d condition writes (limit %d), %d held back", elapsed.Round(time.Millisecond), writes, limit, delayed)
	if writes > limit {
		t.Fatalf("%d Service writes for 40 flaps in %s, want at most %d", writes, elapsed, limit)
	}
	if delayed == 0 {
		t.Fatal("no write held back during the flaps")
	}
}

func (e *env) node(t *testing.T, name string, ready bool) {
	t.Helper()
	ctx := context.Background()
	var n corev1.Node
	if err := e.cli.Get(ctx, types.NamespacedName{Name: name}, &n); err != nil {
		n = corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if err := e.cli.Create(ctx, &n); err != nil {
			t.Fatal(err)
		}
	}
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st, LastHeartbeatTime: metav1.Now()}}
	if err := e.cli.Status().Update(ctx, &n); err != nil {
		t.Fatal(err)
	}
}

func (e *env) speakerStatus(t *testing.T, node string, set func(*v1alpha1.SpeakerStatusStatus)) {
	t.Helper()
	ctx := context.Background()
	var sp v1alpha1.SpeakerStatus
	if err := e.cli.Get(ctx, types.NamespacedName{Name: node}, &sp); err != nil {
		sp = v1alpha1.SpeakerStatus{ObjectMeta: metav1.ObjectMeta{Name: node}}
		if err := e.cli.Create(ctx, &sp); err != nil {
			t.Fatal(err)
		}
	}
	sp.Status = v1alpha1.SpeakerStatusStatus{Node: node}
	set(&sp.Status)
	if err := e.cli.Status().Update(ctx, &sp); err != nil {
		t.Fatal(err)
	}
}

func (e *env) waitCondition(t *testing.T, ns, name, typ string, status metav1.ConditionStatus, message string) {
	t.Helper()
	eventually(t, waitFor, func() string {
		svc := e.getSvc(t, ns, name)
		c := meta.FindStatusCondition(svc.Status.Conditions, typ)
		if c == nil || c.Status != status || c.Message != message {
			return fmt.Sprintf("%s/%s %s: %+v; want %s %q", ns, name, typ, c, status, message)
		}
		return ""
	})
}

// counter reads a counter of controller-runtime's registry.
func counter(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var sum float64
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
