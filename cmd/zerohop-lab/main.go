// Command zerohop-lab runs zerohop's lab: network namespaces as hosts, an FRR
// router and a real API server (see docs/lab.md). It is a development tool,
// kept out of the zerohop binary so that the image never ships the lab, the
// test API server or the echo server; the demo runs the controller and
// speakers of a separate zerohop binary (--zerohop).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/zerohop/zerohop/e2e/lab"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "zerohop-lab:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	var stateDir string
	root := &cobra.Command{
		Use:           "zerohop-lab",
		Short:         "Run zerohop's lab: namespaces as hosts, an FRR router, a real API server (needs root)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&stateDir, "state-dir", lab.DefaultStateDir, "where the lab keeps its state, logs and configs")
	root.AddCommand(newUpCommand(&stateDir), newDownCommand(&stateDir), newStatusCommand(&stateDir), newNodeCommand(&stateDir), newHelperCommand())
	return root
}

// helperCommand is the argv prefix with which the lab re-executes this
// binary inside a namespace (see newHelperCommand).
func helperCommand() ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return []string{exe, "helper"}, nil
}

// zerohopBinary resolves --zerohop: the given path, or else the zerohop
// binary next to self (bin/zerohop beside bin/zerohop-lab). It must be an
// executable file, checked before the lab is built rather than when the
// demo would start it.
func zerohopBinary(flag, self string) (string, error) {
	p := flag
	if p == "" {
		p = filepath.Join(filepath.Dir(self), "zerohop")
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("zerohop binary %s: %w", p, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case err != nil:
		return "", fmt.Errorf("zerohop binary: %w (build it with make build, or pass --zerohop)", err)
	case !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0:
		return "", fmt.Errorf("zerohop binary %s: not an executable file", abs)
	}
	return abs, nil
}

func newUpCommand(stateDir *string) *cobra.Command {
	var (
		nodes     int
		bfd       bool
		demo      bool
		zerohop   string
		kubeProxy string
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Build the lab and leave it running (end it with `zerohop-lab down`)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			helper, err := helperCommand()
			if err != nil {
				return err
			}
			var exe string
			if demo {
				if exe, err = zerohopBinary(zerohop, helper[0]); err != nil {
					return err
				}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			defer cancel()
			out := cmd.OutOrStdout()
			t0 := time.Now()
			l, err := lab.Start(ctx, lab.Options{
				Nodes: nodes, BFD: bfd, KubeProxy: kubeProxy, StateDir: *stateDir, HelperCommand: helper, Detach: true, Log: out,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "lab is up (%s); state and logs in %s\n", time.Since(t0).Round(time.Millisecond), l.StateDir())
			if demo {
				if err := l.Demo(ctx, out, exe); err != nil {
					return fmt.Errorf("demo: %w (the lab stays up; `zerohop-lab down` ends it)", err)
				}
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&nodes, "nodes", lab.DefaultNodes, "number of nodes")
	cmd.Flags().BoolVar(&bfd, "bfd", false, "enable BFD on the router's BGP neighbors")
	cmd.Flags().StringVar(&kubeProxy, "kube-proxy", lab.KubeProxyIPTables, "run kube-proxy on every node in this mode: iptables, nftables or none")
	cmd.Flags().BoolVar(&demo, "demo", false, "apply the demo (pool, peers, advertisement, a Service with Pods on two nodes), run zerohop's controller and a speaker per node, and show what works")
	cmd.Flags().StringVar(&zerohop, "zerohop", "", "the zerohop binary whose controller and speakers the demo runs (default: zerohop next to this binary)")
	return cmd
}

func newDownCommand(stateDir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Remove the lab, and anything a crashed earlier run left behind",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			err := lab.Down(ctx, *stateDir)
			if left := lab.Leftovers(*stateDir, nil); len(left) > 0 {
				return fmt.Errorf("lab down left: %s (errors: %v)", strings.Join(left, ", "), err)
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "lab is down; nothing of it is left")
			return nil
		},
	}
}

func newStatusCommand(stateDir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the lab's hosts, processes, BGP neighbors and API server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			l, err := lab.Load(lab.Options{StateDir: *stateDir})
			if err != nil {
				return err
			}
			return l.PrintStatus(ctx, cmd.OutOrStdout())
		},
	}
}

// newNodeCommand acts on a node's kubelet stand-in, to watch the cluster
// and zerohop react.
func newNodeCommand(stateDir *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Kill, start or shut down a node's kubelet stand-in",
	}
	act := func(use, short string, do func(ctx context.Context, l *lab.Lab, i int) error) *cobra.Command {
		return &cobra.Command{
			Use:   use + " N",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				var i int
				if _, err := fmt.Sscan(args[0], &i); err != nil {
					return fmt.Errorf("node %q: want its number", args[0])
				}
				helper, err := helperCommand()
				if err != nil {
					return err
				}
				l, err := lab.Load(lab.Options{StateDir: *stateDir, HelperCommand: helper, Detach: true})
				if err != nil {
					return err
				}
				if i < 1 || i > l.Nodes() {
					return fmt.Errorf("no node %d (the lab has %d)", i, l.Nodes())
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
				defer cancel()
				if err := do(ctx, l, i); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s done\n", lab.NodeName(i), use)
				return nil
			},
		}
	}
	cmd.AddCommand(
		act("kill-kubelet", "SIGKILL the node's kubelet stand-in: its Pods keep running, the node turns NotReady after the grace period",
			func(_ context.Context, l *lab.Lab, i int) error { return l.KillKubelet(i) }),
		act("start-kubelet", "start the node's kubelet stand-in again; it adopts its running Pods",
			func(_ context.Context, l *lab.Lab, i int) error { return l.StartKubelet(i) }),
		act("shutdown", "shut the node down gracefully: NotReady, its Pods terminated and Failed, the stand-in exits",
			func(ctx context.Context, l *lab.Lab, i int) error { return l.ShutdownNode(ctx, i) }),
	)
	return cmd
}

// newHelperCommand is how the lab re-executes this binary inside a
// namespace to run a Pod's echo server or a test BGP peer.
func newHelperCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "helper ROLE [flags]",
		Short:              "Internal: run a lab helper process (echo, bgp-peer, kubelet)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			return lab.RunHelper(args)
		},
	}
}
