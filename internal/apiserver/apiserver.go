// Package apiserver starts a real etcd and kube-apiserver for zerohop's tests
// and lab: RBAC on, ServiceAccount tokens working, zerohop's CRDs installed.
//
// The binaries are found in $ZEROHOP_BIN (default $HOME/.cache/zerohop/bin,
// where `make deps` builds kube-apiserver) and on $PATH (Debian's etcd).
package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// ServiceCIDRs are the ClusterIP ranges the API server hands out, one per
// family, so that dual-stack Services can be created.
const ServiceCIDRs = "10.96.0.0/16,fd00:10:96::/108"

// Options say where and how to run the API server.
type Options struct {
	// BindAddress is the IP kube-apiserver listens on. Default 127.0.0.1.
	// etcd always listens on loopback.
	BindAddress string
	// Port is kube-apiserver's port; 0 picks a free one.
	Port int
	// DataDir holds etcd's data, the certificates and the kubeconfig.
	// Empty: a temporary directory removed by Stop.
	DataDir string
	// CRDDir holds the CRD YAML files installed once the server is ready.
	// Empty: the repository's config/crd, found from the working
	// directory upwards, or $ZEROHOP_CRD_DIR.
	CRDDir string
	// Log receives etcd's and kube-apiserver's output and progress lines.
	// Nil discards them.
	Log io.Writer
	// Detach starts the processes in their own session so that they
	// outlive the process that started them (the lab). Otherwise they are
	// killed when it dies.
	Detach bool
}

// Server is a running etcd and kube-apiserver.
type Server struct {
	// Config is an admin (system:masters) client configuration.
	Config *rest.Config
	// Kubeconfig is the path of an admin kubeconfig file.
	Kubeconfig string
	// URL is the API server's https address.
	URL string
	// DataDir is where data, certificates and the kubeconfig live.
	DataDir string

	etcd, apiserver *exec.Cmd
	removeDataDir   bool
	log             io.Writer
	pki             *pki
}

// EtcdPID is the process ID of etcd.
func (s *Server) EtcdPID() int { return s.etcd.Process.Pid }

// APIServerPID is the process ID of kube-apiserver.
func (s *Server) APIServerPID() int { return s.apiserver.Process.Pid }

// CAFile is the cluster CA's certificate, which controllers publish to
// Pods (kube-controller-manager's --root-ca-file).
func (s *Server) CAFile() string { return s.pki.CAFile }

// ServiceAccountKeyFile is the private key that signs ServiceAccount
// tokens (kube-controller-manager's --service-account-private-key-file).
func (s *Server) ServiceAccountKeyFile() string { return s.pki.SAKeyFile }

// BinDir is the directory holding kube-apiserver and the other tools that
// `make deps` builds.
func BinDir() string {
	if d := os.Getenv("ZEROHOP_BIN"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/root"
	}
	return filepath.Join(home, ".cache", "zerohop", "bin")
}

// Start runs etcd and kube-apiserver, waits until the API server is ready
// and installs the CRDs. On error nothing is left running. A start that
// fails because a process exited (a free port taken by someone else in the
// meantime, say) is tried again, up to three times, on new ports.
func Start(ctx context.Context, opts Options) (*Server, error) {
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		var s *Server
		s, err = start(ctx, opts)
		if err == nil || !errors.Is(err, errExited) || opts.Port != 0 || ctx.Err() != nil {
			return s, err
		}
		logf(opts.Log, "apiserver: attempt %d failed (%v); trying again\n", attempt, err)
	}
	return nil, err
}

// errExited marks a start that failed because etcd or kube-apiserver
// exited.
var errExited = errors.New("process exited")

func start(ctx context.Context, opts Options) (_ *Server, err error) {
	if opts.BindAddress == "" {
		opts.BindAddress = "127.0.0.1"
	}
	bindIP := net.ParseIP(opts.BindAddress)
	if bindIP == nil {
		return nil, fmt.Errorf("apiserver: bind address %q is not an IP", opts.BindAddress)
	}
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	apiserverBin := filepath.Join(BinDir(), "kube-apiserver")
	if _, err := os.Stat(apiserverBin); err != nil {
		return nil, fmt.Errorf("apiserver: %w (run `make deps` to build it)", err)
	}
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		return nil, fmt.Errorf("apiserver: etcd: %w (run `make deps` to install etcd-server)", err)
	}
	crdDir := opts.CRDDir
	if crdDir == "" {
		if crdDir, err = findCRDDir(); err != nil {
			return nil, err
		}
	}

	s := &Server{DataDir: opts.DataDir, log: log}
	if s.DataDir == "" {
		if s.DataDir, err = os.MkdirTemp("", "zh-apiserver-"); err != nil {
			return nil, err
		}
		s.removeDataDir = true
	}
	defer func() {
		if err != nil {
			_ = s.Stop()
		}
	}()

	if s.pki, err = newPKI(filepath.Join(s.DataDir, "pki"), []net.IP{bindIP}); err != nil {
		return nil, fmt.Errorf("apiserver: certificates: %w", err)
	}
	etcdPort, err := freePort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	peerPort, err := freePort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	port := opts.Port
	if port == 0 {
		if port, err = freePort(opts.BindAddress); err != nil {
			return nil, err
		}
	}

	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	logf(log, "apiserver: starting etcd on %s\n", etcdURL)
	s.etcd = exec.Command(etcdBin,
		"--name=zh-etcd",
		"--data-dir="+filepath.Join(s.DataDir, "etcd"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=zh-etcd="+peerURL,
		"--quota-backend-bytes=4294967296",
		"--log-level=warn",
	)
	if err := s.start(s.etcd, opts.Detach); err != nil {
		return nil, fmt.Errorf("apiserver: etcd: %w", err)
	}

	s.URL = "https://" + net.JoinHostPort(opts.BindAddress, strconv.Itoa(port))
	logf(log, "apiserver: starting kube-apiserver on %s\n", s.URL)
	s.apiserver = exec.Command(apiserverBin,
		"--etcd-servers="+etcdURL,
		"--bind-address="+opts.BindAddress,
		"--advertise-address="+opts.BindAddress,
		"--secure-port="+strconv.Itoa(port),
		"--tls-cert-file="+s.pki.ServerCertFile,
		"--tls-private-key-file="+s.pki.ServerKeyFile,
		"--client-ca-file="+s.pki.CAFile,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+s.pki.SAPubFile,
		"--service-account-signing-key-file="+s.pki.SAKeyFile,
		"--service-cluster-ip-range="+ServiceCIDRs,
		"--authorization-mode=RBAC",
		"--allow-privileged=true",
		"--profiling=false",
		"--endpoint-reconciler-type=none",
		"--v=0",
	)
	if err := s.start(s.apiserver, opts.Detach); err != nil {
		return nil, fmt.Errorf("apiserver: kube-apiserver: %w", err)
	}

	s.Config = &rest.Config{
		Host: s.URL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   s.pki.CAPEM,
			CertData: s.pki.AdminCertPEM,
			KeyData:  s.pki.AdminKeyPEM,
		},
		QPS:   1000,
		Burst: 2000,
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	if s.Kubeconfig, err = s.writeKubeconfig(); err != nil {
		return nil, err
	}
	if err := InstallCRDs(ctx, s.Config, crdDir); err != nil {
		return nil, err
	}
	logf(log, "apiserver: ready at %s (kubeconfig %s)\n", s.URL, s.Kubeconfig)
	return s, nil
}

func (s *Server) start(cmd *exec.Cmd, detach bool) error {
	cmd.Stdout = s.log
	cmd.Stderr = s.log
	if detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		return cmd.Start()
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return startFromSpawner(cmd)
}

// The parent-death signal fires when the *thread* that forked the child
// exits, not the process; Go ends a thread whenever a goroutine that locked
// it returns (as namespace-switching test code does), which would kill the
// API server mid-test. So children are forked from one locked thread that
// lives as long as the process.
var (
	spawnOnce sync.Once
	spawnReqs chan spawnReq
)

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

func startFromSpawner(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReqs = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread must outlive every child
			for r := range spawnReqs {
				r.done <- r.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	spawnReqs <- spawnReq{cmd, done}
	return <-done
}

// waitReady polls /readyz until the server answers ok, and fails early if
// a process exits.
func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	exited := make(chan error, 2)
	for _, c := range []*exec.Cmd{s.etcd, s.apiserver} {
		go func(c *exec.Cmd) {
			// Only the first Wait may succeed; Stop uses the process
			// handle afterwards, which stays valid.
			exited <- fmt.Errorf("%s: %w (%v)", filepath.Base(c.Path), errExited, c.Wait())
		}(c)
	}
	tr, err := rest.TransportFor(s.Config)
	if err != nil {
		return err
	}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := time.Now()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/readyz", nil)
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Since(last) > 5*time.Second {
			logf(s.log, "apiserver: waiting for %s/readyz\n", s.URL)
			last = time.Now()
		}
		select {
		case err := <-exited:
			return fmt.Errorf("apiserver: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("apiserver: not ready at %s: %w", s.URL, ctx.Err())
		case <-tick.C:
		}
	}
}

func (s *Server) writeKubeconfig() (string, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["zerohop"] = &clientcmdapi.Cluster{Server: s.URL, CertificateAuthorityData: s.pki.CAPEM}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: s.pki.AdminCertPEM, ClientKeyData: s.pki.AdminKeyPEM}
	cfg.Contexts["zerohop"] = &clientcmdapi.Context{Cluster: "zerohop", AuthInfo: "admin"}
	cfg.CurrentContext = "zerohop"
	path := filepath.Join(s.DataDir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", fmt.Errorf("apiserver: kubeconfig: %w", err)
	}
	return path, nil
}

// Stop ends kube-apiserver and etcd (SIGTERM, then SIGKILL after 10 s) and
// removes a temporary data directory. It is safe to call more than once.
func (s *Server) Stop() error {
	var errs []error
	for _, c := range []*exec.Cmd{s.apiserver, s.etcd} {
		if c == nil || c.Process == nil {
			continue
		}
		if err := stopProcess(c.Process.Pid, 10*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	s.apiserver, s.etcd = nil, nil
	if s.removeDataDir && s.DataDir != "" {
		if err := os.RemoveAll(s.DataDir); err != nil {
			errs = append(errs, err)
		}
		s.DataDir = ""
	}
	return errors.Join(errs...)
}

// stopProcess ends one process that this package started, by PID.
func stopProcess(pid int, grace time.Duration) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return nil
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return nil // already gone
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return nil
	}
	for i := 0; i < 100 && alive(pid); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if alive(pid) {
		return fmt.Errorf("process %d did not exit", pid)
	}
	return nil
}

// alive reports whether pid is a running process. A zombie left by an
// unreaped child counts as gone.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	for i := len(stat) - 1; i > 0; i-- {
		if stat[i] == ')' && i+2 < len(stat) {
			return stat[i+2] != 'Z'
		}
	}
	return true
}

// ServiceAccountConfig returns a client configuration that authenticates
// as the ServiceAccount namespace/name (created if missing) with a token
// from the TokenRequest API, so tests see exactly what RBAC grants it.
func (s *Server) ServiceAccountConfig(ctx context.Context, namespace, name string) (*rest.Config, error) {
	cs, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		return nil, err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("namespace %s: %w", namespace, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	if _, err := cs.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("serviceaccount %s/%s: %w", namespace, name, err)
	}
	expiry := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token for serviceaccount %s/%s: %w", namespace, name, err)
	}
	return &rest.Config{
		Host:            s.URL,
		BearerToken:     tr.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: s.pki.CAPEM},
		QPS:             s.Config.QPS,
		Burst:           s.Config.Burst,
	}, nil
}

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("apiserver: free port on %s: %w", host, err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// findCRDDir looks for config/crd from the working directory upwards, so
// that tests of any package find the repository's CRDs.
func findCRDDir() (string, error) {
	if d := os.Getenv("ZEROHOP_CRD_DIR"); d != "" {
		return d, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		candidate := filepath.Join(dir, "config", "crd")
		if fi, err := os.Stat(candidate); err == nil && fi.IsDir() {
			return candidate, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("apiserver: config/crd not found above the working directory; set ZEROHOP_CRD_DIR")
		}
		dir = parent
	}
}

// logf writes one progress line; a failing log writer is not worth failing
// the server for.
func logf(w io.Writer, format string, args ...any) {
	if w == nil {
		return
	}
	_, _ = fmt.Fprintf(w, format, args...)
}
