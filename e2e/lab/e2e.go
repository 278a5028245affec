package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/zerohop/zerohop/e2e/echo"
)

// RunWithZerohop is the body of TestMain for e2e packages that run the
// zerohop binary inside node namespaces: it builds cmd/zerohop once into a
// temporary directory, stores its path in *bin, runs the tests and removes
// the binary. $GO names the go command (default "go").
func RunWithZerohop(m *testing.M, bin *string) int {
	HelperMain()
	dir, err := os.MkdirTemp("", "zh-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	*bin = filepath.Join(dir, "zerohop")
	goBin := os.Getenv("GO")
	if goBin == "" {
		goBin = "go"
	}
	cmd := exec.Command(goBin, "build", "-o", *bin, "github.com/zerohop/zerohop/cmd/zerohop")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build zerohop:", err)
		return 1
	}
	return m.Run()
}

// AddLBService creates, in namespace default, a LoadBalancer Service on the
// echo server's TCP port for the Pods labelled app=sel (Local traffic
// policy when local), keeps its EndpointSlices in step, and writes ips into
// its status as the controller would, for tests that run speakers without
// a controller.
func (l *Lab) AddLBService(ctx context.Context, name, sel string, local bool, ips ...string) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": sel},
			Ports: []corev1.ServicePort{{Name: "tcp", Port: echo.DefaultTCPPort, Protocol: corev1.ProtocolTCP,
				TargetPort: intstr.FromInt32(echo.DefaultTCPPort)}},
		},
	}
	if local {
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	if err := l.AddService(ctx, svc); err != nil {
		return err
	}
	got, err := l.Kube.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("service default/%s: %w", name, err)
	}
	for _, ip := range ips {
		got.Status.LoadBalancer.Ingress = append(got.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
	}
	if _, err := l.Kube.CoreV1().Services("default").UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("service default/%s status: %w", name, err)
	}
	return nil
}

// StartSpeaker runs `bin speaker` for node (1-based) inside its namespace
// against the lab's API server, with speaker namespace ns, appending its
// output to logPath. It runs in its own process group, so that a test's
// interrupt does not reach it before the test's cleanup stops it.
func (l *Lab) StartSpeaker(bin string, node int, ns, logPath string, extraArgs, env []string) (*exec.Cmd, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer func() { _ = logf.Close() }()
	args := append([]string{bin, "speaker",
		"--node-name", NodeName(node), "--kubeconfig", l.APIServer().Kubeconfig, "--namespace", ns,
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--bpf-pin-root", SpeakerPinRoot(node)}, extraArgs...)
	// The host's mounts, so the speaker pins on the host's bpffs.
	args = append(NetnsCommand(NodeName(node)), args...)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start speaker on node %d: %w", node, err)
	}
	return cmd, nil
}
