package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

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

// AddLBService creates, in namespace default, a LoadBalancer Service of
// zerohop's class on the echo server's TCP port for the Pods labelled
// app=sel (Local traffic policy when local), asking zerohop's controller
// for ips (annotation zerohop.io/loadBalancerIPs), and waits until the
// controller has assigned them. A zerohop controller must run (Controller)
// and a pool must hold the addresses.
func (l *Lab) AddLBService(ctx context.Context, name, sel string, local bool, ips ...string) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": sel},
			Ports: []corev1.ServicePort{{Name: "tcp", Port: echo.DefaultTCPPort, Protocol: corev1.ProtocolTCP,
				TargetPort: intstr.FromInt32(echo.DefaultTCPPort)}},
		},
	}
	LoadBalancerFor(svc, ips...)
	if local {
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	if err := l.AddService(ctx, svc); err != nil {
		return err
	}
	return l.WaitIngress(ctx, svc.Namespace, svc.Name, ips...)
}

// LoadBalancerFor makes svc a LoadBalancer Service of zerohop's class that
// asks zerohop's controller for ips (annotation zerohop.io/loadBalancerIPs),
// with the IP families they need.
func LoadBalancerFor(svc *corev1.Service, ips ...string) {
	class := demoClass
	svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	svc.Spec.LoadBalancerClass = &class
	if len(ips) == 0 {
		return
	}
	if svc.Annotations == nil {
		svc.Annotations = map[string]string{}
	}
	svc.Annotations[annotationIPs] = strings.Join(ips, ",")
	var fams []corev1.IPFamily
	for _, ip := range ips {
		fam := corev1.IPv4Protocol
		if strings.Contains(ip, ":") {
			fam = corev1.IPv6Protocol
		}
		if !slices.Contains(fams, fam) {
			fams = append(fams, fam)
		}
	}
	if len(fams) > 1 {
		svc.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyRequireDualStack)
	}
	svc.Spec.IPFamilies = fams
}

// WaitIngress waits (bounded) until zerohop's controller has written
// exactly ips into the Service's status.loadBalancer.ingress.
func (l *Lab) WaitIngress(ctx context.Context, ns, name string, ips ...string) error {
	want := slices.Clone(ips)
	slices.Sort(want)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := l.Kube.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("service %s/%s: %w", ns, name, err)
		}
		var have []string
		for _, ing := range got.Status.LoadBalancer.Ingress {
			have = append(have, ing.IP)
		}
		slices.Sort(have)
		if slices.Equal(have, want) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("service %s/%s: ingress %v after 30s, want %v (is a zerohop controller running, and a pool holding them?)", ns, name, have, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// annotationIPs is the controller's annotation that requests addresses
// (controller.AnnotationIPs; the lab does not import the controller).
const annotationIPs = "zerohop.io/loadBalancerIPs"

// Controller runs `bin controller` against the lab's API server for one
// test, without leader election, as the Deployment would run it, and stops
// it when the test ends; if the test failed, the tail of its log is
// printed.
func (l *Lab) Controller(t testing.TB, bin string, extraArgs ...string) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "controller.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = logf.Close() }()
	args := append([]string{"controller", "--kubeconfig", l.APIServer().Kubeconfig, "--leader-elect=false",
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0"}, extraArgs...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start zerohop controller: %v", err)
	}
	t.Cleanup(func() {
		StopCommand(cmd, os.Interrupt)
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("zerohop controller log (tail):\n%s", b)
		}
	})
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
