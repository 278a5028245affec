package controller_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/controller"
)

// TestReadinessGate plays two speakers and the EndpointSlice controller
// against a real API server and follows one gated Pod: False while no node
// announces the VIP (another endpoint being ready), False while an announcing node has not programmed the
// slice generation that lists the Pod, True once both have, False again
// when every announcement is gone. A Pod whose Service has no ready
// endpoint (so is announced nowhere) waits for every node with a speaker.
// A gated Pod no zerohop Service selects
// is let through at once, and an unlabelled gated Pod is never looked at.
func TestReadinessGate(t *testing.T) {
	e := newEnv(t)
	const ns = "zh-gate"
	e.namespace(t, ns, nil)
	// No controller-manager here to make the namespace's ServiceAccount.
	if err := e.cli.Create(context.Background(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}}); err != nil {
		t.Fatal(err)
	}
	stop := e.startController(t, controller.Options{})
	defer stop()
	e.pool(t, "gate-pool", []string{"192.0.2.96/29"})
	for _, n := range []string{"g1", "g2"} {
		e.node(t, n, true)
	}
	e.svc(t, ns, "web", func(s *corev1.Service) { s.Spec.Selector = map[string]string{"app": "web"} })
	e.waitIPs(t, ns, "web", "192.0.2.96")

	pod := e.gatedPod(t, ns, "web-1", map[string]string{"app": "web", controller.LabelReadinessGate: "true"})
	e.podContainersReady(t, ns, "web-1")
	e.waitGate(t, ns, "web-1", corev1.ConditionFalse, controller.ReasonGateNotInSlice)

	// Another endpoint is ready, so the gate waits for the announcement.
	sl := e.slice(t, ns, "web-abc", "web", pod, true)
	e.waitGate(t, ns, "web-1", corev1.ConditionFalse, controller.ReasonGateNotAnnounced)

	const svc = ns + "/web"
	announce := func(st *v1alpha1.SpeakerStatusStatus, slices []v1alpha1.SliceGeneration) {
		st.Sessions = []v1alpha1.BGPSessionStatus{{Peer: "r1", State: "established"}}
		st.Announcements = []v1alpha1.ServiceAnnouncement{{Service: svc, Prefixes: []string{"192.0.2.96/32"}, Peers: []string{"r1"}}}
		st.Datapath = &v1alpha1.DatapathStatus{Programmed: []string{svc}, EndpointSlices: slices}
	}
	// g1 has the slice's generation, g2 one before it.
	cur := []v1alpha1.SliceGeneration{{Name: ns + "/web-abc", Generation: sl.Generation}}
	old := []v1alpha1.SliceGeneration{{Name: ns + "/web-abc", Generation: sl.Generation - 1}}
	// (g2 first: g1 alone would rightly open the gate.)
	e.speakerStatus(t, "g2", func(st *v1alpha1.SpeakerStatusStatus) { announce(st, old) })
	e.waitGate(t, ns, "web-1", corev1.ConditionFalse, controller.ReasonGateNotProgrammed)
	e.speakerStatus(t, "g1", func(st *v1alpha1.SpeakerStatusStatus) { announce(st, cur) })
	time.Sleep(300 * time.Millisecond)
	e.waitGate(t, ns, "web-1", corev1.ConditionFalse, controller.ReasonGateNotProgrammed)
	if c := e.gate(t, ns, "web-1"); c.Message != fmt.Sprintf("service %s: slice %s/web-abc generation %d not yet programmed on g2", svc, ns, sl.Generation) {
		t.Fatalf("message %q", c.Message)
	}

	// g2 catches up: True, and the delay is measured.
	before := histCount(t, "zerohop_readiness_gate_delay_seconds")
	e.speakerStatus(t, "g2", func(st *v1alpha1.SpeakerStatusStatus) { announce(st, cur) })
	e.waitGate(t, ns, "web-1", corev1.ConditionTrue, controller.ReasonGateReachable)
	if n := histCount(t, "zerohop_readiness_gate_delay_seconds"); n != before+1 {
		t.Fatalf("gate delay observations: %v, want %v", n, before+1)
	}
	e.waitEvent(t, ns, "web-1", "LoadBalancerReady", "reachable")

	// Once True, a node lagging behind a churned slice does not take it
	// back; losing every announcement does.
	e.speakerStatus(t, "g1", func(st *v1alpha1.SpeakerStatusStatus) { announce(st, old) })
	time.Sleep(500 * time.Millisecond)
	if c := e.gate(t, ns, "web-1"); c.Status != corev1.ConditionTrue {
		t.Fatalf("gate after a node fell behind: %+v", c)
	}
	for _, n := range []string{"g1", "g2"} {
		e.speakerStatus(t, n, func(st *v1alpha1.SpeakerStatusStatus) {
			announce(st, cur)
			st.Sessions[0].State = "active"
		})
	}
	e.waitGate(t, ns, "web-1", corev1.ConditionFalse, controller.ReasonGateNotAnnounced)

	// A Service with no ready endpoint is not announced by any speaker:
	// the gate waits for its slice on every ready node with a speaker.
	e.svc(t, ns, "solo", func(s *corev1.Service) { s.Spec.Selector = map[string]string{"app": "solo"} })
	e.waitIPs(t, ns, "solo", "192.0.2.97")
	solo := e.gatedPod(t, ns, "solo-1", map[string]string{"app": "solo", controller.LabelReadinessGate: "true"})
	soloSl := e.slice(t, ns, "solo-abc", "solo", solo, false)
	e.waitGate(t, ns, "solo-1", corev1.ConditionFalse, controller.ReasonGateNotProgrammed)
	// Sorted by name, as a speaker writes them.
	both := []v1alpha1.SliceGeneration{{Name: ns + "/solo-abc", Generation: soloSl.Generation}, cur[0]}
	e.speakerStatus(t, "g1", func(st *v1alpha1.SpeakerStatusStatus) { announce(st, both) })
	e.waitGate(t, ns, "solo-1", corev1.ConditionFalse, controller.ReasonGateNotProgrammed)
	e.speakerStatus(t, "g2", func(st *v1alpha1.SpeakerStatusStatus) { announce(st, both) })
	e.waitGate(t, ns, "solo-1", corev1.ConditionTrue, controller.ReasonGateReachable)
	if c := e.gate(t, ns, "solo-1"); !strings.Contains(c.Message, "programmed on g1, g2, announced once an endpoint is Ready") {
		t.Fatalf("message %q", c.Message)
	}

	// No zerohop Service selects this one: through at once.
	e.gatedPod(t, ns, "other-1", map[string]string{"app": "other", controller.LabelReadinessGate: "true"})
	e.waitGate(t, ns, "other-1", corev1.ConditionTrue, controller.ReasonGateNoLB)

	// Without the label the controller does not see the Pod.
	e.gatedPod(t, ns, "unlabelled-1", map[string]string{"app": "other"})
	time.Sleep(time.Second)
	if c := e.gate(t, ns, "unlabelled-1"); c != nil {
		t.Fatalf("unlabelled Pod got the gate condition %+v", c)
	}
}

func (e *env) gatedPod(t *testing.T, ns, name string, lbls map[string]string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls},
		Spec: corev1.PodSpec{
			NodeName:       "g1",
			Containers:     []corev1.Container{{Name: "c", Image: "example.invalid/web"}},
			ReadinessGates: []corev1.PodReadinessGate{{ConditionType: controller.ConditionLoadBalancerReady}},
		},
	}
	if err := e.cli.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

// podContainersReady plays the kubelet: the containers are ready, the Pod
// is not (its gate is not True).
func (e *env) podContainersReady(t *testing.T, ns, name string) {
	t.Helper()
	// The controller writes the gate meanwhile: read again on conflict.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		return e.setContainersReady(ns, name)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (e *env) setContainersReady(ns, name string) error {
	var p corev1.Pod
	if err := e.cli.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &p); err != nil {
		return err
	}
	p.Status.Phase = corev1.PodRunning
	p.Status.PodIP = "10.244.1.10"
	p.Status.Conditions = append(p.Status.Conditions,
		corev1.PodCondition{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()},
		corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "ReadinessGatesNotReady", LastTransitionTime: metav1.Now()})
	return e.cli.Status().Update(context.Background(), &p)
}

// slice plays the EndpointSlice controller: the Pod, not ready (its gate
// holds it back).
func (e *env) slice(t *testing.T, ns, name, svc string, pod *corev1.Pod, withReady bool) *discoveryv1.EndpointSlice {
	t.Helper()
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{"10.244.1.10"},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(false), Terminating: ptr.To(false)},
			NodeName:   ptr.To("g1"),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod.Name, UID: pod.UID},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To(""), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	if withReady {
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{"10.244.2.10"},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			NodeName:   ptr.To("g2"),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: svc + "-0"},
		})
	}
	if err := e.cli.Create(context.Background(), sl); err != nil {
		t.Fatal(err)
	}
	if sl.Generation == 0 {
		t.Fatal("the API server gave the slice no generation")
	}
	return sl
}

func (e *env) gate(t *testing.T, ns, name string) *corev1.PodCondition {
	t.Helper()
	var p corev1.Pod
	if err := e.cli.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &p); err != nil {
		t.Fatal(err)
	}
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == controller.ConditionLoadBalancerReady {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

func (e *env) waitGate(t *testing.T, ns, name string, status corev1.ConditionStatus, reason string) {
	t.Helper()
	eventually(t, waitFor, func() string {
		c := e.gate(t, ns, name)
		if c == nil || c.Status != status || c.Reason != reason {
			return fmt.Sprintf("pod %s/%s gate: %+v; want %s %s", ns, name, c, status, reason)
		}
		return ""
	})
	// The kubelet's conditions are untouched by the gate's writes.
	var p corev1.Pod
	if err := e.cli.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &p); err != nil {
		t.Fatal(err)
	}
	if p.Status.PodIP != "" {
		found := false
		for _, c := range p.Status.Conditions {
			found = found || (c.Type == corev1.ContainersReady && c.Status == corev1.ConditionTrue)
		}
		if !found {
			t.Fatalf("pod %s/%s lost its ContainersReady condition: %+v", ns, name, p.Status.Conditions)
		}
	}
}

// histCount reads how many observations a histogram of
// controller-runtime's registry holds.
func histCount(t *testing.T, name string) uint64 {
	t.Helper()
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var n uint64
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
			return n
		}
	}
	return 0
}
