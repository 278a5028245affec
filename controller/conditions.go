package controller

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zerohop/zerohop/config/v1alpha1"
)

// Conditions zerohop writes on the Services it serves, next to
// ConditionOutsidePool. They are namespaced so they never meet kube's own
// or another load balancer's.
const (
	// ConditionAddressAssigned: the Service holds its addresses, and from
	// which pools; False with the refusal's reason when it waits.
	ConditionAddressAssigned = "zerohop.io/AddressAssigned"
	// ConditionAnnounced: every address of the Service is announced by at
	// least one ready node, by BGP to a peer whose session is established
	// or by L2; the message names the nodes and peers.
	ConditionAnnounced = "zerohop.io/Announced"
	// ConditionDatapathProgrammed: the Service's XDP entries are in place
	// on every ready node that runs the datapath ("on N of M nodes").
	ConditionDatapathProgrammed = "zerohop.io/DatapathProgrammed"
)

// Reasons of the conditions above (AddressAssigned's False reasons are the
// allocator's refusal reasons, as in its Events).
const (
	ReasonAssigned        = "Assigned"
	ReasonPending         = "Pending"
	ReasonAnnounced       = "Announced"
	ReasonPartlyAnnounced = "PartlyAnnounced"
	ReasonNotAnnounced    = "NotAnnounced"
	ReasonProgrammed      = "Programmed"
	ReasonNotProgrammed   = "NotProgrammed"
)

// speakerView is one node's SpeakerStatus as the conditions need it.
type speakerView struct {
	node  string
	ready bool // the Node exists and is Ready
	st    *v1alpha1.SpeakerStatusStatus
}

// serviceView is what the Announced and DatapathProgrammed conditions are
// computed from: a pure function of the Service's addresses and the
// speakers' reports, so that every case is a table test.
type serviceView struct {
	name     string // namespace/name
	ips      []netip.Addr
	speakers []speakerView
}

// announcer is one node's part in attracting an address.
type announcer struct {
	node     string
	peers    []string // established sessions the path goes to
	idle     []string // selected peers whose session is not established
	l2Ifaces []string
}

// announcedCondition says who attracts each address of the Service, and
// returns how many nodes announce each address (for the metric).
func (v serviceView) announcedCondition() (metav1.Condition, map[netip.Addr]int) {
	per := map[netip.Addr][]announcer{}
	for _, sp := range v.speakers {
		if !sp.ready || sp.st == nil {
			continue
		}
		states := map[string]string{}
		for _, s := range sp.st.Sessions {
			states[s.Peer] = s.State
		}
		// The speaker writes its announcements sorted by Service.
		if i, ok := slices.BinarySearchFunc(sp.st.Announcements, v.name, func(a v1alpha1.ServiceAnnouncement, n string) int {
			return cmp.Compare(a.Service, n)
		}); ok {
			a := sp.st.Announcements[i]
			an := announcer{node: sp.node}
			for _, p := range a.Peers {
				if states[p] == "established" {
					an.peers = append(an.peers, p)
				} else {
					an.idle = append(an.idle, fmt.Sprintf("%s (%s)", p, cmp.Or(states[p], "no session")))
				}
			}
			for _, ip := range v.ips {
				if coversAny(a.Prefixes, ip) {
					per[ip] = append(per[ip], an)
				}
			}
		}
		for _, o := range sp.st.L2 {
			ip, err := netip.ParseAddr(o.IP)
			if err != nil || !slices.Contains(v.ips, ip.Unmap()) {
				continue
			}
			per[ip.Unmap()] = append(per[ip.Unmap()], announcer{node: sp.node, l2Ifaces: o.Interfaces})
		}
	}
	counts := map[netip.Addr]int{}
	var parts, missing []string
	// Addresses announced alike are described once.
	byText := map[string][]string{}
	for _, ip := range v.ips {
		text, n := describeAnnouncers(per[ip])
		counts[ip] = n
		if n == 0 {
			missing = append(missing, ip.String())
			if text != "" {
				parts = append(parts, fmt.Sprintf("%s: %s", ip, text))
			}
			continue
		}
		byText[text] = append(byText[text], ip.String())
	}
	for _, text := range slices.Sorted(maps.Keys(byText)) {
		parts = append(parts, fmt.Sprintf("%s by %s", strings.Join(byText[text], ", "), text))
	}
	c := metav1.Condition{Type: ConditionAnnounced, Status: metav1.ConditionTrue, Reason: ReasonAnnounced}
	switch {
	case len(missing) == len(v.ips):
		c.Status, c.Reason = metav1.ConditionFalse, ReasonNotAnnounced
	case len(missing) > 0:
		c.Status, c.Reason = metav1.ConditionFalse, ReasonPartlyAnnounced
	}
	if len(missing) > 0 {
		parts = append([]string{"no ready node announces " + strings.Join(missing, ", ")}, parts...)
	}
	c.Message = strings.Join(parts, "; ")
	return c, counts
}

// describeAnnouncers renders the nodes attracting one address, sorted by
// node, and counts those that do (an L2 owner, or a BGP path to at least
// one established session). Nodes whose paths reach no established
// session are named too, since that is what an operator looks for.
func describeAnnouncers(ans []announcer) (string, int) {
	slices.SortFunc(ans, func(a, b announcer) int { return cmp.Compare(a.node, b.node) })
	var good, idle []string
	for _, a := range ans {
		switch {
		case len(a.l2Ifaces) > 0:
			good = append(good, fmt.Sprintf("%s (L2 on %s)", a.node, strings.Join(a.l2Ifaces, ",")))
		case len(a.peers) > 0:
			s := fmt.Sprintf("%s (BGP to %s", a.node, strings.Join(a.peers, ", "))
			if len(a.idle) > 0 {
				s += "; not to " + strings.Join(a.idle, ", ")
			}
			good = append(good, s+")")
		default:
			idle = append(idle, fmt.Sprintf("%s (no established session: %s)", a.node, strings.Join(a.idle, ", ")))
		}
	}
	text := strings.Join(good, ", ")
	if len(idle) > 0 {
		if text != "" {
			text += "; "
		}
		text += "sent but not accepted from " + strings.Join(idle, ", ")
	}
	return text, len(good)
}

// coversAny reports whether one of the prefixes (as SpeakerStatus writes
// them) contains ip: a node may announce an aggregate.
func coversAny(prefixes []string, ip netip.Addr) bool {
	for _, s := range prefixes {
		if p, err := netip.ParsePrefix(s); err == nil && p.Contains(ip) {
			return true
		}
	}
	return false
}

// datapathCondition counts the ready nodes whose datapath holds every
// entry of the Service. ok is false when no ready node runs a datapath:
// the condition then does not apply.
func (v serviceView) datapathCondition() (c metav1.Condition, ok bool) {
	var total, programmed int
	var behind []string
	for _, sp := range v.speakers {
		if !sp.ready || sp.st == nil || sp.st.Datapath == nil {
			continue
		}
		total++
		d := sp.st.Datapath
		if _, ok := slices.BinarySearch(d.Programmed, v.name); ok { // sorted by the speaker
			programmed++
			continue
		}
		why := "not yet"
		if i := slices.IndexFunc(d.Failed, func(f v1alpha1.DatapathFailure) bool { return f.Service == v.name }); i >= 0 {
			why = cmp.Or(d.Failed[i].Reason, "entries not written")
		} else if d.Truncated {
			why = "not listed (the node's list is truncated)"
		}
		behind = append(behind, fmt.Sprintf("%s: %s", sp.node, why))
	}
	if total == 0 {
		return c, false
	}
	c = metav1.Condition{Type: ConditionDatapathProgrammed, Status: metav1.ConditionTrue, Reason: ReasonProgrammed,
		Message: fmt.Sprintf("programmed on %d of %d nodes", programmed, total)}
	if programmed < total {
		c.Status, c.Reason = metav1.ConditionFalse, ReasonNotProgrammed
		slices.Sort(behind)
		c.Message += "; " + strings.Join(behind, "; ")
	}
	return c, true
}

// assignedCondition describes the addresses a Service holds and their
// pools, or why it holds none.
func assignedCondition(ips []netip.Addr, pools []string, satisfied bool, refusal *ipamNote) metav1.Condition {
	if len(ips) == 0 {
		c := metav1.Condition{Type: ConditionAddressAssigned, Status: metav1.ConditionFalse, Reason: ReasonPending,
			Message: "waiting for an address"}
		if refusal != nil {
			c.Reason, c.Message = refusal.reason, refusal.message
		}
		return c
	}
	var parts []string
	for i, ip := range ips {
		pool := ""
		if i < len(pools) {
			pool = pools[i]
		}
		if pool == "" {
			parts = append(parts, fmt.Sprintf("%s (in no pool)", ip))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s from pool %s", ip, pool))
	}
	msg := strings.Join(parts, ", ")
	if !satisfied && refusal != nil {
		msg += "; " + refusal.message
	}
	return metav1.Condition{Type: ConditionAddressAssigned, Status: metav1.ConditionTrue, Reason: ReasonAssigned, Message: msg}
}

// ipamNote is the refusal assignedCondition reports.
type ipamNote struct{ reason, message string }

// nodeReady reports whether a Node's Ready condition is True.
func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
