package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2/textlogger"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/zerohop/zerohop/speaker"
	"github.com/zerohop/zerohop/speaker/bfd"
)

func init() { subcommands = append(subcommands, newSpeakerCommand) }

func newSpeakerCommand() *cobra.Command {
	var (
		kubeconfig string
		routerID   string
		opts       speaker.Options
		debug      bool
		withBFD    bool
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
			verbosity := 0
			if debug {
				verbosity = 4
			}
			ctrl.SetLogger(textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(verbosity))))
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
				m, err := bfd.NewManager(bfd.ManagerOptions{Registerer: metrics.Registry, Logger: slog.Default()})
				if err != nil {
					return fmt.Errorf("bfd (--bfd=false runs without it): %w", err)
				}
				defer func() {
					if opts.KeepPathsOnExit {
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
			s, err := speaker.New(cfg, opts)
			if err != nil {
				return err
			}
			return s.Start(ctrl.SetupSignalHandler())
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
	f.StringVar(&opts.MetricsAddr, "metrics-bind-address", ":7474", `Prometheus metrics address; "0" disables`)
	f.StringVar(&opts.HealthAddr, "health-probe-bind-address", ":7475", `/healthz address; "0" disables`)
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
	f.BoolVar(&debug, "debug", false, "verbose logging")
	return cmd
}
