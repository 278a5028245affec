// Package status builds what `zerohop status` shows: one report that joins
// a node's pinned XDP datapath (packets, flows and drops the kernel counted,
// invisible to tcpdump and iptables) with what the API says about the same
// VIPs (Services, pools, SpeakerStatus announcements and sessions,
// EndpointSlices). Building is pure: the command reads the maps and the API
// and hands both here, so every join is unit-tested without a node.
//
// The JSON field names of Report are a stable interface for scripts
// (docs/troubleshooting.md lists them); add fields, never rename them.
package status

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/zerohop/zerohop/bpf"
	"github.com/zerohop/zerohop/config/crosscheck"
	"github.com/zerohop/zerohop/config/v1alpha1"
)

// Report is the whole view.
type Report struct {
	// Node is the node whose view this is: the node the datapath was read
	// on (when known) or the one --node named.
	Node string `json:"node,omitempty"`
	// Sources say where the data came from, so a script can tell "zero"
	// from "not read".
	Sources Sources `json:"sources"`
	// Datapath is node-wide datapath state; nil when no datapath was read.
	Datapath *Datapath `json:"datapath,omitempty"`
	// VIPs are sorted by address.
	VIPs []VIP `json:"vips"`
	// Sessions are BGP sessions, sorted by node and peer.
	Sessions []Session `json:"sessions"`
	// L2 lists L2 owners, sorted by address.
	L2 []L2Owner `json:"l2"`
	// Notes explain gaps: what was not read and why, configuration errors
	// speakers reported.
	Notes []string `json:"notes,omitempty"`
}

// Sources say which inputs the report joined.
type Sources struct {
	// Datapath is the pin root read, empty when none was.
	Datapath string `json:"datapath,omitempty"`
	// API is true when the Kubernetes API was read.
	API bool `json:"api"`
}

// Datapath is what the node's pinned maps hold beyond single services.
type Datapath struct {
	// ConntrackEntries is the number of flows in the conntrack map now.
	ConntrackEntries int `json:"conntrackEntries"`
	// Attached are the interfaces with zerohop's XDP program attached.
	Attached []string `json:"attached"`
	// Events are node-wide counters (encapsulation, fragments, ICMP).
	Events map[string]uint64 `json:"events"`
	// Delivery counts how packets to this node's own Pods left the
	// uplink: into the Pod by tc (peerTC), by XDP redirect, through the
	// node's stack; PodLinks is how many Pod interfaces the speaker found.
	Delivery map[string]uint64 `json:"delivery"`
	PodLinks int               `json:"podLinks"`
}

// VIP is one load-balancer address.
type VIP struct {
	Address string `json:"address"`
	// Service is namespace/name; empty when the API was not read or no
	// Service holds the address (a stale datapath entry).
	Service string `json:"service,omitempty"`
	// Pool is the IPAddressPool holding the address.
	Pool string `json:"pool,omitempty"`
	// Mode is how it is announced: "BGP", "L2", "BGP+L2" or "none"
	// (from SpeakerStatus); empty when the API was not read.
	Mode string `json:"mode,omitempty"`
	// TrafficPolicy is "Local" or "Cluster".
	TrafficPolicy string `json:"trafficPolicy,omitempty"`
	// AnnouncedBy lists the nodes announcing the address, sorted.
	AnnouncedBy []Announcer `json:"announcedBy"`
	// Ports are the (port, protocol) keys of the address, sorted.
	Ports []Port `json:"ports"`
	// Conditions are the zerohop.io conditions of the Service holding
	// the address (each Service's, for a shared one), as the controller
	// wrote them.
	Conditions []Condition `json:"conditions,omitempty"`
}

// Condition is one zerohop.io condition of a Service.
type Condition struct {
	Service string `json:"service"`
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	// Since is when the condition last changed status (RFC 3339).
	Since string `json:"since,omitempty"`
}

// Announcer is one node that attracts a VIP's traffic.
type Announcer struct {
	Node string `json:"node"`
	// Peers are the BGPPeers the node sends the VIP's prefix to.
	Peers []string `json:"peers,omitempty"`
	// L2Interfaces are set when the node owns the VIP in L2 mode.
	L2Interfaces []string `json:"l2Interfaces,omitempty"`
}

// Port is one service key of a VIP and its datapath counters.
type Port struct {
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"`
	// InDatapath is true when the node's maps hold this key.
	InDatapath bool `json:"inDatapath"`
	// Affinity is true with ClientIP session affinity.
	Affinity bool `json:"affinity,omitempty"`
	// SourceRanges are the admitted client ranges (empty: all).
	SourceRanges []string `json:"sourceRanges,omitempty"`
	Counters
	// Drops are packets dropped by reason.
	Drops Drops `json:"drops"`
	// Backends are sorted by address and port.
	Backends []Backend `json:"backends"`
}

// Counters are the datapath's counts, summed over CPUs since the datapath
// was created.
type Counters struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
	// Flows are conntrack entries created: one per connection (TCP) or
	// per client address and port (UDP).
	Flows uint64 `json:"flows"`
	// ConntrackMisses are packets other than a TCP SYN that found no flow.
	ConntrackMisses uint64 `json:"conntrackMisses"`
}

// Drops are a service key's dropped packets by reason.
type Drops struct {
	// NoBackend: a new flow found no backend to take it.
	NoBackend uint64 `json:"noBackend"`
	// SourceRange: the client is outside loadBalancerSourceRanges.
	SourceRange uint64 `json:"sourceRange"`
	// Rejected: a new flow in the port's reject share (a Gateway
	// route's invalid backendRefs): TCP answered with a reset, UDP
	// dropped. Counted per new flow, not per packet.
	Rejected uint64 `json:"rejected"`
}

// Backend is one endpoint of a service key.
type Backend struct {
	// Address is the Pod's ip:port.
	Address string `json:"address"`
	Pod     string `json:"pod,omitempty"`
	Node    string `json:"node,omitempty"`
	// State is "ready", "terminating" or "not-ready" from the
	// EndpointSlice; without the API, "active" or "terminating" from the
	// datapath's flags.
	State string `json:"state"`
	// InDatapath is true when this node's maps hold the backend; in
	// Local mode only the node's own Pods are there.
	InDatapath bool `json:"inDatapath"`
	// Remote is true for a backend reached by encapsulation to its node.
	Remote bool `json:"remote,omitempty"`
	Counters
}

// Session is one BGP session as its speaker reported it.
type Session struct {
	Node    string `json:"node"`
	Peer    string `json:"peer"`
	Address string `json:"address,omitempty"`
	State   string `json:"state"`
	// Since is when the session entered State (RFC 3339), empty if unknown.
	Since string `json:"since,omitempty"`
	// UptimeSeconds is the time in State when it is established, else 0.
	UptimeSeconds int64 `json:"uptimeSeconds"`
	// PrefixesSent counts the prefixes the node announces to the peer.
	PrefixesSent int `json:"prefixesSent"`
	// BFD is the BFD session's state (up, down), empty without BFD.
	BFD string `json:"bfd,omitempty"`
}

// L2Owner is one address a node answers ARP/NDP for.
type L2Owner struct {
	Address    string   `json:"address"`
	Service    string   `json:"service,omitempty"`
	Node       string   `json:"node"`
	Interfaces []string `json:"interfaces,omitempty"`
}

// API is what the command read from the Kubernetes API.
type API struct {
	Services       []corev1.Service
	EndpointSlices []discoveryv1.EndpointSlice
	Speakers       []v1alpha1.SpeakerStatus
	Pools          []v1alpha1.IPAddressPool
}

// Input is everything Build joins. Datapath and API may each be nil.
type Input struct {
	// Node limits sessions and L2 ownership to one node; empty shows all.
	Node string
	// PinRoot is where Datapath was read.
	PinRoot  string
	Datapath *bpf.Snapshot
	API      *API
	// Now is the time uptimes are measured to.
	Now time.Time
	// Notes are passed through (e.g. why a source was not read).
	Notes []string
}

type portKey struct {
	port  uint16
	proto string
}

// Build joins the inputs into a Report.
func Build(in Input) Report {
	r := Report{Node: in.Node, Notes: slices.Clone(in.Notes), VIPs: []VIP{}, Sessions: []Session{}, L2: []L2Owner{}}
	vips := map[netip.Addr]*VIP{}
	ports := map[netip.Addr]map[portKey]*Port{}
	vipOf := func(a netip.Addr) *VIP {
		v := vips[a]
		if v == nil {
			v = &VIP{Address: a.String(), AnnouncedBy: []Announcer{}}
			vips[a] = v
			ports[a] = map[portKey]*Port{}
		}
		return v
	}
	portOf := func(a netip.Addr, k portKey) *Port {
		vipOf(a)
		p := ports[a][k]
		if p == nil {
			p = &Port{Port: k.port, Protocol: k.proto, Backends: []Backend{}}
			ports[a][k] = p
		}
		return p
	}

	if s := in.Datapath; s != nil {
		r.Sources.Datapath = in.PinRoot
		r.Datapath = datapathOf(s)
		for _, ss := range s.Services {
			v := vipOf(ss.Key.Addr)
			switch {
			case ss.Flags&bpf.ServiceLocal != 0:
				v.TrafficPolicy = "Local"
			case ss.Flags&bpf.ServiceCluster != 0:
				v.TrafficPolicy = "Cluster"
			}
			p := portOf(ss.Key.Addr, portKey{ss.Key.Port, ss.Key.Proto.String()})
			p.InDatapath = true
			p.Affinity = ss.Flags&bpf.ServiceAffinity != 0
			for _, sr := range ss.SourceRanges {
				p.SourceRanges = append(p.SourceRanges, sr.String())
			}
			p.Counters = countersOf(ss.Counters)
			p.Drops = Drops{NoBackend: ss.Counters.Drops, SourceRange: ss.Counters.Denied, Rejected: ss.Counters.Rejects}
			for _, b := range ss.Backends {
				st := "active"
				if b.Flags&bpf.BackendTerminating != 0 {
					st = "terminating"
				}
				p.Backends = append(p.Backends, Backend{
					Address: b.AddrPort().String(), State: st, InDatapath: true,
					Remote: b.Flags&bpf.BackendRemote != 0, Counters: countersOf(b.Counters),
				})
			}
		}
	}

	if a := in.API; a != nil {
		r.Sources.API = true
		r.Notes = append(r.Notes, joinAPI(a, in.Node, in.Now, vipOf, portOf, &r)...)
	}

	for _, a := range slices.SortedFunc(maps.Keys(vips), netip.Addr.Compare) {
		v := vips[a]
		for _, k := range slices.SortedFunc(maps.Keys(ports[a]), func(x, y portKey) int {
			return cmp.Or(cmp.Compare(x.port, y.port), cmp.Compare(x.proto, y.proto))
		}) {
			p := ports[a][k]
			slices.SortFunc(p.Backends, func(x, y Backend) int {
				return netip.MustParseAddrPort(x.Address).Compare(netip.MustParseAddrPort(y.Address))
			})
			v.Ports = append(v.Ports, *p)
		}
		if v.Ports == nil {
			v.Ports = []Port{}
		}
		r.VIPs = append(r.VIPs, *v)
	}
	return r
}

func datapathOf(s *bpf.Snapshot) *Datapath {
	e := s.Events
	return &Datapath{
		ConntrackEntries: s.Flows,
		Attached:         append([]string{}, s.Attached...),
		Events: map[string]uint64{
			"encap": e.Encap, "encapFail": e.EncapFail, "decap": e.Decap, "decapRefused": e.DecapRefused,
			"decapNoLocal": e.DecapNoLocal, "mssClamped": e.MSSClamped, "fragFirst": e.FragFirst,
			"fragHit": e.FragHit, "fragMiss": e.FragMiss, "icmpRelay": e.ICMPRelay,
			"icmpNoFlow": e.ICMPNoFlow, "echoReply": e.EchoReply,
		},
		Delivery: map[string]uint64{
			"peer": s.Delivery.Peer, "peerTC": s.Delivery.PeerTC, "redirect": s.Delivery.Redirect,
			"stack": s.Delivery.Stack, "spoofed": s.Delivery.Spoofed,
		},
		PodLinks: s.PodLinks,
	}
}

func countersOf(c bpf.Counters) Counters {
	return Counters{Packets: c.Packets, Bytes: c.Bytes, Flows: c.Flows, ConntrackMisses: c.CTMiss}
}

// joinAPI adds the API's view to the VIPs and fills sessions and L2. It
// returns notes about what it could not join.
func joinAPI(a *API, node string, now time.Time, vipOf func(netip.Addr) *VIP,
	portOf func(netip.Addr, portKey) *Port, r *Report) []string {
	var notes []string
	poolPtrs := make([]*v1alpha1.IPAddressPool, 0, len(a.Pools))
	for i := range a.Pools {
		poolPtrs = append(poolPtrs, &a.Pools[i])
	}
	pools, errs := crosscheck.NewPools(poolPtrs)
	for _, err := range errs {
		notes = append(notes, err.Error())
	}

	// Who announces what, from every speaker's status.
	bgpBy := map[string][]Announcer{} // service -> nodes with peers
	l2By := map[netip.Addr][]Announcer{}
	speakerKnown := map[string]bool{}
	for _, sp := range a.Speakers {
		n := cmp.Or(sp.Status.Node, sp.Name)
		speakerKnown[n] = true
		sent := map[string]int{}
		for _, an := range sp.Status.Announcements {
			bgpBy[an.Service] = append(bgpBy[an.Service], Announcer{Node: n, Peers: slices.Clone(an.Peers)})
			for _, p := range an.Peers {
				sent[p] += len(an.Prefixes)
			}
		}
		for _, o := range sp.Status.L2 {
			ip, err := netip.ParseAddr(o.IP)
			if err != nil {
				notes = append(notes, fmt.Sprintf("speakerstatus %s: l2 ip %q: %v", sp.Name, o.IP, err))
				continue
			}
			l2By[ip] = append(l2By[ip], Announcer{Node: n, L2Interfaces: slices.Clone(o.Interfaces)})
			if node == "" || node == n {
				r.L2 = append(r.L2, L2Owner{Address: ip.String(), Service: o.Service, Node: n, Interfaces: slices.Clone(o.Interfaces)})
			}
		}
		if node != "" && node != n {
			continue
		}
		for _, s := range sp.Status.Sessions {
			se := Session{Node: n, Peer: s.Peer, Address: s.Address, State: s.State, PrefixesSent: sent[s.Peer], BFD: s.BFD}
			if s.Since != nil {
				se.Since = s.Since.UTC().Format(time.RFC3339)
				if s.State == "established" && !now.IsZero() {
					se.UptimeSeconds = int64(now.Sub(s.Since.Time).Seconds())
				}
			}
			r.Sessions = append(r.Sessions, se)
		}
		if sp.Status.Truncated {
			notes = append(notes, fmt.Sprintf("speakerstatus %s: announcements truncated; announcers may be missing", sp.Name))
		}
		for _, e := range sp.Status.Errors {
			notes = append(notes, fmt.Sprintf("speaker %s reports: %s", n, e))
		}
	}
	if node != "" && !speakerKnown[node] {
		notes = append(notes, fmt.Sprintf("no SpeakerStatus %s: no speaker has reported for that node", node))
	}

	slicesOf := map[string][]*discoveryv1.EndpointSlice{}
	for i := range a.EndpointSlices {
		sl := &a.EndpointSlices[i]
		if name := sl.Labels[discoveryv1.LabelServiceName]; name != "" {
			k := sl.Namespace + "/" + name
			slicesOf[k] = append(slicesOf[k], sl)
		}
	}

	for i := range a.Services {
		svc := &a.Services[i]
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		name := svc.Namespace + "/" + svc.Name
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			ip, err := netip.ParseAddr(ing.IP)
			if err != nil {
				continue
			}
			ip = ip.Unmap()
			v := vipOf(ip)
			if v.Service != "" && v.Service != name {
				v.Service += "," + name // a shared IP
			} else {
				v.Service = name
			}
			if p := pools.Of(ip, v1alpha1.AllocatedFrom(svc.Annotations[v1alpha1.AnnotationAllocatedFrom], ip)); p != nil {
				v.Pool = p.Name
			} else if p := svc.Annotations["zerohop.io/address-pool"]; p != "" {
				v.Pool = p
			}
			v.TrafficPolicy = "Cluster"
			if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
				v.TrafficPolicy = "Local"
			}
			bgp := false
			for _, an := range bgpBy[name] {
				bgp = true
				v.AnnouncedBy = mergeAnnouncer(v.AnnouncedBy, an)
			}
			l2 := false
			for _, an := range l2By[ip] {
				l2 = true
				v.AnnouncedBy = mergeAnnouncer(v.AnnouncedBy, an)
			}
			v.Mode = modeOf(bgp, l2)
			for _, c := range svc.Status.Conditions {
				if strings.HasPrefix(c.Type, "zerohop.io/") {
					v.Conditions = append(v.Conditions, Condition{Service: name, Type: c.Type, Status: string(c.Status),
						Reason: c.Reason, Message: c.Message, Since: c.LastTransitionTime.UTC().Format(time.RFC3339)})
				}
			}
			for _, sp := range svc.Spec.Ports {
				proto := strings.ToLower(string(cmp.Or(sp.Protocol, corev1.ProtocolTCP)))
				p := portOf(ip, portKey{uint16(sp.Port), proto})
				addEndpoints(p, ip, sp, slicesOf[name])
			}
		}
	}
	// L2 owners of addresses no Service holds any more.
	for ip, ans := range l2By {
		v := vipOf(ip)
		if v.Mode != "" {
			continue
		}
		for _, an := range ans {
			v.AnnouncedBy = mergeAnnouncer(v.AnnouncedBy, an)
		}
		v.Mode = "L2"
		if p := pools.Of(ip, ""); p != nil {
			v.Pool = p.Name
		}
	}
	slices.SortFunc(r.Sessions, func(x, y Session) int { return cmp.Or(cmp.Compare(x.Node, y.Node), cmp.Compare(x.Peer, y.Peer)) })
	slices.SortFunc(r.L2, func(x, y L2Owner) int {
		return cmp.Or(netip.MustParseAddr(x.Address).Compare(netip.MustParseAddr(y.Address)), cmp.Compare(x.Node, y.Node))
	})
	return notes
}

func modeOf(bgp, l2 bool) string {
	switch {
	case bgp && l2:
		return "BGP+L2"
	case bgp:
		return "BGP"
	case l2:
		return "L2"
	}
	return "none"
}

// mergeAnnouncer adds an to list, merging with the same node's entry and
// keeping the list sorted by node.
func mergeAnnouncer(list []Announcer, an Announcer) []Announcer {
	i, found := slices.BinarySearchFunc(list, an.Node, func(x Announcer, n string) int { return cmp.Compare(x.Node, n) })
	if !found {
		return slices.Insert(list, i, an)
	}
	cur := &list[i]
	cur.Peers = sortedUnion(cur.Peers, an.Peers)
	cur.L2Interfaces = sortedUnion(cur.L2Interfaces, an.L2Interfaces)
	return list
}

func sortedUnion(a, b []string) []string {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

// addEndpoints joins the EndpointSlices of the Service port sp into p: the
// backends the datapath holds get their Pod, node and state, and the
// endpoints it does not hold (other nodes' Pods in Local mode, not-ready
// ones) are listed with InDatapath false.
func addEndpoints(p *Port, vip netip.Addr, sp corev1.ServicePort, sls []*discoveryv1.EndpointSlice) {
	want := discoveryv1.AddressTypeIPv4
	if vip.Is6() {
		want = discoveryv1.AddressTypeIPv6
	}
	for _, sl := range sls {
		if sl.AddressType != want {
			continue
		}
		var port int32 = -1
		for _, ep := range sl.Ports {
			if ep.Port == nil {
				continue
			}
			if ptrString(ep.Name) == sp.Name && cmp.Or(ptrProto(ep.Protocol), corev1.ProtocolTCP) == cmp.Or(sp.Protocol, corev1.ProtocolTCP) {
				port = *ep.Port
			}
		}
		if port < 0 {
			continue
		}
		for _, ep := range sl.Endpoints {
			st := endpointState(ep.Conditions)
			for _, a := range ep.Addresses {
				ip, err := netip.ParseAddr(a)
				if err != nil {
					continue
				}
				ap := netip.AddrPortFrom(ip.Unmap(), uint16(port)).String()
				b := findBackend(p, ap)
				if b == nil {
					p.Backends = append(p.Backends, Backend{Address: ap})
					b = &p.Backends[len(p.Backends)-1]
				}
				b.State = st
				b.Node = ptrString(ep.NodeName)
				if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
					b.Pod = ep.TargetRef.Name
				}
			}
		}
	}
}

func findBackend(p *Port, addr string) *Backend {
	for i := range p.Backends {
		if p.Backends[i].Address == addr {
			return &p.Backends[i]
		}
	}
	return nil
}

func endpointState(c discoveryv1.EndpointConditions) string {
	switch {
	case c.Terminating != nil && *c.Terminating:
		return "terminating"
	case c.Ready == nil || *c.Ready:
		return "ready"
	}
	return "not-ready"
}

func ptrString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func ptrProto(p *corev1.Protocol) corev1.Protocol {
	if p == nil {
		return ""
	}
	return *p
}

// FormatUptime renders seconds as the largest two units (3d4h, 5m12s).
func FormatUptime(s int64) string {
	d := time.Duration(s) * time.Second
	switch {
	case d >= 24*time.Hour:
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d" + strconv.FormatInt(int64(d%(24*time.Hour)/time.Hour), 10) + "h"
	case d >= time.Hour:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h" + strconv.FormatInt(int64(d%time.Hour/time.Minute), 10) + "m"
	case d >= time.Minute:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m" + strconv.FormatInt(int64(d%time.Minute/time.Second), 10) + "s"
	}
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}
