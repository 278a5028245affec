// Command zerohop is zerohop's one binary: the controller that hands out
// LoadBalancer IPs, the speaker that announces them and programs the XDP
// datapath on each node, and the tools around them.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/zerohop/zerohop/internal/version"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "zerohop:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "zerohop",
		Short:         "Container-native LoadBalancer for on-prem Kubernetes",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newVersionCommand())
	for _, add := range subcommands {
		root.AddCommand(add())
	}
	return root
}

// subcommands is filled by the files that define the other subcommands, so
// each lands on its own without touching this file.
var subcommands []func() *cobra.Command

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "zerohop", version.String())
		},
	}
}
