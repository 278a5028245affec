// Package bench is zerohop's side-by-side benchmark harness: the same lab
// client, router, node and Pods, with the VIP served in turn by zerohop's
// XDP datapath, by kube-proxy-style iptables rules and by kube-proxy-style
// nftables rules, at 1, 1,000 and 10,000 Services. It also times the
// control plane: a real speaker's initial sync of 10,000 Services from the
// API server, programming them into the BPF maps in process, and loading
// the equivalent iptables and nftables rulesets. See docs/performance.md.
package bench

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"strings"
)

// Service is one Service port as kube-proxy sees it: a load-balancer IP, a
// port and protocol, and the endpoints (Pod address and targetPort).
type Service struct {
	Name      string // namespace/name:port, used for chain names and comments
	VIP       netip.Addr
	Port      uint16
	Proto     string // "tcp" or "udp"
	Endpoints []netip.AddrPort
}

// Ruleset is a set of Services: the measured ones placed among fillers.
type Ruleset []Service

// Fillers returns n Services that no traffic is sent to, each with eps
// endpoints. Their VIPs are 203.0.113.1-250 with ports from 10000 up, so
// they never collide with a measured Service on a port below 10000; their
// endpoints are in 100.80.0.0/12 (inside the Pod range 100.64.0.0/10, away
// from the lab's per-node /24s), addresses nothing answers for.
func Fillers(n, eps int) []Service {
	out := make([]Service, 0, n)
	for i := range n {
		vip := netip.AddrFrom4([4]byte{203, 0, 113, byte(1 + i%250)})
		s := Service{
			Name:  fmt.Sprintf("filler/svc-%d:p%d", i, 10000+i/250),
			VIP:   vip,
			Port:  uint16(10000 + i/250),
			Proto: "tcp",
		}
		for j := range eps {
			v := uint32(100)<<24 | uint32(80)<<16 | uint32(i*eps+j+1)
			a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
			s.Endpoints = append(s.Endpoints, netip.AddrPortFrom(a, 8080))
		}
		out = append(out, s)
	}
	return out
}

// Place puts the measured Services in the middle of the fillers. Order
// matters only to iptables, whose KUBE-SERVICES chain is a linear list in
// map-iteration order in kube-proxy: the middle is the expected position
// of a Service among its peers.
func Place(measured, fillers []Service) Ruleset {
	mid := len(fillers) / 2
	out := make(Ruleset, 0, len(measured)+len(fillers))
	out = append(out, fillers[:mid]...)
	out = append(out, measured...)
	return append(out, fillers[mid:]...)
}

// chainHash names a chain the way kube-proxy does: a prefix and the first
// 16 characters of the base32 SHA-256 of what the chain is for, which keeps
// iptables chain names within their 28-character limit.
func chainHash(prefix, s string) string {
	h := sha256.Sum256([]byte(s))
	return prefix + base32.StdEncoding.EncodeToString(h[:])[:16]
}

// IptablesRestore renders the nat table kube-proxy's iptables mode writes
// for these Services, as iptables-restore input: PREROUTING and OUTPUT jump
// to KUBE-SERVICES, one rule there per Service port jumps to its KUBE-SVC
// chain, which picks an endpoint with statistic-mode random probabilities
// (1/n, 1/(n-1), ..., the last one unconditional) and jumps to that
// endpoint's KUBE-SEP chain, which marks hairpin traffic for masquerade and
// DNATs to the Pod. (For a LoadBalancer IP kube-proxy goes through a
// KUBE-EXT chain first; it adds one jump per new connection and is left
// out, so that the compared path is SERVICES → SVC → SEP.)
func (rs Ruleset) IptablesRestore() string {
	var chains, rules strings.Builder
	chain := func(name string) { fmt.Fprintf(&chains, ":%s - [0:0]\n", name) }
	rule := func(format string, args ...any) {
		fmt.Fprintf(&rules, format, args...)
		rules.WriteByte('\n')
	}
	chains.WriteString("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n")
	for _, c := range []string{"KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"} {
		chain(c)
	}
	rule(`-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`)
	rule(`-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`)
	rule(`-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING`)
	rule(`-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000`)
	rule(`-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN`)
	rule(`-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0`)
	rule(`-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully`)
	for _, s := range rs {
		svc := chainHash("KUBE-SVC-", s.Name+"/"+s.Proto)
		chain(svc)
		rule(`-A KUBE-SERVICES -d %s/32 -p %s -m comment --comment "%s loadbalancer IP" -m %s --dport %d -j %s`,
			s.VIP, s.Proto, s.Name, s.Proto, s.Port, svc)
		n := len(s.Endpoints)
		for i, ep := range s.Endpoints {
			sep := chainHash("KUBE-SEP-", s.Name+"/"+s.Proto+"/"+ep.String())
			chain(sep)
			if i < n-1 {
				rule(`-A %s -m comment --comment "%s -> %s" -m statistic --mode random --probability %0.10f -j %s`,
					svc, s.Name, ep, 1/float64(n-i), sep)
			} else {
				rule(`-A %s -m comment --comment "%s -> %s" -j %s`, svc, s.Name, ep, sep)
			}
			rule(`-A %s -m comment --comment "%s" -s %s/32 -j KUBE-MARK-MASQ`, sep, s.Name, ep.Addr())
			rule(`-A %s -m comment --comment "%s" -m %s -p %s -j DNAT --to-destination %s`, sep, s.Name, s.Proto, s.Proto, ep)
		}
	}
	return chains.String() + rules.String() + "COMMIT\n"
}

// NftTable is the table the nftables ruleset lives in (family ip), so that
// it can be deleted as a whole.
const NftTable = "kube-proxy"

// NftScript renders what kube-proxy's nftables mode writes for these
// Services, as nft -f input: a nat prerouting (and output) hook jumps to
// the services chain, which looks ip daddr . meta l4proto . th dport up in
// the service-ips verdict map; each entry goes to the Service's chain,
// which picks an endpoint chain with numgen random mod N vmap; the endpoint
// chain marks hairpin traffic for masquerade and DNATs to the Pod.
func (rs Ruleset) NftScript() string {
	var b strings.Builder
	p := func(format string, args ...any) {
		fmt.Fprintf(&b, format, args...)
		b.WriteByte('\n')
	}
	// Creating then deleting the table makes the script replace any
	// previous version in one transaction, as kube-proxy's full syncs do.
	p("table ip %s", NftTable)
	p("delete table ip %s", NftTable)
	p("table ip %s {", NftTable)
	p("\tchain mark-for-masquerade { meta mark set meta mark or 0x4000; }")
	p("\tchain masquerading { meta mark & 0x4000 == 0 return; meta mark set meta mark xor 0x4000; masquerade fully-random; }")
	p("\tchain nat-prerouting { type nat hook prerouting priority dstnat; policy accept; jump services; }")
	p("\tchain nat-output { type nat hook output priority -100; policy accept; jump services; }")
	p("\tchain nat-postrouting { type nat hook postrouting priority srcnat; policy accept; jump masquerading; }")
	p("\tmap service-ips {")
	p("\t\ttype ipv4_addr . inet_proto . inet_service : verdict")
	p("\t\tcomment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\"")
	p("\t}")
	p("\tchain services { ip daddr . meta l4proto . th dport vmap @service-ips; }")
	for i, s := range rs {
		svc := fmt.Sprintf("service-%d-%s", i, s.Proto)
		var eps []string
		for j, ep := range s.Endpoints {
			epc := fmt.Sprintf("endpoint-%d-%d", i, j)
			eps = append(eps, fmt.Sprintf("%d : goto %s", j, epc))
			p("\tchain %s { ip saddr %s jump mark-for-masquerade; meta l4proto %s dnat to %s; }", epc, ep.Addr(), s.Proto, ep)
		}
		if len(eps) == 0 {
			p("\tchain %s { reject; }", svc)
		} else {
			p("\tchain %s { numgen random mod %d vmap { %s }; }", svc, len(eps), strings.Join(eps, ", "))
		}
	}
	p("}")
	// Map elements after the chains they name, in batches: one huge
	// element list is slower to parse than several.
	const batch = 1000
	for i := 0; i < len(rs); i += batch {
		var elems []string
		for j := i; j < min(i+batch, len(rs)); j++ {
			s := rs[j]
			elems = append(elems, fmt.Sprintf("%s . %s . %d : goto service-%d-%s", s.VIP, s.Proto, s.Port, j, s.Proto))
		}
		p("add element ip %s service-ips { %s }", NftTable, strings.Join(elems, ", "))
	}
	return b.String()
}
