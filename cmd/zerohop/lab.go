package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/zerohop/zerohop/e2e/lab"
)

func init() { subcommands = append(subcommands, newLabCommand) }

// newLabCommand is `zerohop lab`: the network-namespace lab (see docs/lab.md).
func newLabCommand() *cobra.Command {
	var stateDir string
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run zerohop's lab: namespaces as hosts, an FRR router, a real API server (needs root)",
	}
	cmd.PersistentFlags().StringVar(&stateDir, "state-dir", lab.DefaultStateDir, "where the lab keeps its state, logs and configs")
	cmd.AddCommand(newLabUpCommand(&stateDir), newLabDownCommand(&stateDir), newLabStatusCommand(&stateDir), newLabHelperCommand())
	return cmd
}

func labHelperCommand() ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return []string{exe, "lab", "helper"}, nil
}

func newLabUpCommand(stateDir *string) *cobra.Command {
	var (
		nodes int
		bfd   bool
		demo  bool
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Build the lab and leave it running (end it with `zerohop lab down`)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			defer cancel()
			helper, err := labHelperCommand()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			t0 := time.Now()
			l, err := lab.Start(ctx, lab.Options{
				Nodes: nodes, BFD: bfd, StateDir: *stateDir, HelperCommand: helper, Detach: true, Log: out,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "lab is up (%s); state and logs in %s\n", time.Since(t0).Round(time.Millisecond), l.StateDir())
			if demo {
				if err := l.Demo(ctx, out); err != nil {
					return fmt.Errorf("demo: %w (the lab stays up; `zerohop lab down` ends it)", err)
				}
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&nodes, "nodes", lab.DefaultNodes, "number of nodes")
	cmd.Flags().BoolVar(&bfd, "bfd", false, "enable BFD on the router's BGP neighbors")
	cmd.Flags().BoolVar(&demo, "demo", false, "apply the demo (pool, peers, advertisement, a Service with Pods on two nodes), run this binary's controller and a speaker per node, and show what works")
	return cmd
}

func newLabDownCommand(stateDir *string) *cobra.Command {
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

func newLabStatusCommand(stateDir *string) *cobra.Command {
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

// newLabHelperCommand is how the lab re-executes this binary inside a
// namespace to run a Pod's echo server or a test BGP peer.
func newLabHelperCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "helper ROLE [flags]",
		Short:              "Internal: run a lab helper process (echo, bgp-peer)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			return lab.RunHelper(args)
		},
	}
}
