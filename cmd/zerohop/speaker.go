package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/zerohop/zerohop/bpf"
	"github.com/zerohop/zerohop/speaker"
	"github.com/zerohop/zerohop/speaker/bfd"
	"github.com/zerohop/zerohop/speaker/datapath"
)

func init() { subcommands = append(subcommands, newSpeakerCommand) }

func newSpeakerCommand() *cobra.Command {
	var (
		kubeconfig string
		routerID   string
		opts       speaker.Options
		logs       logFlags
		withBFD    bool
		dpOpts     bpf.Options
		withDP     bool
		cleanup    bool
		// uninstalled is set when Start returns: deferred cleanups
		// read it.
		uninstalled bool
	)
	cmd := &cobra.Command{
		Use:   "speaker",
		Short: "Announce LoadBalancer IPs from this node over BGP or ARP/NDP",
		Long: `The speaker runs on every node (a DaemonSet). It opens the BGP sessions
of the BGPPeers selected for its node with an embedded GoBGP, and announces
the Services' IPs as the BGPAdvertisements say: with externalTrafficPolicy
Local only while the node has a ready endpoint. For L2Advertisements the
speakers form a memberlist cluster and one node per IP answers ARP/NDP
for it (docs/l2.md). It reports sessions and
announcements in the SpeakerStatus named after the node. See docs/speaker.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := setupLogging(os.Stderr, logs.verbosity())
			opts.Log = log
			if cleanup {
				return cleanupDatapath(dpOpts)
			}
			if err := checkDatapathSizes(dpOpts); withDP && err != nil {
				return err
			}
			if opts.NodeName == "" {
				return errors.New("--node-name (or $NODE_NAME) is required")
			}
			if routerID != "" {
				id, err := netip.ParseAddr(routerID)
				if err != nil || !id.Is4() {
					return fmt.Errorf("--router-id %q: want an IPv4 address", routerID)
				}
				opts.RouterID = id
			}
			cfg, err := restConfig(kubeconfig)
			if err != nil {
				return err
			}
			if withBFD {
				m, err := bfd.NewManager(bfd.ManagerOptions{Registerer: metrics.Registry, Log: log.WithName("bfd")})
				if err != nil {
					return fmt.Errorf("bfd (--bfd=false runs without it): %w", err)
				}
				defer func() {
					if opts.KeepPathsOnExit && !uninstalled {
						// A restart: let the router's BFD time out like its
						// BGP graceful-restart timer expects.
						m.Close()
						return
					}
					// The node is going away: tell the routers now
					// (AdminDown), rather than after the detection time.
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					defer cancel()
					m.Shutdown(ctx)
				}()
				opts.BFD = speaker.BFDManager(m)
			}
			if opts.MemberlistKey == nil {
				if k := os.Getenv("ZEROHOP_MEMBERLIST_KEY"); k != "" {
					opts.MemberlistKey = []byte(k)
				}
			}
			if withDP {
				// A nested pin root (one per node when nodes share a
				// bpffs, as in the lab) needs its parent to exist.
				if parent := filepath.Dir(dpOpts.PinRoot); parent != "/sys/fs/bpf" {
					if err := os.MkdirAll(parent, 0o700); err != nil {
						return fmt.Errorf("--bpf-pin-root: %w", err)
					}
				}
				dp, err := bpf.Load(dpOpts)
				if err != nil {
					return fmt.Errorf("xdp datapath (--datapath=false runs announce-only): %w", err)
				}
				// Close keeps the pins: the programs go on forwarding
				// while the next speaker starts (docs/datapath.md, "How
				// the speaker programs it"). On uninstall they go.
				defer func() {
					if uninstalled {
						if err := dp.Remove(); err != nil {
							log.Error(err, "uninstall: remove the datapath")
						}
						return
					}
					_ = dp.Close()
				}()
				opts.Datapath = dp
				if opts.PathMTU == 0 {
					opts.PathMTU = uplinkMTU(opts.Uplinks)
				}
			}
			s, err := speaker.New(cfg, opts)
			if err != nil {
				return err
			}
			err = s.Start(ctrl.SetupSignalHandler())
			uninstalled = s.Uninstalled()
			return err
		},
	}
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		ns = "zerohop-system"
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then in-cluster config, then ~/.kube/config)")
	f.StringVar(&opts.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME, from the downward API)")
	f.StringVar(&opts.Namespace, "namespace", ns, "the speaker's namespace, where BGP password Secrets live (default $POD_NAMESPACE)")
	f.StringVar(&routerID, "router-id", "", "BGP router ID (default: a BGPPeer's routerID, else the node's IPv4 InternalIP)")
	f.StringVar(&opts.MetricsAddr, "metrics-bind-address", ":7474", `Prometheus metrics address; "0" disables. HTTPS: a scrape needs a bearer token allowed to GET /metrics`)
	f.BoolVar(&opts.MetricsPlainHTTP, "metrics-plain-http", false, "serve metrics over plain HTTP to anyone who can connect (no TLS, no token check)")
	f.StringVar(&opts.MetricsCertDir, "metrics-cert-dir", "", "directory with tls.crt and tls.key for the metrics endpoint, reloaded on change (default: a self-signed certificate)")
	f.StringVar(&opts.HealthAddr, "health-probe-bind-address", ":7475", `/healthz address; "0" disables`)
	f.StringVar(&opts.PprofAddr, "pprof-bind-address", "", `Go profiling (/debug/pprof) address, for debugging; "" or "0" disables`)
	f.BoolVar(&opts.KeepPathsOnExit, "keep-paths-on-exit", true, "on SIGTERM, drop BGP sessions without a NOTIFICATION so routers with graceful restart keep the paths until the speaker is back")
	f.Float32Var(&opts.QPS, "kube-api-qps", 50, "API requests per second")
	f.IntVar(&opts.Burst, "kube-api-burst", 100, "API request burst")
	mlPort := speaker.DefaultMemberlistPort
	if p, err := strconv.Atoi(os.Getenv("ZEROHOP_MEMBERLIST_PORT")); err == nil && p > 0 {
		mlPort = p
	}
	f.IntVar(&opts.MemberlistPort, "memberlist-bind-port", mlPort, "L2 mode: UDP and TCP port the speakers gossip on (default $ZEROHOP_MEMBERLIST_PORT, else 7946)")
	f.StringVar(&opts.MemberlistSecret, "memberlist-secret", "", `L2 mode: Secret in --namespace whose "secretkey" is the gossip key, when $ZEROHOP_MEMBERLIST_KEY is unset`)
	f.BoolVar(&withBFD, "bfd", true, "run BFD (UDP port 3784) for BGPPeers with a bfdProfile")
	f.BoolVar(&withDP, "datapath", true, "balance VIP traffic in XDP on the uplinks (false: announce only, kube-proxy balances)")
	f.StringVar(&dpOpts.PinRoot, "bpf-pin-root", bpf.DefaultPinRoot, "bpffs directory the datapath pins its programs, links and maps in; a restarted speaker re-opens them")
	var uplinks []string
	if v := os.Getenv("ZEROHOP_UPLINKS"); v != "" {
		uplinks = strings.Split(v, ",")
	}
	f.StringSliceVar(&opts.Uplinks, "uplink", uplinks, "interface to attach the datapath to (repeatable; default $ZEROHOP_UPLINKS, else the default routes' interfaces and those L2Advertisements name)")
	f.StringVar(&opts.OwnerDaemonSet, "owner-daemonset", os.Getenv("ZEROHOP_DAEMONSET"), "the speaker's DaemonSet in --namespace (default $ZEROHOP_DAEMONSET): when it is gone at shutdown, this is an uninstall, and the speaker closes its sessions and removes the datapath")
	f.IntVar(&opts.PathMTU, "underlay-mtu", 0, "MTU between nodes, for Cluster mode's MSS clamping (default: the smallest uplink MTU)")
	f.Uint32Var(&dpOpts.MaxServices, "max-services", 16384, "datapath size: Service ports (VIP, port, protocol) this node can balance; changing it on a node with pins needs `--cleanup` first")
	f.Uint32Var(&dpOpts.MaxBackends, "max-backends", 65536, "datapath size: backends (endpoint address and port, per Service port) of all Services together; changing it needs `--cleanup` first")
	f.Uint32Var(&dpOpts.MaxFlows, "max-flows", 131072, "datapath size: tracked connections (LRU); changing it needs `--cleanup` first")
	f.Uint32Var(&dpOpts.MaglevSize, "maglev-table-size", bpf.DefaultMaglevSize, "slots per Service in its Maglev table: a prime from 251 to 131071, the same on every node, at least 100 times a Service's largest backend count for even spread; kernel memory is 4 bytes per slot per Service port (twice while a table is replaced); changing it needs `--cleanup` first")
	f.BoolVar(&opts.DirectToPods, "direct-to-pods", true, "deliver balanced packets into local Pods' interfaces from the uplink (tc bpf_redirect_peer), skipping the node's routing and netfilter; false: through the node's stack, where netfilter (iptables NetworkPolicy) sees them")
	f.BoolVar(&dpOpts.ReplaceXDP, "xdp-replace", false, "replace an XDP program another tool attached to an uplink (default: refuse and say which)")
	f.BoolVar(&cleanup, "cleanup", false, "detach the datapath from every interface, remove its pinned objects under --bpf-pin-root, and exit (run on uninstall)")
	logs.add(f)
	return cmd
}

// checkDatapathSizes refuses map sizes the kernel or the Maglev map's
// sizing (2 tables of chunks per service) would overflow, and Maglev
// tables that are not prime, naming the flag.
func checkDatapathSizes(o bpf.Options) error {
	for _, c := range []struct {
		flag     string
		v, limit uint32
	}{
		{"--max-services", o.MaxServices, 1 << 20},
		{"--max-backends", o.MaxBackends, 1 << 24},
		{"--max-flows", o.MaxFlows, 1 << 26},
	} {
		if c.v == 0 || c.v > c.limit {
			return fmt.Errorf("%s %d: want 1 to %d", c.flag, c.v, c.limit)
		}
	}
	if m := o.MaglevSize; m < 251 || m > 131071 || !bpf.IsPrime(m) {
		return fmt.Errorf("--maglev-table-size %d: want a prime from 251 to 131071 (e.g. 251, 1021, 4093, 16381, 65521, 131071)", m)
	}
	return nil
}

// cleanupDatapath removes a node's datapath: unpinning the links detaches
// the programs, and the maps go with their last reference.
func cleanupDatapath(opts bpf.Options) error {
	if opts.PinRoot == "" {
		opts.PinRoot = bpf.DefaultPinRoot
	}
	if _, err := os.Stat(opts.PinRoot); errors.Is(err, os.ErrNotExist) {
		fmt.Printf("nothing to clean up: %s does not exist\n", opts.PinRoot)
		return nil
	}
	dp, err := bpf.Load(opts)
	if err != nil {
		// A layout this build cannot load: the pins still go.
		if rerr := os.RemoveAll(opts.PinRoot); rerr != nil {
			return fmt.Errorf("cleanup %s: %w", opts.PinRoot, errors.Join(err, rerr))
		}
		fmt.Printf("removed %s (could not load it: %v)\n", opts.PinRoot, err)
		return nil
	}
	if err := dp.Remove(); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	fmt.Printf("datapath detached and %s removed\n", opts.PinRoot)
	return nil
}

// uplinkMTU is the smallest MTU among the named interfaces, or among the
// interfaces with a default route when none are named; 0 if none is found.
func uplinkMTU(names []string) int {
	if len(names) == 0 {
		names, _ = datapath.DefaultRouteInterfaces()
	}
	mtu := 0
	for _, n := range names {
		ifc, err := net.InterfaceByName(n)
		if err != nil {
			continue
		}
		if mtu == 0 || ifc.MTU < mtu {
			mtu = ifc.MTU
		}
	}
	if mtu != 0 && mtu < 1280 {
		return 0 // SetNode would refuse it; no clamping rather than no datapath
	}
	return mtu
}
