package datapath

import (
	"net"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/zerohop/zerohop/bpf"
)

func mac(last byte) net.HardwareAddr { return net.HardwareAddr{2, 0, 0, 0, 0, last} }

// TestPodLinks finds Pod links in views of a node's tables: routed veths
// with their Pod's MAC from the neighbour table, bridge ports with the
// Pod MACs the bridge learned, and everything that is not a Pod's
// interface left out.
func TestPodLinks(t *testing.T) {
	uplink := linkInfo{index: 2, name: "eth0", kind: "veth", peerNS: true, up: true, mac: mac(2)}
	cni0 := linkInfo{index: 10, name: "cni0", kind: "bridge", up: true, mac: mac(10)}
	routed := linkInfo{index: 20, name: "cali1", kind: "veth", peerNS: true, up: true, mac: mac(20)}
	port := linkInfo{index: 30, name: "veth1", kind: "veth", peerNS: true, up: true, master: 10, mac: mac(30)}
	tests := []struct {
		name string
		view podView
		want bpf.PodLinks
	}{
		{
			name: "routed veth, Pod MAC from its neighbour entries (both families, one MAC)",
			view: podView{links: []linkInfo{uplink, routed}, neigh: []neighInfo{
				{link: 20, addr: netip.MustParseAddr("100.64.1.2"), mac: mac(0x21)},
				{link: 20, addr: netip.MustParseAddr("2001:db8:64:1::2"), mac: mac(0x21)},
				{link: 2, addr: netip.MustParseAddr("198.51.100.1"), mac: mac(1)},
			}},
			want: bpf.PodLinks{Peers: []bpf.PodLink{{Ifindex: 20, HostMAC: mac(20), PodMAC: mac(0x21)}}},
		},
		{
			name: "routed veth whose Pod is not resolved yet: a link without the Pod's MAC",
			view: podView{links: []linkInfo{routed}},
			want: bpf.PodLinks{Peers: []bpf.PodLink{{Ifindex: 20, HostMAC: mac(20)}}},
		},
		{
			name: "bridge port: the bridge's MAC as source, the learned Pod MAC behind the port",
			view: podView{links: []linkInfo{cni0, port}, fdb: []fdbEntry{
				{port: 30, mac: mac(30)}, // the port's own
				{port: 30, mac: mac(0x31)},
			}, neigh: []neighInfo{{link: 10, addr: netip.MustParseAddr("100.64.1.3"), mac: mac(0x31)}}},
			want: bpf.PodLinks{
				Peers:   []bpf.PodLink{{Ifindex: 30, HostMAC: mac(10), PodMAC: mac(0x31)}},
				Bridged: []bpf.BridgedPod{{Bridge: 10, MAC: mac(0x31), Port: 30}},
			},
		},
		{
			name: "bridge port with two MACs behind it: both reach the port, no single Pod MAC",
			view: podView{links: []linkInfo{cni0, port}, fdb: []fdbEntry{{port: 30, mac: mac(0x31)}, {port: 30, mac: mac(0x32)}}},
			want: bpf.PodLinks{
				Peers:   []bpf.PodLink{{Ifindex: 30, HostMAC: mac(10)}},
				Bridged: []bpf.BridgedPod{{Bridge: 10, MAC: mac(0x31), Port: 30}, {Bridge: 10, MAC: mac(0x32), Port: 30}},
			},
		},
		{
			name: "not Pod links: the uplink, a veth whose peer is here, a down one, a dummy, a port of a bond",
			view: podView{links: []linkInfo{
				uplink,
				{index: 40, name: "vethA", kind: "veth", up: true, mac: mac(40)},
				{index: 41, name: "cali2", kind: "veth", peerNS: true, mac: mac(41)},
				{index: 42, name: "dummy0", kind: "dummy", peerNS: true, up: true, mac: mac(42)},
				{index: 43, name: "bond0", kind: "bond", up: true, mac: mac(43)},
				{index: 44, name: "veth4", kind: "veth", peerNS: true, up: true, master: 43, mac: mac(44)},
			}},
		},
		{
			name: "netkit",
			view: podView{links: []linkInfo{{index: 50, name: "nk1", kind: "netkit", peerNS: true, up: true, mac: mac(50)}}},
			want: bpf.PodLinks{Peers: []bpf.PodLink{{Ifindex: 50, HostMAC: mac(50)}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := podLinks(tc.view, map[string]bool{"eth0": true})
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
			if !equalPodLinks(got, tc.want) {
				t.Fatal("equalPodLinks says the result differs from itself")
			}
		})
	}
}

// TestPodNeighbours keeps managed entries for the local backends routed
// to a Pod link or a bridge with Pod ports, and for no other address.
func TestPodNeighbours(t *testing.T) {
	links := bpf.PodLinks{
		Peers:   []bpf.PodLink{{Ifindex: 20}, {Ifindex: 30}},
		Bridged: []bpf.BridgedPod{{Bridge: 10, MAC: mac(0x31), Port: 30}},
	}
	rt := routeTable{
		{dst: netip.MustParsePrefix("100.64.1.2/32"), link: 20},
		{dst: netip.MustParsePrefix("2001:db8:64:1::2/128"), link: 20},
		{dst: netip.MustParsePrefix("100.64.1.0/24"), link: 10},
		{dst: netip.MustParsePrefix("0.0.0.0/0"), link: 2},
	}
	addrs := []netip.Addr{
		netip.MustParseAddr("100.64.1.2"),       // routed
		netip.MustParseAddr("2001:db8:64:1::2"), // routed, v6
		netip.MustParseAddr("100.64.1.3"),       // behind cni0
		netip.MustParseAddr("100.80.0.1"),       // out of the uplink: not a Pod here
		netip.MustParseAddr("2001:db8:99::1"),   // no route
	}
	got := podNeighbours(links, slices.Values(addrs), rt.lookup)
	want := map[neighbourKey]bool{
		{link: 20, addr: netip.MustParseAddr("100.64.1.2")}:       true,
		{link: 20, addr: netip.MustParseAddr("2001:db8:64:1::2")}: true,
		{link: 10, addr: netip.MustParseAddr("100.64.1.3")}:       true,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
