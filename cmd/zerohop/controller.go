package main

import (
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/zerohop/zerohop/controller"
	"github.com/zerohop/zerohop/controller/gateway"
	"github.com/zerohop/zerohop/controller/webhookcert"
)

func init() { subcommands = append(subcommands, newControllerCommand) }

func newControllerCommand() *cobra.Command {
	var (
		kubeconfig string
		opts       controller.Options
		gatewayAPI bool
		logs       logFlags
		inject     bool
		webhook    string
		cert       webhookcert.Options
	)
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Hand out LoadBalancer IPs from IPAddressPools to Services",
		Long: `The controller assigns IPs to Services of type LoadBalancer whose
spec.loadBalancerClass is zerohop.io/lb (or unset, with --default-class),
from IPAddressPool objects. It is leader-elected; only the leader allocates.
See docs/controller.md for the allocation and sharing rules. With
--gateway-api it also serves Gateway API Gateways (TCP and UDP listeners,
TCPRoutes and UDPRoutes) of the GatewayClasses whose controllerName is
zerohop.io/gateway-controller; see docs/gateway.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Log = setupLogging(os.Stderr, logs.verbosity())
			cfg, err := restConfig(kubeconfig)
			if err != nil {
				return err
			}
			if inject {
				host, port, err := splitHostPort(webhook)
				if err != nil {
					return fmt.Errorf("--webhook-bind-address: %w", err)
				}
				opts.Injection = &controller.InjectionOptions{Host: host, Port: port, Cert: cert}
			}
			c, err := controller.New(cfg, opts)
			if err != nil {
				return err
			}
			if gatewayAPI {
				if err := gateway.Setup(c.Manager(), gateway.Options{}); err != nil {
					return err
				}
			}
			return c.Start(ctrl.SetupSignalHandler())
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then in-cluster config, then ~/.kube/config)")
	f.BoolVar(&opts.DefaultClass, "default-class", false, "also serve LoadBalancer Services without spec.loadBalancerClass")
	f.StringVar(&opts.MetricsAddr, "metrics-bind-address", ":7472", `Prometheus metrics address; "0" disables. HTTPS: a scrape needs a bearer token allowed to GET /metrics`)
	f.BoolVar(&opts.MetricsPlainHTTP, "metrics-plain-http", false, "serve metrics over plain HTTP to anyone who can connect (no TLS, no token check)")
	f.StringVar(&opts.MetricsCertDir, "metrics-cert-dir", "", "directory with tls.crt and tls.key for the metrics endpoint, reloaded on change (default: a self-signed certificate)")
	f.StringVar(&opts.HealthAddr, "health-probe-bind-address", ":7473", `/healthz and /readyz address; "0" disables`)
	f.BoolVar(&opts.LeaderElection, "leader-elect", true, "elect a leader through a Lease so that only one replica allocates")
	f.StringVar(&opts.LeaderElectionNamespace, "leader-election-namespace", "zerohop-system", "namespace of the leader-election Lease")
	f.StringVar(&opts.LeaderElectionID, "leader-election-id", "zerohop-controller", "name of the leader-election Lease")
	f.DurationVar(&opts.LeaseDuration, "leader-election-lease-duration", controller.DefaultLeaseDuration, "how long a standby waits for a leader that stopped renewing (a crash) before it takes over")
	f.DurationVar(&opts.RenewDeadline, "leader-election-renew-deadline", controller.DefaultRenewDeadline, "how long the leader keeps trying to renew before it stops leading")
	f.DurationVar(&opts.RetryPeriod, "leader-election-retry-period", controller.DefaultRetryPeriod, "how often candidates try to take or renew the Lease")
	f.Float32Var(&opts.QPS, "kube-api-qps", 500, "API requests per second")
	f.IntVar(&opts.Burst, "kube-api-burst", 1000, "API request burst")
	f.IntVar(&opts.Workers, "workers", 16, "concurrent Service reconciles")
	f.BoolVar(&gatewayAPI, "gateway-api", false, "serve Gateways of GatewayClasses whose controllerName is "+string(gateway.ControllerName)+" (needs the Gateway API CRDs)")
	f.BoolVar(&inject, "readiness-gate-injection", false, "serve the mutating webhook that adds the readiness gate to new Pods selected by a zerohop Service, in namespaces labelled "+controller.LabelGateInjection+"="+controller.GateInjectionEnabled)
	f.StringVar(&webhook, "webhook-bind-address", ":9443", "address of the webhook's HTTPS server")
	f.StringVar(&cert.Namespace, "webhook-namespace", "zerohop-system", "namespace of the webhook certificate's Secret (the controller's own)")
	f.StringVar(&cert.Secret, "webhook-secret", "zerohop-webhook-cert", "Secret holding the webhook's CA and serving certificate; created and renewed by the controller")
	f.StringVar(&cert.Configuration, "webhook-configuration", "zerohop-readiness-gate", "MutatingWebhookConfiguration whose caBundle the controller writes")
	f.StringSliceVar(&cert.Hosts, "webhook-host", nil, "DNS name or IP the serving certificate names (the webhook Service's <name>.<namespace>.svc); repeatable")
	f.DurationVar(&cert.Validity, "webhook-cert-validity", webhookcert.DefaultValidity, "lifetime of the serving certificate (the CA's is ten times longer); each is renewed after two thirds of it")
	logs.add(f)
	return cmd
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q: not a port number", p)
	}
	return host, port, nil
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
		}
		return cfg, nil
	}
	if os.Getenv("KUBECONFIG") == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return cfg, nil
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("no kubeconfig and not in a cluster: %w", err)
	}
	return cfg, nil
}
