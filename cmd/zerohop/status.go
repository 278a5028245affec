package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/zerohop/zerohop/bpf"
	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/internal/kubescheme"
	"github.com/zerohop/zerohop/status"
)

func init() { subcommands = append(subcommands, newStatusCommand) }

func newStatusCommand() *cobra.Command { return statusCommand(false) }

// statusCommand builds `status`; asPlugin (kubectl zerohop status) makes
// the API's view of every node the default, as no datapath is at hand.
func statusCommand(asPlugin bool) *cobra.Command {
	var (
		kubeconfig string
		kubeCtx    string
		pinRoot    string
		node       string
		nodeName   string
		format     string
		noAPI      bool
		timeout    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show VIPs, backends, datapath counters, BGP sessions and L2 owners",
		Long: `Run on a node, status reads the node's pinned XDP datapath directly
(--bpf-pin-root; no running speaker needed) and, when a kubeconfig is found
(--kubeconfig, $KUBECONFIG, in-cluster, ~/.kube/config), joins it with the
API: Services and pools, SpeakerStatus announcements, BGP sessions and L2
owners, EndpointSlices. Without a kubeconfig it shows the datapath alone.

--node NAME shows NAME's view through the API only: no local maps are read.

-o json writes a stable document for scripts; docs/troubleshooting.md lists
its fields.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "text" && format != "json" {
				return fmt.Errorf("-o %q: want text or json", format)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			in := status.Input{Now: time.Now(), Node: nodeName}
			apiOnly := asPlugin && !cmd.Flags().Changed("bpf-pin-root")
			switch {
			case apiOnly && noAPI:
				return errors.New("kubectl zerohop status reads the API; --no-api needs --bpf-pin-root")
			case apiOnly:
				in.Node = node
			case node != "":
				if noAPI {
					return errors.New("--node reads the API; it cannot be combined with --no-api")
				}
				in.Node = node
			default:
				snap, err := bpf.Inspect(pinRoot)
				if err != nil {
					return fmt.Errorf("datapath: %w (is the speaker running on this node, with --bpf-pin-root %s? --node NAME shows the API's view alone)", err, orDefault(pinRoot, bpf.DefaultPinRoot))
				}
				in.Datapath, in.PinRoot = snap, orDefault(pinRoot, bpf.DefaultPinRoot)
			}
			if !noAPI {
				cfg, err := statusRestConfig(kubeconfig, kubeCtx)
				switch {
				case err != nil:
					return err
				case cfg == nil && (node != "" || apiOnly):
					return errors.New("--node needs the API: no kubeconfig (--kubeconfig, $KUBECONFIG, in-cluster, ~/.kube/config)")
				case cfg == nil:
					in.Notes = append(in.Notes, "no kubeconfig found: datapath only")
				default:
					api, err := readAPI(ctx, cfg)
					if err != nil {
						return err
					}
					in.API = api
				}
			}
			r := status.Build(in)
			if format == "json" {
				return r.WriteJSON(cmd.OutOrStdout())
			}
			return r.WriteText(cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then in-cluster config, then ~/.kube/config; none: datapath only)")
	f.StringVar(&kubeCtx, "context", "", "kubeconfig context to use (default: the current one)")
	f.StringVar(&pinRoot, "bpf-pin-root", bpf.DefaultPinRoot, "bpffs directory the speaker pinned the datapath under")
	f.StringVar(&node, "node", "", "show this node's view through the API only (no local maps)")
	if asPlugin {
		cmd.Long = `kubectl zerohop status shows, for every LoadBalancer Service zerohop serves,
its addresses and pools, the nodes announcing them and to which peers, the
Service's zerohop.io conditions, every node's BGP sessions and L2 owners:
the API's view (Services, pools, SpeakerStatuses, EndpointSlices).

--node NAME limits sessions and L2 ownership to that node. Run on a node
with --bpf-pin-root to join that node's XDP counters as well.

-o json writes a stable document for scripts; docs/troubleshooting.md lists
its fields.`
		f.StringVar(&nodeName, "node-name", "", "the node this runs on, to show only its sessions and L2 ownership (with --bpf-pin-root)")
	} else {
		f.StringVar(&nodeName, "node-name", os.Getenv("NODE_NAME"), "the node this runs on, to show only its sessions and L2 ownership (default $NODE_NAME; empty: all nodes)")
	}
	f.StringVarP(&format, "output", "o", "text", "text or json")
	f.BoolVar(&noAPI, "no-api", false, "do not read the API even if a kubeconfig is found")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "give up on the API after this long")
	return cmd
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// statusRestConfig is restConfig with one difference: finding no
// kubeconfig at all is not an error (the datapath part stands alone), but
// a kubeconfig named by --kubeconfig or $KUBECONFIG that does not load is.
func statusRestConfig(kubeconfig, kubeCtx string) (*rest.Config, error) {
	if kubeCtx != "" {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		rules.ExplicitPath = kubeconfig
		cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
			&clientcmd.ConfigOverrides{CurrentContext: kubeCtx}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("kubeconfig context %s: %w", kubeCtx, err)
		}
		return cfg, nil
	}
	if kubeconfig != "" || os.Getenv("KUBECONFIG") != "" {
		return restConfig(kubeconfig)
	}
	if cfg, err := rest.InClusterConfig(); err == nil {
		return cfg, nil
	}
	home := clientcmd.RecommendedHomeFile
	if _, err := os.Stat(home); err != nil {
		return nil, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", home)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", home, err)
	}
	return cfg, nil
}

// readAPI lists what status joins. Each error names the kind it could not
// list, so RBAC gaps are obvious.
func readAPI(ctx context.Context, cfg *rest.Config) (*status.API, error) {
	c, err := client.New(cfg, client.Options{Scheme: kubescheme.New()})
	if err != nil {
		return nil, fmt.Errorf("api %s: %w", cfg.Host, err)
	}
	var (
		svcs   corev1.ServiceList
		slices discoveryv1.EndpointSliceList
		sps    v1alpha1.SpeakerStatusList
		pools  v1alpha1.IPAddressPoolList
	)
	for _, l := range []struct {
		what string
		list client.ObjectList
	}{
		{"services", &svcs}, {"endpointslices.discovery.k8s.io", &slices},
		{"speakerstatuses.zerohop.io", &sps}, {"ipaddresspools.zerohop.io", &pools},
	} {
		if err := c.List(ctx, l.list); err != nil {
			return nil, fmt.Errorf("api %s: list %s: %w", cfg.Host, l.what, err)
		}
	}
	return &status.API{Services: svcs.Items, EndpointSlices: slices.Items, Speakers: sps.Items, Pools: pools.Items}, nil
}
