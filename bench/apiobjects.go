package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/zerohop/zerohop/e2e/lab"
)

// The zerohop contender's Services live in the lab's API server, in a
// namespace of their own, as the EndpointSlice controller and zerohop's
// controller would have left them: the measured Service (the VIP's TCP and
// UDP port 80, traffic policy Local, its two Pods on the bench node) and
// the fillers of the size being measured. They carry no selector, so no
// controller but the bench writes their slices.
const datapathNS = "bench"

// apiServices keeps the API's Services in step with the ruleset being
// measured; the fillers are added (or removed) as the size changes.
type apiServices struct {
	cs       kubernetes.Interface
	measured bool // the measured Service is in the API
	fillers  int  // filler Services in the API
}

func newAPIServices(cfg *rest.Config) (*apiServices, error) {
	c := rest.CopyConfig(cfg)
	// Written once per size, as fast as the API server takes them.
	c.QPS, c.Burst = 1e6, 1e6
	cs, err := kubernetes.NewForConfig(c)
	if err != nil {
		return nil, err
	}
	return &apiServices{cs: cs}, nil
}

// ensure makes the API hold the measured Services and exactly fillers
// (the first n of Fillers, as the other contenders are given).
func (a *apiServices) ensure(ctx context.Context, measured []Service, fillers []Service) error {
	if !a.measured {
		for _, ns := range []string{datapathNS, speakerNS} {
			_, err := a.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("namespace %s: %w", ns, err)
			}
		}
		svc, es := measuredObjects(measured)
		if err := a.write(ctx, svc, es, measured[0].VIP.String()); err != nil {
			return err
		}
		a.measured = true
	}
	var next atomic.Int64
	next.Store(int64(a.fillers))
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(fillers) || ctx.Err() != nil {
					return
				}
				svc, es := fillerObjects(i, fillers[i])
				if err := a.write(ctx, svc, es, fillers[i].VIP.String()); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	for i := len(fillers); i < a.fillers; i++ {
		name := fmt.Sprintf("filler-%d", i)
		if err := a.cs.CoreV1().Services(datapathNS).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("service %s/%s: %w", datapathNS, name, err)
		}
		if err := a.cs.DiscoveryV1().EndpointSlices(datapathNS).Delete(ctx, name+"-bench", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("endpointslice %s/%s-bench: %w", datapathNS, name, err)
		}
	}
	a.fillers = len(fillers)
	return nil
}

// write creates a Service, its slice and its status (the VIP).
func (a *apiServices) write(ctx context.Context, svc *corev1.Service, es *discoveryv1.EndpointSlice, vip string) error {
	got, err := a.cs.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{})
	if err == nil {
		_, err = a.cs.DiscoveryV1().EndpointSlices(es.Namespace).Create(ctx, es, metav1.CreateOptions{})
	}
	if err == nil {
		got.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: vip}}
		_, err = a.cs.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, got, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	return nil
}

func benchSlice(name, svc string, ports []discoveryv1.EndpointPort, eps []Service) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: datapathNS, Name: name + "-bench",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "zh-bench"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       ports,
	}
	node := lab.NodeName(benchNode)
	ready := true
	for _, ep := range eps[0].Endpoints {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{ep.Addr().String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &ready},
			NodeName:   &node,
		})
	}
	return es
}

// measuredObjects are the measured Service (its TCP and UDP ports) and
// slice: traffic policy Local, as the other contenders' rules have it.
func measuredObjects(measured []Service) (*corev1.Service, *discoveryv1.EndpointSlice) {
	noNodePorts := false
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: datapathNS, Name: "echo"},
		Spec: corev1.ServiceSpec{
			Type:                          corev1.ServiceTypeLoadBalancer,
			AllocateLoadBalancerNodePorts: &noNodePorts,
			ExternalTrafficPolicy:         corev1.ServiceExternalTrafficPolicyLocal,
		},
	}
	var ports []discoveryv1.EndpointPort
	for _, s := range measured {
		name, proto := s.Proto, corev1.Protocol(map[string]string{"tcp": "TCP", "udp": "UDP"}[s.Proto])
		target := int32(s.Endpoints[0].Port())
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: name, Port: int32(s.Port), Protocol: proto,
			TargetPort: intstr.FromInt32(target)})
		ports = append(ports, discoveryv1.EndpointPort{Name: &name, Port: &target, Protocol: &proto})
	}
	return svc, benchSlice("echo", "echo", ports, measured)
}

// fillerObjects are filler i's Service and slice (traffic policy Cluster,
// which needs no health-check node port; its endpoints are on the bench
// node all the same).
func fillerObjects(i int, s Service) (*corev1.Service, *discoveryv1.EndpointSlice) {
	name := fmt.Sprintf("filler-%d", i)
	port, proto := "tcp", corev1.ProtocolTCP
	target := int32(s.Endpoints[0].Port())
	noNodePorts := false
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: datapathNS, Name: name},
		Spec: corev1.ServiceSpec{
			Type:                          corev1.ServiceTypeLoadBalancer,
			AllocateLoadBalancerNodePorts: &noNodePorts,
			Ports: []corev1.ServicePort{{Name: port, Port: int32(s.Port), Protocol: proto,
				TargetPort: intstr.FromInt32(target)}},
		},
	}
	return svc, benchSlice(name, name, []discoveryv1.EndpointPort{{Name: &port, Port: &target, Protocol: &proto}}, []Service{s})
}
