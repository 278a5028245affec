package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/zerohop/zerohop/e2e/echo"
)

// Workloads in the lab are Deployments: the controller manager makes their
// ReplicaSets and Pods, the scheduler places the Pods, a node's kubelet
// stand-in runs them, and the EndpointSlice controller turns them into the
// EndpointSlices zerohop reads. The lab only writes what a user would.

// WorkloadLabel names the lab workload (AddPod's PodSpec.Name) on its
// Deployment's Pods.
const WorkloadLabel = "zerohop.io/lab-workload"

// Pod is a lab workload's Pod: one replica of a Deployment, pinned to a
// node.
type Pod struct {
	// Name is the Pod's name in the API, made by its ReplicaSet; the echo
	// server answers with it.
	Name string `json:"name"`
	// Workload is the Deployment's name, the name AddPod was given.
	Workload  string            `json:"workload"`
	Namespace string            `json:"namespace"`
	Node      int               `json:"node"`
	Labels    map[string]string `json:"labels,omitempty"`
	IPv4      string            `json:"ipv4"`
	IPv6      string            `json:"ipv6"`
}

// NetNS is the Pod's network namespace.
func (p Pod) NetNS() string { return PodNetNS(p.Namespace, p.Name) }

// ServiceRef names a Service the lab created.
type ServiceRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// ensureNamespace creates a namespace and waits (bounded) for the
// controller manager's ServiceAccount controller to give it its default
// ServiceAccount: until then the API server refuses its Pods, and a
// ReplicaSet would back off.
func ensureNamespace(ctx context.Context, cs kubernetes.Interface, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("namespace %s: %w", name, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := cs.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsNotFound(err) || time.Now().After(deadline) {
			return fmt.Errorf("namespace %s: no default ServiceAccount from kube-controller-manager: %w", name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// EchoContainer is the echo server as a container: it answers with its
// Pod's name (from the Downward API) and is ready once it answers HTTP on
// its count path, which (unlike a TCP probe) the counts it reports leave
// out, so tests can compare them with what clients saw.
func EchoContainer() corev1.Container {
	return corev1.Container{
		Name: "echo", Image: EchoImage,
		Args: []string{"-name", "$(POD_NAME)"},
		Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
		Ports: []corev1.ContainerPort{
			{Name: "tcp", ContainerPort: echo.DefaultTCPPort, Protocol: corev1.ProtocolTCP},
			{Name: "udp", ContainerPort: echo.DefaultUDPPort, Protocol: corev1.ProtocolUDP},
			{Name: "http", ContainerPort: echo.DefaultHTTPPort, Protocol: corev1.ProtocolTCP},
		},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: echo.CountPath, Port: intstr.FromString("http")}},
			// Three misses of two seconds each, as Kubernetes' default
			// threshold: a starved shared CPU must not flip a Pod's
			// readiness, which zerohop would act on.
			PeriodSeconds: 1, TimeoutSeconds: 2, FailureThreshold: 3,
		},
	}
}

// drainSeconds is how long a lab workload's Pod keeps serving once
// deleted: its preStop sleep and grace period. Tests that terminate a Pod
// look at it while it drains; the lab's teardown ends it.
const drainSeconds = 600

// workloadDeployment is AddPod's Deployment: one replica, pinned to its
// node by the node's hostname label, with the lab's readiness gate.
func workloadDeployment(spec PodSpec) *appsv1.Deployment {
	labels := map[string]string{WorkloadLabel: spec.Name}
	for k, v := range spec.Labels {
		labels[k] = v
	}
	c := EchoContainer()
	c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: drainSeconds}}}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: spec.Name, Namespace: spec.Namespace, Labels: map[string]string{WorkloadLabel: spec.Name}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{WorkloadLabel: spec.Name}},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector:                  map[string]string{"kubernetes.io/hostname": NodeName(spec.Node)},
					AutomountServiceAccountToken:  ptr.To(false),
					TerminationGracePeriodSeconds: ptr.To(int64(drainSeconds)),
					ReadinessGates:                []corev1.PodReadinessGate{{ConditionType: LabReadyGate}},
					Containers:                    []corev1.Container{c},
				},
			},
		},
	}
}

// setGate sets a Pod's LabReadyGate condition.
func setGate(ctx context.Context, cs kubernetes.Interface, ns, name string, ready bool) error {
	s := corev1.ConditionFalse
	if ready {
		s = corev1.ConditionTrue
	}
	c := corev1.PodCondition{Type: LabReadyGate, Status: s, LastTransitionTime: metav1.Now()}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.PodCondition{c}}})
	if err != nil {
		return err
	}
	if _, err := cs.CoreV1().Pods(ns).Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("pod %s/%s readiness gate: %w", ns, name, err)
	}
	return nil
}

// podCondition returns a Pod's condition status ("" if absent).
func podCondition(p *corev1.Pod, t corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range p.Status.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return ""
}
