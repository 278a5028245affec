package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
)

// The Flannel-style Pod network: a bridge, cni0, holds the first address
// of the node's Pod ranges and routes them; each Pod's veth is a port of
// it, and the Pod has its address in the range with cni0 as its gateway.
// The node learns Pods' MACs the ordinary way (ARP, neighbour discovery)
// and the bridge learns which port each is behind. Nodes are made so by
// Options.BridgePods.
const podBridge = "cni0"

// podBridgeCmds create node i's cni0 (ip -batch commands in the node).
func podBridgeCmds(i int) []string {
	p4, p6 := PodCIDRs(i)
	g4, g6 := podBridgeGateways(i)
	return append([]string{"link add " + podBridge + " type bridge mcast_snooping 0"},
		append(addrCmds(podBridge, bits(g4, p4.Bits()), bits(g6, p6.Bits())), "link set "+podBridge+" up")...)
}

// podBridgeGateways are cni0's addresses on node i: the first of each
// Pod range (PodAddrs starts after them).
func podBridgeGateways(i int) (netip.Addr, netip.Addr) {
	p4, p6 := PodCIDRs(i)
	return host(p4, 1), host(p6, 1)
}

// hasPodBridge tells whether the node's Pods hang off cni0.
func hasPodBridge(node string) bool {
	found := false
	_ = InNetns(node, func() error {
		_, err := net.InterfaceByName(podBridge)
		found = err == nil
		return nil
	})
	return found
}

// wireBridgedPod creates the Pod's veth as a port of the node's cni0.
func wireBridgedPod(ctx context.Context, podNS, node string, a4, a6 netip.Addr) error {
	veth := podVeth(podNS)
	if err := ipBatch(ctx, "", []string{vethCmd(UplinkIf, podNS, veth, node)}); err != nil {
		return err
	}
	if err := ipBatch(ctx, node, []string{"link set " + veth + " master " + podBridge, "link set " + veth + " up"}); err != nil {
		return err
	}
	var i int
	if _, err := fmt.Sscanf(node, "zh-node%d", &i); err != nil {
		return fmt.Errorf("pod %s: node %q: %w", podNS, node, err)
	}
	p4, p6 := PodCIDRs(i)
	g4, g6 := podBridgeGateways(i)
	podCmds := append(addrCmds(UplinkIf, bits(a4, p4.Bits()), bits(a6, p6.Bits())), "link set "+UplinkIf+" up",
		"route add default via "+g4.String(),
		"route add ::/0 via "+g6.String())
	return ipBatch(ctx, podNS, podCmds)
}
