package bpf

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// How a Pod's interface takes balanced packets (zerohop.h, ZH_POD_*).
const (
	podPeer = 1
	podXDP  = 2
)

// PodLinks are the interfaces through which this node's Pods take the
// packets XDP balances to them without the node's routing and netfilter.
// A packet to a local backend whose next hop (bpf_fib_lookup) is one of
// them leaves XDP marked, and tc ingress on the uplink sends it into the
// Pod's namespace with bpf_redirect_peer; to any other interface, or with
// no resolved neighbour yet, it goes through the node's stack, counted
// (Delivery.Stack).
type PodLinks struct {
	// Peers are host-side Pod interfaces: veth or netkit devices whose
	// other end is in another network namespace (bpf_redirect_peer
	// refuses anything else, and the kernel would drop the packet).
	Peers []PodLink
	// Bridged are Pods behind a bridge (the Flannel style: cni0 routes
	// the Pod range, each Pod's veth is a port): the lookup names the
	// bridge and the Pod's MAC, the bridge's forwarding database the
	// port, which must be one of Peers.
	Bridged []BridgedPod
}

// PodLink is one Pod's host-side interface.
type PodLink struct {
	Ifindex int
	// HostMAC is the source of the frames into the Pod: the interface's
	// own, or the bridge's for a bridge port (the Pod's gateway).
	// PodMAC is the Pod's, when known (else the frame keeps the
	// uplink's as its destination; the Pod's stack does not read it).
	HostMAC, PodMAC net.HardwareAddr
}

// BridgedPod is one Pod MAC behind a bridge port.
type BridgedPod struct {
	Bridge int
	MAC    net.HardwareAddr
	Port   int
}

func fdbKey(b BridgedPod) (zhFdbKey, error) {
	k := zhFdbKey{Ifindex: uint32(b.Bridge)}
	if len(b.MAC) != 6 {
		return k, fmt.Errorf("bridge %d: MAC %q is not 6 bytes", b.Bridge, b.MAC)
	}
	copy(k.Mac[:], b.MAC)
	return k, nil
}

func podSlot(l PodLink) (zhPodSlot, error) {
	v := zhPodSlot{Ifindex: uint32(l.Ifindex)}
	if len(l.HostMAC) != 6 || (len(l.PodMAC) != 0 && len(l.PodMAC) != 6) {
		return v, fmt.Errorf("pod link %d: MACs %q, %q are not 6 bytes", l.Ifindex, l.HostMAC, l.PodMAC)
	}
	copy(v.HostMac[:], l.HostMAC)
	copy(v.PodMac[:], l.PodMAC)
	return v, nil
}

// SetPodLinks makes links the set of Pod interfaces packets are delivered
// to directly, replacing the previous set; interfaces EnableRedirect
// marked keep their XDP redirect. Every Pod link also gets zh_tc_pod on
// its tcx ingress (a link pinned as link_tc_pod_<ifindex>), which sends
// the Pods' replies of balanced flows out of the uplink without the
// node's stack; links of interfaces that are no Pod link any more go. A link's slot (what XDP's mark names) is
// written before the link, and the bridge entries that point to a link
// after it; removals go the other way, so no entry ever names a link or a
// slot that is not in place. A freed slot is reused last.
func (d *Datapath) SetPodLinks(links PodLinks) error {
	want := map[uint32]zhPodSlot{}
	for _, l := range links.Peers {
		if l.Ifindex <= 0 {
			return fmt.Errorf("pod link: ifindex %d", l.Ifindex)
		}
		v, err := podSlot(l)
		if err != nil {
			return err
		}
		want[uint32(l.Ifindex)] = v
	}
	wantFDB := map[zhFdbKey]uint32{}
	for _, b := range links.Bridged {
		k, err := fdbKey(b)
		if err != nil {
			return fmt.Errorf("pod link: %w", err)
		}
		if _, ok := want[uint32(b.Port)]; !ok {
			return fmt.Errorf("pod link: %s behind bridge %d at port %d, which is not among the Pod links", b.MAC, b.Bridge, b.Port)
		}
		wantFDB[k] = uint32(b.Port)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	have := map[uint32]zhPodLink{}
	used := map[uint32]bool{}
	var ifindex uint32
	var pl zhPodLink
	it := d.objs.PodLinks.Iterate()
	for it.Next(&ifindex, &pl) {
		have[ifindex] = pl
		if pl.How == podPeer {
			used[pl.Slot] = true
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("pod links: %w", err)
	}
	haveFDB := map[zhFdbKey]uint32{}
	var fk zhFdbKey
	var port uint32
	fit := d.objs.PodFdb.Iterate()
	for fit.Next(&fk, &port) {
		haveFDB[fk] = port
	}
	if err := fit.Err(); err != nil {
		return fmt.Errorf("pod links: bridge ports: %w", err)
	}

	var errs []error
	slots := d.objs.PodSlots.MaxEntries()
	for _, idx := range sortedKeys(want) {
		h, ok := have[idx]
		if ok && h.How != podPeer {
			continue // marked by EnableRedirect
		}
		slot := h.Slot
		if !ok {
			var free bool
			for range slots {
				slot, d.nextSlot = d.nextSlot, (d.nextSlot+1)%slots
				if !used[slot] {
					free = true
					break
				}
			}
			if !free {
				errs = append(errs, fmt.Errorf("pod link %d: all %d slots in use", idx, slots))
				continue
			}
			used[slot] = true
		}
		var cur zhPodSlot
		if err := d.objs.PodSlots.Lookup(slot, &cur); err != nil || cur != want[idx] {
			if err := d.objs.PodSlots.Put(slot, want[idx]); err != nil {
				errs = append(errs, fmt.Errorf("pod link %d: %w", idx, err))
				continue
			}
		}
		if !ok {
			if err := d.objs.PodLinks.Put(idx, zhPodLink{How: podPeer, Slot: slot}); err != nil {
				errs = append(errs, fmt.Errorf("pod link %d: %w", idx, err))
			}
		}
	}
	for k, p := range wantFDB {
		if haveFDB[k] == p {
			continue
		}
		if err := d.objs.PodFdb.Put(k, p); err != nil {
			errs = append(errs, fmt.Errorf("pod %s behind bridge %d: %w", net.HardwareAddr(k.Mac[:]), k.Ifindex, err))
		}
	}
	for k := range haveFDB {
		if _, ok := wantFDB[k]; ok {
			continue
		}
		if err := d.objs.PodFdb.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("pod %s behind bridge %d: %w", net.HardwareAddr(k.Mac[:]), k.Ifindex, err))
		}
	}
	for idx, h := range have {
		if _, ok := want[idx]; ok || h.How != podPeer {
			continue
		}
		if err := d.objs.PodLinks.Delete(idx); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("pod link %d: %w", idx, err))
			continue
		}
		if err := d.objs.PodSlots.Put(h.Slot, zhPodSlot{}); err != nil {
			errs = append(errs, fmt.Errorf("pod link %d: slot %d: %w", idx, h.Slot, err))
		}
	}
	errs = append(errs, d.replyLinks(want)...)
	return errors.Join(errs...)
}

// replyLinks attaches zh_tc_pod to every Pod link of want that lacks it
// and detaches it from every other interface. Called with d.mu.
func (d *Datapath) replyLinks(want map[uint32]zhPodSlot) []error {
	if d.opts.noPin {
		return nil
	}
	var errs []error
	for _, idx := range sortedKeys(want) {
		name := fmt.Sprintf("pod%d", idx)
		if err := d.attachOne(name, int(idx), "tc", d.objs.ZhTcPod, func() (link.Link, error) {
			return link.AttachTCX(link.TCXOptions{Program: d.objs.ZhTcPod, Interface: int(idx), Attach: ebpf.AttachTCXIngress})
		}); err != nil {
			errs = append(errs, fmt.Errorf("pod link %d: %w", idx, err))
		}
	}
	ents, err := os.ReadDir(d.opts.PinRoot)
	if err != nil {
		return append(errs, fmt.Errorf("pod links: %w", err))
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), "link_tc_pod")
		if !ok {
			continue
		}
		idx, err := strconv.ParseUint(rest, 10, 32)
		if err != nil {
			continue
		}
		if _, ok := want[uint32(idx)]; ok {
			continue
		}
		if err := os.Remove(filepath.Join(d.opts.PinRoot, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("pod link %d: unpin: %w", idx, err))
		}
	}
	return errs
}

func sortedKeys[V any](m map[uint32]V) []uint32 {
	out := make([]uint32, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Delivery counts how the packets to this node's own Pods left the uplink.
type Delivery struct {
	// Peer: rewritten in XDP and handed to tc ingress, which sends it
	// into the Pod (bpf_redirect_peer). PeerTC: what tc sent, each
	// segment of a packet GRO merged counted; it falls short of Peer only
	// when tc ingress is missing.
	Peer, PeerTC uint64
	// Redirect: rewritten and redirected as an XDP frame into the Pod's
	// interface (EnableRedirect).
	Redirect uint64
	// Stack: rewritten and passed to the node's routing: no neighbour
	// for the Pod yet, TTL at its end, a VLAN tag, or an interface that
	// is not a Pod link.
	Stack uint64
	// Spoofed: frames that arrived carrying the mark XDP gives the
	// frames tc sends into Pods; dropped.
	Spoofed uint64
	// ReplyTC: the Pods' replies that tc on a Pod link sent out of the
	// uplink, rewritten, without the node's stack (segments of a GSO
	// packet each).
	ReplyTC uint64
}

// Delivery returns the node-wide delivery counters.
func (d *Datapath) Delivery() (Delivery, error) {
	return readDelivery(d.objs.Delivery)
}

func readDelivery(m *ebpf.Map) (Delivery, error) {
	var per []zhDeliveryCounts
	if err := m.Lookup(uint32(0), &per); err != nil {
		return Delivery{}, fmt.Errorf("delivery: %w", err)
	}
	var out Delivery
	for _, p := range per {
		out.Peer += p.Peer
		out.PeerTC += p.PeerTc
		out.Redirect += p.Redirect
		out.Stack += p.Stack
		out.Spoofed += p.Spoofed
		out.ReplyTC += p.ReplyTc
	}
	return out, nil
}
