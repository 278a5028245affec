package bgp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/go-logr/logr"
	"github.com/mdlayher/ndp"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv6"
)

// raInterval is how often a Router Advertisement goes out on the
// interface of an unnumbered session, as FRR sends them for its own.
const raInterval = 10 * time.Second

// LinkLocalNeighbor finds the router of an unnumbered session: the one
// IPv6 link-local neighbour the node knows on ifname (learnt from the
// router's Router Advertisements or Neighbor Solicitations), with ifname
// as its zone. A link with no such neighbour yet, or with several (not a
// point-to-point link), is an error.
func LinkLocalNeighbor(ifname string) (netip.Addr, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("interface %s: %w", ifname, err)
	}
	own := map[netip.Addr]bool{}
	if addrs, err := ifi.Addrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					own[ip.Unmap()] = true
				}
			}
		}
	}
	neighs, err := netlink.NeighList(ifi.Index, netlink.FAMILY_V6)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("interface %s: neighbours: %w", ifname, err)
	}
	var found []netip.Addr
	for _, n := range neighs {
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok || !ip.IsLinkLocalUnicast() || own[ip] || n.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE) != 0 {
			continue
		}
		found = append(found, ip)
	}
	switch len(found) {
	case 0:
		return netip.Addr{}, fmt.Errorf("interface %s: no IPv6 link-local neighbour yet (the router must run BGP unnumbered on its end, which sends Router Advertisements)", ifname)
	case 1:
		return found[0].WithZone(ifname), nil
	}
	return netip.Addr{}, fmt.Errorf("interface %s: %d IPv6 link-local neighbours %v; an unnumbered session needs a point-to-point link with one", ifname, len(found), found)
}

// advertiser sends Router Advertisements on one interface, so that the
// router learns this node's link-local address: FRR accepts an unnumbered
// session only from a neighbour it learnt that way. The advertisements say
// this node is no default router (lifetime 0) and carry no prefixes.
type advertiser struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func startAdvertiser(ifname string, log logr.Logger) *advertiser {
	ctx, cancel := context.WithCancel(context.Background())
	a := &advertiser{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(a.done)
		var c *ndp.Conn
		defer func() {
			if c != nil {
				_ = c.Close()
			}
		}()
		var lastErr string
		t := time.NewTicker(raInterval)
		defer t.Stop()
		for {
			err := func() error {
				if c == nil {
					var err error
					if c, err = advertiserConn(ifname); err != nil {
						return err
					}
				}
				if err := c.WriteTo(routerAdvertisement(ifname), nil, netip.IPv6LinkLocalAllNodes()); err != nil {
					_ = c.Close()
					c = nil
					return err
				}
				return nil
			}()
			if msg := fmt.Sprint(err); err != nil && msg != lastErr {
				log.Error(err, "router advertisement for an unnumbered session", "interface", ifname)
			}
			lastErr = fmt.Sprint(err)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return a
}

func (a *advertiser) stop() {
	a.cancel()
	<-a.done
}

// advertiserConn opens the ICMPv6 socket, from the interface's link-local
// address; it reads nothing, so every type is filtered out.
func advertiserConn(ifname string) (*ndp.Conn, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", ifname, err)
	}
	c, _, err := ndp.Listen(ifi, ndp.LinkLocal)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", ifname, err)
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	if err := c.SetICMPFilter(&f); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("interface %s: %w", ifname, err)
	}
	return c, nil
}

func routerAdvertisement(ifname string) *ndp.RouterAdvertisement {
	ra := &ndp.RouterAdvertisement{RouterLifetime: 0}
	if ifi, err := net.InterfaceByName(ifname); err == nil && len(ifi.HardwareAddr) > 0 {
		ra.Options = append(ra.Options, &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ifi.HardwareAddr})
	}
	return ra
}
