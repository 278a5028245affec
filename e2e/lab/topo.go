package lab

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"
)

// Sysctls every lab namespace gets before its links exist, so new links
// inherit them: no IPv6 DAD delay (addresses are usable at once) and no
// reverse-path filter (asymmetric ECMP paths are normal here).
var baseSysctls = map[string]string{
	"net.ipv6.conf.default.accept_dad": "0",
	"net.ipv6.conf.all.accept_dad":     "0",
	"net.ipv4.conf.default.rp_filter":  "0",
	"net.ipv4.conf.all.rp_filter":      "0",
}

var forwardingSysctls = map[string]string{
	"net.ipv4.ip_forward":              "1",
	"net.ipv6.conf.all.forwarding":     "1",
	"net.ipv6.conf.default.forwarding": "1",
}

// addNetns creates a namespace with loopback up and the base sysctls.
func addNetns(ctx context.Context, name string, forwarding bool) error {
	if _, err := run(ctx, "ip", "netns", "add", name); err != nil {
		return err
	}
	if _, err := run(ctx, "ip", "-n", name, "link", "set", "lo", "up"); err != nil {
		return err
	}
	if err := setSysctls(name, baseSysctls); err != nil {
		return err
	}
	if forwarding {
		return setSysctls(name, forwardingSysctls)
	}
	return nil
}

// vethCmd creates a veth pair with each end directly in its namespace
// ("" = root), so no temporary name ever appears in the root namespace.
func vethCmd(a, aNS, b, bNS string) string {
	cmd := "link add " + a
	if aNS != "" {
		cmd += " netns " + aNS
	}
	cmd += " type veth peer name " + b
	if bNS != "" {
		cmd += " netns " + bNS
	}
	return cmd
}

func addrCmds(dev string, addrs ...string) []string {
	var out []string
	for _, a := range addrs {
		cmd := fmt.Sprintf("addr add %s dev %s", a, dev)
		if strings.Contains(a, ":") {
			cmd += " nodad"
		}
		out = append(out, cmd)
	}
	return out
}

// buildTopology creates client, router, switch and node namespaces and wires
// them; the nodes in bridgePods get a cni0 bridge for their Pods. It
// records every namespace and root link in st as it goes, so a failure
// half-way is still cleaned up completely.
func buildTopology(ctx context.Context, nodes int, bridgePods []int, st *State, save func() error) error {
	nsList := []struct {
		name string
		fwd  bool
	}{{ClientNS, false}, {RouterNS, true}, {SwitchNS, false}}
	for i := 1; i <= nodes; i++ {
		nsList = append(nsList, struct {
			name string
			fwd  bool
		}{NodeName(i), true})
	}
	for _, n := range nsList {
		st.Namespaces = append(st.Namespaces, n.name)
		if err := save(); err != nil {
			return err
		}
		if err := addNetns(ctx, n.name, n.fwd); err != nil {
			return err
		}
	}

	// Root namespace: only the management bridge, and veths into it.
	st.RootLinks = append(st.RootLinks, MgmtBridge)
	if err := save(); err != nil {
		return err
	}
	root := []string{
		"link add " + MgmtBridge + " type bridge",
		fmt.Sprintf("addr add %s dev %s", bits(MgmtHost, MgmtPrefix.Bits()), MgmtBridge),
		"link set " + MgmtBridge + " up",
		vethCmd(UplinkIf, ClientNS, RouterClientIf, RouterNS),
		vethCmd(RouterNodesIf, RouterNS, "p-router", SwitchNS),
	}
	for i := 1; i <= nodes; i++ {
		rootEnd := fmt.Sprintf("zh-m-node%d", i)
		st.RootLinks = append(st.RootLinks, rootEnd)
		root = append(root,
			vethCmd(UplinkIf, NodeName(i), fmt.Sprintf("p-node%d", i), SwitchNS),
			vethCmd(MgmtIf, NodeName(i), rootEnd, ""),
			"link set "+rootEnd+" master "+MgmtBridge,
			"link set "+rootEnd+" up",
		)
	}
	if err := save(); err != nil {
		return err
	}
	if err := ipBatch(ctx, "", root); err != nil {
		return err
	}

	// The node segment: a plain bridge, no addresses.
	sw := []string{
		"link add " + switchBridge + " type bridge mcast_snooping 0",
		"link set " + switchBridge + " up",
		"link set p-router master " + switchBridge, "link set p-router up",
	}
	for i := 1; i <= nodes; i++ {
		p := fmt.Sprintf("p-node%d", i)
		sw = append(sw, "link set "+p+" master "+switchBridge, "link set "+p+" up")
	}
	if err := ipBatch(ctx, SwitchNS, sw); err != nil {
		return err
	}

	c4, c6 := ClientAddrs()
	rc4, rc6 := RouterClientAddrs()
	rn4, rn6 := RouterNodeAddrs()
	client := append(addrCmds(UplinkIf, bits(c4, ClientNet4.Bits()), bits(c6, ClientNet6.Bits())),
		"link set "+UplinkIf+" up",
		"route add default via "+rc4.String(),
		"route add ::/0 via "+rc6.String(),
	)
	if err := ipBatch(ctx, ClientNS, client); err != nil {
		return err
	}

	router := append(addrCmds(RouterClientIf, bits(rc4, ClientNet4.Bits()), bits(rc6, ClientNet6.Bits())),
		addrCmds(RouterNodesIf, bits(rn4, NodeNet4.Bits()), bits(rn6, NodeNet6.Bits()))...)
	router = append(router, "link set "+RouterClientIf+" up", "link set "+RouterNodesIf+" up")
	// Host-gw style: the router knows each node's Pod ranges.
	for i := 1; i <= nodes; i++ {
		n4, n6 := NodeAddrs(i)
		p4, p6 := PodCIDRs(i)
		router = append(router, fmt.Sprintf("route add %s via %s", p4, n4), fmt.Sprintf("route add %s via %s", p6, n6))
	}
	if err := ipBatch(ctx, RouterNS, router); err != nil {
		return err
	}

	for i := 1; i <= nodes; i++ {
		n4, n6 := NodeAddrs(i)
		cmds := append(addrCmds(UplinkIf, bits(n4, NodeNet4.Bits()), bits(n6, NodeNet6.Bits())),
			addrCmds(MgmtIf, bits(NodeMgmtAddr(i), MgmtPrefix.Bits()))...)
		cmds = append(cmds, "link set "+UplinkIf+" up", "link set "+MgmtIf+" up",
			"route add default via "+rn4.String(), "route add ::/0 via "+rn6.String())
		for k := 1; k <= nodes; k++ {
			if k == i {
				continue
			}
			k4, k6 := NodeAddrs(k)
			p4, p6 := PodCIDRs(k)
			cmds = append(cmds, fmt.Sprintf("route add %s via %s", p4, k4), fmt.Sprintf("route add %s via %s", p6, k6))
		}
		if slices.Contains(bridgePods, i) {
			cmds = append(cmds, podBridgeCmds(i)...)
		}
		if err := ipBatch(ctx, NodeName(i), cmds); err != nil {
			return err
		}
	}
	return nil
}

// podVeth is the node-side name of a Pod's veth; a hash keeps it within
// IFNAMSIZ whatever the Pod's name.
func podVeth(pod string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(pod))
	return fmt.Sprintf("zp%08x", h.Sum32())
}

// wirePod creates the Pod namespace and its link in the node's style: a
// port of the node's cni0 bridge when it has one (wireBridgedPod), else a
// Calico-style routed veth: the Pod has its addresses as /32 and /128 and
// a default route to a link-local gateway the node answers for; the node
// has a host route per Pod address.
func wirePod(ctx context.Context, podNS, node string, a4, a6 netip.Addr) error {
	if hasPodBridge(node) {
		return wireBridgedPod(ctx, podNS, node, a4, a6)
	}
	veth := podVeth(podNS)
	if err := ipBatch(ctx, "", []string{vethCmd(UplinkIf, podNS, veth, node)}); err != nil {
		return err
	}
	if err := setSysctls(node, map[string]string{
		"net.ipv4.conf." + veth + ".proxy_arp": "1",
		"net.ipv4.conf." + veth + ".rp_filter": "0",
	}); err != nil {
		return err
	}
	nodeCmds := append(addrCmds(veth, podGateway6+"/64"), "link set "+veth+" up",
		fmt.Sprintf("route add %s dev %s", full(a4), veth),
		fmt.Sprintf("route add %s dev %s", full(a6), veth))
	if err := ipBatch(ctx, node, nodeCmds); err != nil {
		return err
	}
	podCmds := append(addrCmds(UplinkIf, full(a4), full(a6)), "link set "+UplinkIf+" up",
		"route add "+podGateway4+" dev "+UplinkIf+" scope link",
		"route add default via "+podGateway4+" dev "+UplinkIf,
		"route add ::/0 via "+podGateway6+" dev "+UplinkIf)
	return ipBatch(ctx, podNS, podCmds)
}
