package controller_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/controller"
)

// scenario is one rule exercised against a real API server. Each runs in
// its own namespace with its own pools and a fresh controller.
type scenario struct {
	name string
	// opts for the controller; DefaultClass etc.
	opts controller.Options
	// manual: the scenario starts the controller itself (s.start).
	manual bool
	run    func(t *testing.T, e *env, s *sc)
}

// sc carries a scenario's names so pools and namespaces never collide.
type sc struct {
	ns     string
	prefix string
	start  func() // starts the controller (manual scenarios)
}

func (s *sc) pool(n string) string { return s.prefix + n }

func annotate(k, v string) func(*corev1.Service) {
	return func(svc *corev1.Service) {
		if svc.Annotations == nil {
			svc.Annotations = map[string]string{}
		}
		svc.Annotations[k] = v
	}
}

func ports(ps ...int32) func(*corev1.Service) {
	return func(svc *corev1.Service) {
		svc.Spec.Ports = nil
		for _, p := range ps {
			svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: fmt.Sprintf("p%d", p), Port: p, Protocol: corev1.ProtocolTCP})
		}
	}
}

func selector(v string) func(*corev1.Service) {
	return func(svc *corev1.Service) { svc.Spec.Selector = map[string]string{"app": v} }
}

func local(svc *corev1.Service) {
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
}

func dual(pol corev1.IPFamilyPolicy, fams ...corev1.IPFamily) func(*corev1.Service) {
	return func(svc *corev1.Service) {
		svc.Spec.IPFamilyPolicy = &pol
		svc.Spec.IPFamilies = fams
	}
}

func notAuto(p *v1alpha1.IPAddressPool) {
	f := false
	p.Spec.AutoAssign = &f
}

func alloc(sa v1alpha1.ServiceAllocation) func(*v1alpha1.IPAddressPool) {
	return func(p *v1alpha1.IPAddressPool) { p.Spec.ServiceAllocation = &sa }
}

func scenarios() []scenario {
	const share = controller.AnnotationShare
	return []scenario{
		{name: "first allocation, VIP mode, event and pool counts", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("a"), []string{"192.0.2.8/30"})
			e.svc(t, s.ns, "web")
			e.waitIPs(t, s.ns, "web", "192.0.2.8")
			e.waitEvent(t, s.ns, "web", "IPAllocated", "192.0.2.8", "pool "+s.pool("a"))
			e.waitPool(t, s.pool("a"), func(p *v1alpha1.IPAddressPool) string {
				if p.Status.AssignedIPv4 != 1 || p.Status.AvailableIPv4 != 3 || p.Status.AvailableIPv6 != 0 {
					return fmt.Sprintf("status %+v", p.Status)
				}
				return ""
			})
		}},
		{name: "pool exhaustion event, deletion frees the IP", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("tiny"), []string{"192.0.2.20/32"})
			e.svc(t, s.ns, "one")
			e.waitIPs(t, s.ns, "one", "192.0.2.20")
			e.svc(t, s.ns, "two")
			e.waitEvent(t, s.ns, "two", "PoolExhausted", s.pool("tiny"), "exhausted")
			e.holdIPs(t, 300*time.Millisecond, s.ns, "two")
			e.deleteSvc(t, s.ns, "one")
			e.waitIPs(t, s.ns, "two", "192.0.2.20")
		}},
		{name: "requested IP by annotation", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("a"), []string{"192.0.2.0/28"})
			e.svc(t, s.ns, "web", annotate(controller.AnnotationIPs, "192.0.2.7"))
			e.waitIPs(t, s.ns, "web", "192.0.2.7")
		}},
		{name: "requested IP by deprecated spec.loadBalancerIP", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("a"), []string{"192.0.2.0/28"})
			e.svc(t, s.ns, "web", func(svc *corev1.Service) { svc.Spec.LoadBalancerIP = "192.0.2.9" })
			e.waitIPs(t, s.ns, "web", "192.0.2.9")
		}},
		{name: "requested IP conflict names the holder", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("a"), []string{"192.0.2.0/28"})
			e.svc(t, s.ns, "first", annotate(controller.AnnotationIPs, "192.0.2.5"))
			e.waitIPs(t, s.ns, "first", "192.0.2.5")
			e.svc(t, s.ns, "second", annotate(controller.AnnotationIPs, "192.0.2.5"))
			e.waitEvent(t, s.ns, "second", "IPInUse", "192.0.2.5", s.ns+"/first")
			e.holdIPs(t, 300*time.Millisecond, s.ns, "second")
		}},
		{name: "requested IP outside every pool", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("a"), []string{"192.0.2.0/28"})
			e.svc(t, s.ns, "web", annotate(controller.AnnotationIPs, "203.0.113.77"))
			e.waitEvent(t, s.ns, "web", "IPNotInPool", "203.0.113.77")
			e.holdIPs(t, 300*time.Millisecond, s.ns, "web")
		}},
		{name: "invalid requested IP is refused with an event", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("a"), []string{"192.0.2.0/28"})
			e.svc(t, s.ns, "web", annotate(controller.AnnotationIPs, "banana"))
			e.waitEvent(t, s.ns, "web", "InvalidRequest", "banana")
		}},
		{name: "address-pool annotation picks a non-auto pool", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("auto"), []string{"192.0.2.0/30"})
			e.pool(t, s.pool("manual"), []string{"198.51.100.0/30"}, notAuto)
			e.svc(t, s.ns, "plain")
			e.svc(t, s.ns, "picky", annotate(controller.AnnotationPool, s.pool("manual")))
			e.waitIPs(t, s.ns, "plain", "192.0.2.0")
			e.waitIPs(t, s.ns, "picky", "198.51.100.0")
		}},
		{name: "unknown pool annotation is refused", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("a"), []string{"192.0.2.0/30"})
			e.svc(t, s.ns, "web", annotate(controller.AnnotationPool, "no-such-pool"))
			e.waitEvent(t, s.ns, "web", "NoPool", "no-such-pool")
		}},
		{name: "autoAssign false pool is not used without the annotation", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("manual"), []string{"198.51.100.0/30"}, notAuto)
			e.svc(t, s.ns, "web")
			e.waitEvent(t, s.ns, "web", "NoPool", "auto-assign")
			e.holdIPs(t, 300*time.Millisecond, s.ns, "web")
		}},
		{name: "priority orders pools", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("a-unprioritised"), []string{"192.0.2.0/30"})
			e.pool(t, s.pool("b-second"), []string{"198.51.100.0/30"}, alloc(v1alpha1.ServiceAllocation{Priority: 20}))
			e.pool(t, s.pool("c-first"), []string{"203.0.113.0/30"}, alloc(v1alpha1.ServiceAllocation{Priority: 10}))
			e.svc(t, s.ns, "web")
			e.waitIPs(t, s.ns, "web", "203.0.113.0")
		}},
		{name: "pool restricted to other namespaces is skipped", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("elsewhere"), []string{"203.0.113.0/30"}, alloc(v1alpha1.ServiceAllocation{Priority: 1, Namespaces: []string{"zh-nobody"}}))
			e.pool(t, s.pool("mine"), []string{"198.51.100.0/30"}, alloc(v1alpha1.ServiceAllocation{Priority: 2, Namespaces: []string{s.ns}}))
			e.svc(t, s.ns, "web")
			e.waitIPs(t, s.ns, "web", "198.51.100.0")
		}},
		{name: "pool selected by namespace label, applied when the label appears", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("prod"), []string{"203.0.113.0/30"}, alloc(v1alpha1.ServiceAllocation{
				NamespaceSelectors: []v1alpha1.LabelSelector{{MatchLabels: map[string]string{"zh-env": "prod"}}}}))
			e.svc(t, s.ns, "web")
			e.waitEvent(t, s.ns, "web", "NoPool")
			e.holdIPs(t, 300*time.Millisecond, s.ns, "web")
			var ns corev1.Namespace
			ns.Name = s.ns
			if err := e.cli.Get(t.Context(), clientKey(s.ns), &ns); err != nil {
				t.Fatal(err)
			}
			ns.Labels = map[string]string{"zh-env": "prod"}
			if err := e.cli.Update(t.Context(), &ns); err != nil {
				t.Fatal(err)
			}
			e.waitIPs(t, s.ns, "web", "203.0.113.0")
		}},
		{name: "pool selected by service label", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("web"), []string{"203.0.113.0/30"}, alloc(v1alpha1.ServiceAllocation{Priority: 1,
				ServiceSelectors: []v1alpha1.LabelSelector{{MatchExpressions: []v1alpha1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"web"}}}}}}))
			e.pool(t, s.pool("rest"), []string{"198.51.100.0/30"}, alloc(v1alpha1.ServiceAllocation{Priority: 2}))
			e.svc(t, s.ns, "front", func(svc *corev1.Service) { svc.Labels = map[string]string{"tier": "web"} })
			e.svc(t, s.ns, "back")
			e.waitIPs(t, s.ns, "front", "203.0.113.0")
			e.waitIPs(t, s.ns, "back", "198.51.100.0")
		}},
		{name: "class filtering without --default-class", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("a"), []string{"192.0.2.0/30"})
			e.svc(t, s.ns, "other", func(svc *corev1.Service) { c := "example.com/lb"; svc.Spec.LoadBalancerClass = &c })
			e.svc(t, s.ns, "unset", func(svc *corev1.Service) { svc.Spec.LoadBalancerClass = nil })
			e.svc(t, s.ns, "cip", func(svc *corev1.Service) {
				svc.Spec.Type = corev1.ServiceTypeClusterIP
				svc.Spec.LoadBalancerClass = nil
				svc.Spec.AllocateLoadBalancerNodePorts = nil
			})
			e.svc(t, s.ns, "ours")
			e.waitIPs(t, s.ns, "ours", "192.0.2.0")
			e.holdIPs(t, 500*time.Millisecond, s.ns, "other")
			e.holdIPs(t, 0, s.ns, "unset")
			e.holdIPs(t, 0, s.ns, "cip")
			e.noEvents(t, s.ns, "other")
			e.noEvents(t, s.ns, "unset")
		}},
		{name: "class unset is served with --default-class, other classes are not", opts: controller.Options{DefaultClass: true}, run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("a"), []string{"192.0.2.0/30"})
			e.svc(t, s.ns, "unset", func(svc *corev1.Service) { svc.Spec.LoadBalancerClass = nil })
			e.svc(t, s.ns, "other", func(svc *corev1.Service) { c := "example.com/lb"; svc.Spec.LoadBalancerClass = &c })
			e.waitIPs(t, s.ns, "unset", "192.0.2.0")
			e.holdIPs(t, 300*time.Millisecond, s.ns, "other")
		}},
		{name: "type change to ClusterIP releases the IP to a waiting Service", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("tiny"), []string{"192.0.2.30/32"})
			e.svc(t, s.ns, "was-lb")
			e.waitIPs(t, s.ns, "was-lb", "192.0.2.30")
			e.svc(t, s.ns, "waiting")
			e.waitEvent(t, s.ns, "waiting", "PoolExhausted")
			e.update(t, s.ns, "was-lb", func(svc *corev1.Service) {
				svc.Spec.Type = corev1.ServiceTypeClusterIP
				svc.Spec.LoadBalancerClass = nil
				svc.Spec.AllocateLoadBalancerNodePorts = nil
			})
			e.waitIPs(t, s.ns, "was-lb")
			e.waitEvent(t, s.ns, "was-lb", "IPReleased", "192.0.2.30")
			e.waitIPs(t, s.ns, "waiting", "192.0.2.30")
		}},
		{name: "sharing allowed: same key, distinct ports", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("a"), []string{"192.0.2.0/30"})
			e.svc(t, s.ns, "http", annotate(share, "k"), ports(80))
			e.waitIPs(t, s.ns, "http", "192.0.2.0")
			e.svc(t, s.ns, "https", annotate(share, "k"), ports(443))
			e.waitIPs(t, s.ns, "https", "192.0.2.0")
			e.waitEvent(t, s.ns, "https", "IPAllocated", "shared with "+s.ns+"/http")
			e.waitPool(t, s.pool("a"), func(p *v1alpha1.IPAddressPool) string {
				if p.Status.AssignedIPv4 != 1 {
					return fmt.Sprintf("a shared IP counts once: %+v", p.Status)
				}
				return ""
			})
		}},
		{name: "sharing refused: port collision on a requested IP", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("a"), []string{"192.0.2.0/30"})
			e.svc(t, s.ns, "one", annotate(share, "k"), annotate(controller.AnnotationIPs, "192.0.2.2"), ports(80))
			e.waitIPs(t, s.ns, "one", "192.0.2.2")
			e.svc(t, s.ns, "two", annotate(share, "k"), annotate(controller.AnnotationIPs, "192.0.2.2"), ports(80, 8080))
			e.waitEvent(t, s.ns, "two", "IPInUse", s.ns+"/one", "80/TCP collides")
		}},
		{name: "sharing refused: Local traffic policy with different selectors", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("a"), []string{"192.0.2.0/30"})
			e.svc(t, s.ns, "one", annotate(share, "k"), annotate(controller.AnnotationIPs, "192.0.2.1"), ports(80), local, selector("x"))
			e.waitIPs(t, s.ns, "one", "192.0.2.1")
			e.svc(t, s.ns, "two", annotate(share, "k"), annotate(controller.AnnotationIPs, "192.0.2.1"), ports(81), local, selector("y"))
			e.waitEvent(t, s.ns, "two", "IPInUse", "identical selectors")
			e.svc(t, s.ns, "three", annotate(share, "k"), annotate(controller.AnnotationIPs, "192.0.2.1"), ports(82), local, selector("x"))
			e.waitIPs(t, s.ns, "three", "192.0.2.1")
		}},
		{name: "sharing refused: different keys and Cluster vs Local", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("a"), []string{"192.0.2.0/30"})
			e.svc(t, s.ns, "one", annotate(share, "k"), annotate(controller.AnnotationIPs, "192.0.2.1"), ports(80))
			e.waitIPs(t, s.ns, "one", "192.0.2.1")
			e.svc(t, s.ns, "two", annotate(share, "other"), annotate(controller.AnnotationIPs, "192.0.2.1"), ports(81))
			e.waitEvent(t, s.ns, "two", "IPInUse", "sharing keys differ")
			e.svc(t, s.ns, "three", annotate(share, "k"), annotate(controller.AnnotationIPs, "192.0.2.1"), ports(82), local)
			e.waitEvent(t, s.ns, "three", "IPInUse", "externalTrafficPolicy differs")
		}},
		{name: "auto-assign with a colliding sharing key takes a new IP and says why", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("a"), []string{"192.0.2.0/30"})
			e.svc(t, s.ns, "one", annotate(share, "k"), ports(80))
			e.waitIPs(t, s.ns, "one", "192.0.2.0")
			e.svc(t, s.ns, "two", annotate(share, "k"), ports(80))
			e.waitIPs(t, s.ns, "two", "192.0.2.1")
			e.waitEvent(t, s.ns, "two", "SharingRefused", s.ns+"/one", "80/TCP collides")
		}},
		{name: "port change breaking sharing moves only the changed Service", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("a"), []string{"192.0.2.0/30"})
			e.svc(t, s.ns, "one", annotate(share, "k"), ports(80))
			e.waitIPs(t, s.ns, "one", "192.0.2.0")
			e.svc(t, s.ns, "two", annotate(share, "k"), ports(443))
			e.waitIPs(t, s.ns, "two", "192.0.2.0")
			e.update(t, s.ns, "two", ports(443, 80))
			e.waitEvent(t, s.ns, "two", "SharingBroken", "80/TCP collides")
			e.waitIPs(t, s.ns, "two", "192.0.2.1")
			e.holdIPs(t, 300*time.Millisecond, s.ns, "one", "192.0.2.0")
		}},
		{name: "avoidBuggyIPs skips .255 and .0", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("a"), []string{"192.0.2.255-192.0.3.1"}, func(p *v1alpha1.IPAddressPool) { p.Spec.AvoidBuggyIPs = true })
			e.svc(t, s.ns, "web")
			e.waitIPs(t, s.ns, "web", "192.0.3.1")
			e.svc(t, s.ns, "web2")
			e.waitEvent(t, s.ns, "web2", "PoolExhausted")
			e.waitPool(t, s.pool("a"), func(p *v1alpha1.IPAddressPool) string {
				if p.Status.AssignedIPv4 != 1 || p.Status.AvailableIPv4 != 0 {
					return fmt.Sprintf("status %+v", p.Status)
				}
				return ""
			})
		}},
		{name: "dual stack: both families assigned, counted per family", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("ds"), []string{"192.0.2.0/30", "2001:db8::/126"})
			e.svc(t, s.ns, "web", dual(corev1.IPFamilyPolicyRequireDualStack, corev1.IPv6Protocol, corev1.IPv4Protocol))
			e.waitIPs(t, s.ns, "web", "2001:db8::", "192.0.2.0")
			e.waitPool(t, s.pool("ds"), func(p *v1alpha1.IPAddressPool) string {
				st := p.Status
				if st.AssignedIPv4 != 1 || st.AvailableIPv4 != 3 || st.AssignedIPv6 != 1 || st.AvailableIPv6 != 3 {
					return fmt.Sprintf("status %+v", st)
				}
				return ""
			})
		}},
		{name: "dual stack with IPv6 exhausted: Require gets nothing, Prefer gets IPv4 then IPv6 when freed", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("ds"), []string{"192.0.2.0/30", "2001:db8::5/128"})
			e.svc(t, s.ns, "v6", dual(corev1.IPFamilyPolicySingleStack, corev1.IPv6Protocol))
			e.waitIPs(t, s.ns, "v6", "2001:db8::5")
			e.svc(t, s.ns, "require", dual(corev1.IPFamilyPolicyRequireDualStack, corev1.IPv4Protocol, corev1.IPv6Protocol))
			e.waitEvent(t, s.ns, "require", "RequireDualStackFailed")
			e.holdIPs(t, 300*time.Millisecond, s.ns, "require")
			e.svc(t, s.ns, "prefer", dual(corev1.IPFamilyPolicyPreferDualStack, corev1.IPv4Protocol, corev1.IPv6Protocol))
			e.waitIPs(t, s.ns, "prefer", "192.0.2.0")
			e.waitEvent(t, s.ns, "prefer", "PoolExhausted", "IPv6")
			e.deleteSvc(t, s.ns, "v6")
			// Either waiting Service may win the freed IPv6 address; the
			// other must stay as it is.
			eventually(t, waitFor, func() string {
				r, p := ingressIPs(e.getSvc(t, s.ns, "require")), ingressIPs(e.getSvc(t, s.ns, "prefer"))
				switch {
				case len(r) == 2 && len(p) == 1 && p[0] == "192.0.2.0":
					return ""
				case len(p) == 2 && p[0] == "192.0.2.0" && p[1] == "2001:db8::5" && len(r) == 0:
					return ""
				}
				return fmt.Sprintf("require %v prefer %v", r, p)
			})
		}},
		{name: "pool edit removing an allocated range keeps the IP, with event and condition, until moved", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("a"), []string{"192.0.2.0/30", "198.51.100.0/30"})
			e.svc(t, s.ns, "web")
			e.waitIPs(t, s.ns, "web", "192.0.2.0")
			// The controller writes the pool's status meanwhile, so the
			// edit retries on a conflict as kubectl would.
			err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
				p := e.getPool(t, s.pool("a"))
				p.Spec.Addresses = []v1alpha1.Address{"198.51.100.0/30"}
				return e.cli.Update(t.Context(), p)
			})
			if err != nil {
				t.Fatal(err)
			}
			e.waitEvent(t, s.ns, "web", "IPOutsidePool", "192.0.2.0")
			eventually(t, waitFor, func() string {
				if !meta.IsStatusConditionTrue(e.getSvc(t, s.ns, "web").Status.Conditions, controller.ConditionOutsidePool) {
					return "no IPOutsidePool condition"
				}
				return ""
			})
			e.holdIPs(t, 300*time.Millisecond, s.ns, "web", "192.0.2.0")
			// A new Service gets an address from what is left.
			e.svc(t, s.ns, "new")
			e.waitIPs(t, s.ns, "new", "198.51.100.0")
			// The user moves it explicitly.
			e.update(t, s.ns, "web", annotate(controller.AnnotationIPs, "198.51.100.3"))
			e.waitIPs(t, s.ns, "web", "198.51.100.3")
			eventually(t, waitFor, func() string {
				if meta.FindStatusCondition(e.getSvc(t, s.ns, "web").Status.Conditions, controller.ConditionOutsidePool) != nil {
					return "condition still there"
				}
				return ""
			})
		}},
		{name: "a pool added later keeps out of an older pool's addresses", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("a"), []string{"192.0.2.0/30"}, alloc(v1alpha1.ServiceAllocation{Priority: 2}))
			e.waitPool(t, s.pool("a"), func(p *v1alpha1.IPAddressPool) string {
				if p.Status.AvailableIPv4 != 4 {
					return fmt.Sprintf("pool a status %+v", p.Status)
				}
				return ""
			})
			// b comes later and declares two of a's addresses; tried first
			// by priority, it must still never hand those out.
			time.Sleep(1100 * time.Millisecond) // creation timestamps have 1 s resolution
			e.pool(t, s.pool("b"), []string{"192.0.2.2-192.0.2.5"}, alloc(v1alpha1.ServiceAllocation{Priority: 1}))
			e.waitPool(t, s.pool("b"), func(p *v1alpha1.IPAddressPool) string {
				c := poolCondition(p, controller.PoolConditionOverlapping)
				if c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "192.0.2.2-192.0.2.3") || !strings.Contains(c.Message, s.pool("a")) {
					return fmt.Sprintf("conditions %+v", p.Status.Conditions)
				}
				if p.Status.AvailableIPv4 != 2 {
					return fmt.Sprintf("pool b status %+v", p.Status)
				}
				return ""
			})
			e.waitPool(t, s.pool("a"), func(p *v1alpha1.IPAddressPool) string {
				if c := poolCondition(p, controller.PoolConditionOverlapping); c == nil || c.Status != metav1.ConditionFalse {
					return fmt.Sprintf("older pool's conditions %+v", p.Status.Conditions)
				}
				return ""
			})
			e.waitEvent(t, "default", s.pool("b"), "Overlapping", s.pool("a"))
			for i := range 4 {
				e.svc(t, s.ns, fmt.Sprintf("s%d", i))
			}
			got := map[string]string{}
			eventually(t, waitFor, func() string {
				clear(got)
				for i := range 4 {
					name := fmt.Sprintf("s%d", i)
					svc := e.getSvc(t, s.ns, name)
					ips := ingressIPs(svc)
					if len(ips) != 1 {
						return fmt.Sprintf("%s has %v", name, ips)
					}
					if prev, dup := got[ips[0]]; dup {
						t.Fatalf("%s given to %s and %s", ips[0], prev, name)
					}
					got[ips[0]] = name
					want := s.pool("a")
					if ips[0] == "192.0.2.4" || ips[0] == "192.0.2.5" {
						want = s.pool("b")
					}
					if from := svc.Annotations[v1alpha1.AnnotationAllocatedFrom]; from != want {
						return fmt.Sprintf("%s (%s) records pool %q, want %q", name, ips[0], from, want)
					}
				}
				return ""
			})
			e.svc(t, s.ns, "more-b", annotate(controller.AnnotationPool, s.pool("b")))
			e.waitEvent(t, s.ns, "more-b", "PoolExhausted", s.pool("b"))
			// b handed out its two own addresses; a, tried after b, two of
			// its four and keeps the other two.
			for name, free := range map[string]int64{s.pool("a"): 2, s.pool("b"): 0} {
				e.waitPool(t, name, func(p *v1alpha1.IPAddressPool) string {
					if p.Status.AssignedIPv4 != 2 || p.Status.AvailableIPv4 != free {
						return fmt.Sprintf("pool %s status %+v", name, p.Status)
					}
					return ""
				})
			}
		}},
		{name: "invalid pool entry: Valid condition false, pool unused", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("bad"), []string{"192.0.2.1/24"})
			e.waitPool(t, s.pool("bad"), func(p *v1alpha1.IPAddressPool) string {
				c := poolCondition(p, controller.PoolConditionValid)
				if c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "host bits") {
					return fmt.Sprintf("conditions %+v", p.Status.Conditions)
				}
				return ""
			})
			e.svc(t, s.ns, "web")
			e.waitEvent(t, s.ns, "web", "NoPool")
		}},
		{name: "a range spanning loopback makes the pool invalid, naming the entry", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("span"), []string{"203.0.113.0/30", "126.255.255.250-128.0.0.5"})
			e.waitPool(t, s.pool("span"), func(p *v1alpha1.IPAddressPool) string {
				c := poolCondition(p, controller.PoolConditionValid)
				if c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "spec.addresses[1]") || !strings.Contains(c.Message, "loopback") {
					return fmt.Sprintf("conditions %+v", p.Status.Conditions)
				}
				return ""
			})
			e.waitEvent(t, "default", s.pool("span"), "InvalidAddresses", "spec.addresses[1]")
		}},
		{name: "PreferDualStack from a single-family pool is served as asked, with no warning", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("v4"), []string{"192.0.2.0/30"})
			e.svc(t, s.ns, "prefer", dual(corev1.IPFamilyPolicyPreferDualStack, corev1.IPv4Protocol, corev1.IPv6Protocol))
			e.waitIPs(t, s.ns, "prefer", "192.0.2.0")
			// Status writes and resyncs reconcile the Service again; none
			// of them may warn about the family no pool has.
			e.update(t, s.ns, "prefer", func(svc *corev1.Service) { svc.Labels = map[string]string{"touched": "yes"} })
			e.holdIPs(t, time.Second, s.ns, "prefer", "192.0.2.0")
			for _, ev := range e.events(t, s.ns, "prefer") {
				if ev.Type != corev1.EventTypeNormal || ev.Reason != "IPAllocated" {
					t.Fatalf("unexpected event on a Service served as asked: %s %s: %s", ev.Type, ev.Reason, ev.Note)
				}
			}
		}},
		{name: "a later BGPPeer with an address in use is refused where both apply, naming the older one", run: func(t *testing.T, e *env, s *sc) {
			for name, rack := range map[string]string{"n1": "a", "n2": "b"} {
				n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: s.pool(name), Labels: map[string]string{"rack": rack}}}
				create(t, e, n)
			}
			keeper := s.pool("zz-router")
			create(t, e, &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: keeper},
				Spec: v1alpha1.BGPPeerSpec{MyASN: 64513, PeerASN: 64512, PeerAddress: "198.51.100.201"}})
			e.waitAccepted(t, &v1alpha1.BGPPeer{}, keeper, metav1.ConditionTrue)
			time.Sleep(1100 * time.Millisecond) // creation timestamps have 1 s resolution
			dup := s.pool("aa-dup")
			create(t, e, &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: dup},
				Spec: v1alpha1.BGPPeerSpec{MyASN: 64999, PeerASN: 64512, PeerAddress: "198.51.100.201",
					NodeSelectors: []v1alpha1.LabelSelector{{MatchLabels: map[string]string{"rack": "a"}}}}})
			c := e.waitAccepted(t, &v1alpha1.BGPPeer{}, dup, metav1.ConditionFalse)
			if c.Reason != controller.ReasonAddressInUse || !strings.Contains(c.Message, keeper) || !strings.Contains(c.Message, s.pool("n1")) || strings.Contains(c.Message, s.pool("n2")) {
				t.Fatalf("condition %+v", c)
			}
			e.waitEvent(t, "default", dup, controller.ReasonAddressInUse, keeper)
			e.waitAccepted(t, &v1alpha1.BGPPeer{}, keeper, metav1.ConditionTrue)
		}},
		{name: "an aggregation wider than its pool is refused until fixed", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("demo"), []string{"203.0.113.0/24", "2001:db8:113::/120"})
			name := s.pool("agg")
			l := int32(16)
			adv := &v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec: v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{s.pool("demo")}, AggregationLength: &l}}
			create(t, e, adv)
			c := e.waitAccepted(t, &v1alpha1.BGPAdvertisement{}, name, metav1.ConditionFalse)
			if c.Reason != controller.ReasonAggregationOutsidePool || !strings.Contains(c.Message, "spec.aggregationLength 16") || !strings.Contains(c.Message, "use 24 or more") {
				t.Fatalf("condition %+v", c)
			}
			e.waitEvent(t, "default", name, controller.ReasonAggregationOutsidePool, s.pool("demo"))
			err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
				var a v1alpha1.BGPAdvertisement
				if err := e.cli.Get(context.Background(), client.ObjectKey{Name: name}, &a); err != nil {
					return err
				}
				l := int32(24)
				a.Spec.AggregationLength = &l
				return e.cli.Update(context.Background(), &a)
			})
			if err != nil {
				t.Fatal(err)
			}
			e.waitAccepted(t, &v1alpha1.BGPAdvertisement{}, name, metav1.ConditionTrue)
		}},
		{name: "requested IPv6 on a single-stack IPv4 Service is refused", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("ds"), []string{"192.0.2.0/30", "2001:db8::/126"})
			e.svc(t, s.ns, "web", dual(corev1.IPFamilyPolicySingleStack, corev1.IPv4Protocol), annotate(controller.AnnotationIPs, "2001:db8::2"))
			e.waitEvent(t, s.ns, "web", "InvalidRequest", "2001:db8::2")
		}},
		{name: "dual-stack requested IPs, one per family", run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("ds"), []string{"192.0.2.0/30", "2001:db8::/126"})
			e.svc(t, s.ns, "web", dual(corev1.IPFamilyPolicyRequireDualStack, corev1.IPv4Protocol, corev1.IPv6Protocol),
				annotate(controller.AnnotationIPs, "2001:db8::3, 192.0.2.3"))
			e.waitIPs(t, s.ns, "web", "192.0.2.3", "2001:db8::3")
		}},
		{name: "conflicting statuses found at start: the older Service keeps the IP", manual: true, run: func(t *testing.T, e *env, s *sc) {
			e.pool(t, s.pool("a"), []string{"192.0.2.0/30"})
			// No controller yet: write two claims on one IP by hand.
			vip := corev1.LoadBalancerIPModeVIP
			for _, name := range []string{"older", "younger"} {
				e.svc(t, s.ns, name)
				svc := e.getSvc(t, s.ns, name)
				svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.2", IPMode: &vip}}
				if err := e.cli.Status().Update(t.Context(), svc); err != nil {
					t.Fatal(err)
				}
				time.Sleep(1100 * time.Millisecond) // creationTimestamp has one-second resolution
			}
			s.start()
			e.waitEvent(t, s.ns, "younger", "IPInUse", s.ns+"/older")
			e.waitIPs(t, s.ns, "younger", "192.0.2.0")
			e.holdIPs(t, 300*time.Millisecond, s.ns, "older", "192.0.2.2")
		}},
	}
}

func TestScenarios(t *testing.T) {
	e := newEnv(t)
	// The allocation rules do not depend on how long a new Service waits
	// for the pools to settle: those scenarios wait 100 ms, and the
	// settle scenarios the default.
	quick := scenarios()
	for i := range quick {
		if quick[i].opts.SettleTime == 0 {
			quick[i].opts.SettleTime = 100 * time.Millisecond
		}
	}
	for i, sce := range append(quick, settleScenarios()...) {
		t.Run(sce.name, func(t *testing.T) {
			s := &sc{ns: fmt.Sprintf("zh-s%02d", i), prefix: fmt.Sprintf("s%02d-", i)}
			e.namespace(t, s.ns, nil)
			t.Cleanup(func() { e.deleteAllServices(t, s.ns) })
			sce.opts.LeaderElection = false
			// Stop the controller before the pools go (at cleanup), so it
			// does not react to the teardown.
			stop := func() {}
			s.start = func() { stop = e.startController(t, sce.opts) }
			defer func() { stop() }()
			if !sce.manual {
				s.start()
			}
			sce.run(t, e, s)
		})
	}
}
