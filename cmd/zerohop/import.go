package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/zerohop/zerohop/internal/metallbimport"
)

func init() { subcommands = append(subcommands, newImportCommand) }

func newImportCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "import",
		Short: "Convert another load balancer's configuration into zerohop objects",
	}
	cmd.AddCommand(newImportMetalLBCommand())
	return cmd
}

func newImportMetalLBCommand() *cobra.Command {
	var (
		format string
		opts   metallbimport.Options
	)
	cmd := &cobra.Command{
		Use:   "metallb FILE|-",
		Short: "Convert MetalLB metallb.io objects and Service annotations into zerohop objects",
		Long: `Reads MetalLB manifests (multi-document YAML or a kubectl List; "-" is
stdin): IPAddressPool, L2Advertisement, BGPAdvertisement, BGPPeer (v1beta1
and v1beta2), BFDProfile, Community, Services with MetalLB annotations, and
the Secrets BGPPeers name as passwordSecret (copied to --secret-namespace).
Writes the zerohop objects as YAML on stdout and, on stderr, a report that
lists per source object every field that was not translated and why, and
the order in which zerohop tries the pools. It narrows or leaves out,
never widens: an object it cannot express exactly is not written.

Exits non-zero only when the input is not well-formed (the message names
the document, object and field); untranslated fields are warnings.
See docs/import-metallb.md.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "text" && format != "json" {
				return fmt.Errorf("-o %q: want text or json", format)
			}
			in := cmd.InOrStdin()
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			res, err := metallbimport.Convert(in, opts)
			if err != nil {
				return fmt.Errorf("import metallb: %s: malformed input:\n%w", args[0], err)
			}
			if err := res.WriteYAML(cmd.OutOrStdout()); err != nil {
				return err
			}
			if format == "json" {
				return res.Report.WriteJSON(cmd.ErrOrStderr())
			}
			return res.Report.WriteText(cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&format, "output", "o", "text", "report format on stderr: text or json")
	f.BoolVar(&opts.PinIPs, "pin-ips", false, "request each LoadBalancer Service's current IPs (from its status) with zerohop.io/loadBalancerIPs, so it keeps them")
	f.StringVar(&opts.SecretNamespace, "secret-namespace", "zerohop-system", "the speaker's namespace: where the Secrets made from BGPPeers' plain passwords, and copies of their passwordSecrets, go")
	return cmd
}
