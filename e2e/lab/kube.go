package lab

import (
	"context"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// The lab plays kubelet and the EndpointSlice controller: it writes Nodes,
// Pod status and EndpointSlices itself, so the speaker sees real objects in
// a real API server without any kubelet or controller-manager running.

// ManagedBy is the endpointslice.kubernetes.io/managed-by value of the
// lab's slices.
const ManagedBy = "zerohop-lab"

// Pod is a lab Pod: a namespace with an echo server, and its API object.
type Pod struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Node        int               `json:"node"`
	Labels      map[string]string `json:"labels,omitempty"`
	IPv4        string            `json:"ipv4"`
	IPv6        string            `json:"ipv6"`
	Ready       bool              `json:"ready"`
	Terminating bool              `json:"terminating"`
}

// NetNS is the Pod's network namespace.
func (p Pod) NetNS() string { return PodNSPrefix + p.Name }

// ServiceRef names a Service whose EndpointSlices the lab keeps.
type ServiceRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func ensureNamespace(ctx context.Context, cs kubernetes.Interface, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("namespace %s: %w", name, err)
	}
	// The ServiceAccount admission plugin refuses Pods until the namespace's
	// default ServiceAccount exists; the controller-manager would make it.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: name}}
	if _, err := cs.CoreV1().ServiceAccounts(name).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("serviceaccount %s/default: %w", name, err)
	}
	return nil
}

// writeNode creates (or refreshes) Node i as kubelet would register it.
func writeNode(ctx context.Context, cs kubernetes.Interface, i int) error {
	name := NodeName(i)
	n4, n6 := NodeAddrs(i)
	p4, p6 := PodCIDRs(i)
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "zerohop.io/lab": "true",
		}},
		Spec: corev1.NodeSpec{PodCIDR: p4.String(), PodCIDRs: []string{p4.String(), p6.String()}},
	}
	got, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("node %s: %w", name, err)
	}
	now := metav1.Now()
	got.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: n4.String()},
		{Type: corev1.NodeInternalIP, Address: n6.String()},
		{Type: corev1.NodeHostName, Address: name},
	}
	got.Status.Conditions = []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		Message: "zerohop lab node", LastHeartbeatTime: now, LastTransitionTime: now,
	}}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("node %s status: %w", name, err)
	}
	return nil
}

// writePod creates the Pod object if needed and sets its status the way
// kubelet would for the lab Pod's state.
func writePod(ctx context.Context, cs kubernetes.Interface, p Pod) error {
	pods := cs.CoreV1().Pods(p.Namespace)
	obj, err := pods.Get(ctx, p.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		no := false
		obj, err = pods.Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, Labels: p.Labels},
			Spec: corev1.PodSpec{
				NodeName:                     NodeName(p.Node),
				AutomountServiceAccountToken: &no,
				Containers: []corev1.Container{{
					Name: "echo", Image: "zerohop.io/lab-echo",
					Ports: []corev1.ContainerPort{
						{Name: "tcp", ContainerPort: 9000, Protocol: corev1.ProtocolTCP},
						{Name: "udp", ContainerPort: 9000, Protocol: corev1.ProtocolUDP},
						{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
					},
				}},
			},
		}, metav1.CreateOptions{})
	}
	if err != nil {
		return fmt.Errorf("pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	n4, _ := NodeAddrs(p.Node)
	ready := corev1.ConditionFalse
	if p.Ready && !p.Terminating {
		ready = corev1.ConditionTrue
	}
	now := metav1.Now()
	obj.Status = corev1.PodStatus{
		Phase:  corev1.PodRunning,
		HostIP: n4.String(),
		PodIP:  p.IPv4,
		PodIPs: []corev1.PodIP{{IP: p.IPv4}, {IP: p.IPv6}},
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: ready, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: ready, LastTransitionTime: now},
		},
		StartTime: &now,
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: "echo", Image: "zerohop.io/lab-echo", Ready: ready == corev1.ConditionTrue,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}},
	}
	if _, err := pods.UpdateStatus(ctx, obj, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("pod %s/%s status: %w", p.Namespace, p.Name, err)
	}
	if p.Terminating && obj.DeletionTimestamp == nil {
		// Scheduled Pods are deleted gracefully: the object stays, with a
		// deletion timestamp, until "kubelet" confirms. That is terminating.
		grace := int64(3600)
		if err := pods.Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
			return fmt.Errorf("pod %s/%s terminate: %w", p.Namespace, p.Name, err)
		}
	}
	return nil
}

func deletePodObject(ctx context.Context, cs kubernetes.Interface, p Pod) error {
	zero := int64(0)
	err := cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("pod %s/%s delete: %w", p.Namespace, p.Name, err)
	}
	return nil
}

// endpointSlices computes the slices the EndpointSlice controller would
// write for svc from the lab's Pods: one per address family.
func endpointSlices(svc *corev1.Service, pods []Pod) []*discoveryv1.EndpointSlice {
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	var ports []discoveryv1.EndpointPort
	for _, sp := range svc.Spec.Ports {
		port := sp.Port
		if sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal != 0 {
			port = sp.TargetPort.IntVal
		}
		ports = append(ports, discoveryv1.EndpointPort{Name: &sp.Name, Port: &port, Protocol: &sp.Protocol})
	}
	var out []*discoveryv1.EndpointSlice
	for _, fam := range []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6} {
		es := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{
				Name:      fmt.Sprintf("%s-zh-%s", svc.Name, map[discoveryv1.AddressType]string{"IPv4": "ipv4", "IPv6": "ipv6"}[fam]),
				Namespace: svc.Namespace,
				Labels: map[string]string{
					discoveryv1.LabelServiceName: svc.Name,
					discoveryv1.LabelManagedBy:   ManagedBy,
				},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID}},
			},
			AddressType: fam,
			Ports:       ports,
			Endpoints:   []discoveryv1.Endpoint{},
		}
		for _, p := range pods {
			if p.Namespace != svc.Namespace || len(svc.Spec.Selector) == 0 || !sel.Matches(labels.Set(p.Labels)) {
				continue
			}
			addr := p.IPv4
			if fam == discoveryv1.AddressTypeIPv6 {
				addr = p.IPv6
			}
			// Conditions as the controller derives them: ready only when
			// serving and not terminating; serving follows the Pod's
			// readiness even while it terminates.
			ready := p.Ready && !p.Terminating
			serving := p.Ready
			terminating := p.Terminating
			node := NodeName(p.Node)
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{addr},
				Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
				NodeName:   &node,
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name},
			})
		}
		sort.Slice(es.Endpoints, func(a, b int) bool { return es.Endpoints[a].Addresses[0] < es.Endpoints[b].Addresses[0] })
		out = append(out, es)
	}
	return out
}

// syncService writes svc's EndpointSlices from the lab's Pods.
func syncService(ctx context.Context, cs kubernetes.Interface, ref ServiceRef, pods []Pod) error {
	svc, err := cs.CoreV1().Services(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil // deleted behind the lab's back: its slices go with it (owner reference)
	}
	if err != nil {
		return fmt.Errorf("service %s/%s: %w", ref.Namespace, ref.Name, err)
	}
	for _, es := range endpointSlices(svc, pods) {
		api := cs.DiscoveryV1().EndpointSlices(es.Namespace)
		cur, err := api.Get(ctx, es.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = api.Create(ctx, es, metav1.CreateOptions{})
		case err == nil:
			es.ResourceVersion = cur.ResourceVersion
			_, err = api.Update(ctx, es, metav1.UpdateOptions{})
		}
		if err != nil {
			return fmt.Errorf("endpointslice %s/%s: %w", es.Namespace, es.Name, err)
		}
	}
	return nil
}
