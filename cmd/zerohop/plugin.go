package main

import (
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

// pluginName is the file name kubectl looks for on $PATH to run
// `kubectl zerohop ...` (kubectl's plugin convention: kubectl-<name>, the
// rest of the command line passed as it is). Installing the zerohop binary,
// or a link to it, under this name makes it a kubectl plugin.
const pluginName = "kubectl-zerohop"

// isPlugin reports whether the process was started under the plugin's
// name (by kubectl, or by hand).
func isPlugin(argv0 string) bool {
	base := strings.TrimSuffix(filepath.Base(argv0), ".exe")
	return base == pluginName
}

// newPluginCommand is the command tree kubectl users see: the tools that
// read or convert cluster state, not the components that run in it. Its
// status shows the API's view of every node by default, since a laptop
// has no datapath to read.
func newPluginCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "kubectl zerohop",
		Short:         "zerohop's view of the cluster's LoadBalancer Services",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newVersionCommand(), statusCommand(true), newImportCommand())
	return root
}
