// Command zerohop is zerohop's one binary: the controller that hands out
// LoadBalancer IPs, the speaker that announces them and programs the XDP
// datapath on each node, and the tools around them.
package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/textlogger"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/zerohop/zerohop/internal/version"
)

func main() {
	root, name := newRootCommand(), "zerohop"
	if isPlugin(os.Args[0]) {
		root, name = newPluginCommand(), "kubectl zerohop"
	}
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
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

// logFlags are the logging flags of the long-running commands: one
// verbosity for everything the process logs.
type logFlags struct {
	v     int
	debug bool
}

func (f *logFlags) add(fs *pflag.FlagSet) {
	fs.IntVarP(&f.v, "v", "v", 0, "log verbosity: 0 info; 1 zerohop's debug lines (BFD and L2 sessions, datapath writes); 2 also GoBGP's and memberlist's warnings; 4 everything")
	fs.BoolVar(&f.debug, "debug", false, "verbose logging: --v=4")
}

// verbosity is --v, raised to 4 by --debug.
func (f *logFlags) verbosity() int {
	if f.debug {
		return max(f.v, 4)
	}
	return f.v
}

// setupLogging makes the process's one logger, writing klog's text format
// to w at verbosity v, and routes every other logging API of the process
// into it: controller-runtime's, klog's (client-go), log/slog's and the
// standard log package's. Components get it, or a named child, in their
// Options.
func setupLogging(w io.Writer, v int) logr.Logger {
	l := textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(v), textlogger.Output(w)))
	ctrl.SetLogger(l)
	klog.SetLogger(l)
	// klog checks its own verbosity before it asks the logger.
	var fs flag.FlagSet
	klog.InitFlags(&fs)
	_ = fs.Set("v", strconv.Itoa(v))
	// Also redirects the standard log package (slog.SetDefault does).
	slog.SetDefault(slog.New(logr.ToSlogHandler(l)))
	return l
}
