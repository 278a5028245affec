package ipam

import (
	"fmt"
	"net/netip"
	"testing"
)

// FuzzParseRange checks that whatever parses is a well-formed range whose
// printed form parses back to the same range.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"192.0.2.0/24", "2001:db8::/64", "192.0.2.1-192.0.2.9", "2001:db8::1-2001:db8::2", "1.2.3.4/32", "::/0", "a-b", "-", "/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRange(s)
		if err != nil {
			return
		}
		if !r.First.IsValid() || !r.Last.IsValid() || r.First.BitLen() != r.Last.BitLen() || r.Last.Less(r.First) {
			t.Fatalf("%q parsed to malformed %v", s, r)
		}
		if !r.Contains(r.First) || !r.Contains(r.Last) {
			t.Fatalf("%q: range does not contain its ends", s)
		}
		back, err := ParseRange(r.First.String() + "-" + r.Last.String())
		if err != nil || back != r {
			t.Fatalf("%q: round trip %v -> %v (%v)", s, r, back, err)
		}
	})
}

// FuzzAllocator drives the allocator with a random script of operations on
// small pools and checks after every step that no IP is held by two
// Services that may not share it, that indexes and counts agree, and that a
// released IP can be allocated again.
func FuzzAllocator(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	f.Add([]byte{7, 7, 7, 7, 200, 201, 202, 203, 17, 33, 65, 129})
	f.Fuzz(runScript)
}

func runScript(t *testing.T, script []byte) {
	{
		if len(script) > 200 {
			script = script[:200]
		}
		pools := [][]PoolSpec{
			{
				mustPool(t, "a", true, 1, "192.0.2.0/30", "2001:db8::/126"),
				mustPool(t, "b", true, 0, "192.0.2.2-192.0.2.5"),
			},
			{
				mustPool(t, "a", true, 0, "192.0.2.4/30"),
				{Name: "c", AutoAssign: false, AvoidBuggyIPs: true, Ranges: []Range{mustRange("192.0.2.254-192.0.3.1"), mustRange("2001:db8::2-2001:db8::5")}},
			},
		}
		a := New()
		a.SetPools(pools[0])
		keys := []string{"", "k1", "k2"}
		portsets := [][]Port{{{80, "TCP"}}, {{443, "TCP"}}, {{80, "TCP"}, {53, "UDP"}}}
		famsets := [][]Family{{IPv4}, {IPv6}, {IPv4, IPv6}, {IPv6, IPv4}}
		for i := 0; i+1 < len(script); i += 2 {
			op, arg := script[i], script[i+1]
			svc := fmt.Sprintf("ns/s%d", arg%8)
			switch op % 8 {
			case 0:
				held := a.IPs(svc)
				a.Release(svc)
				for _, ip := range held {
					if e := a.ips[ip]; e != nil && e.holders[svc] != nil {
						t.Fatalf("%s still holds %s after release", svc, ip)
					}
					// A freed address that nobody else holds must be
					// allocatable again by request.
					if len(a.Holders(ip)) == 0 && a.PoolOf(ip) != "" {
						probe := Request{Service: "ns/probe", Families: []Family{FamilyOf(ip)}, RequestedIPs: []netip.Addr{ip}}
						r := a.Ensure(probe)
						if len(r.IPs) != 1 || r.IPs[0] != ip {
							// avoidBuggyIPs or a pool that no longer holds it may refuse.
							if !isBuggy(ip) {
								t.Fatalf("released %s not re-allocatable: %+v", ip, r.Notes)
							}
						}
						a.Release("ns/probe")
					}
				}
			case 1:
				a.SetPools(pools[int(arg)%2])
			default:
				req := Request{
					Service:    svc,
					Families:   famsets[int(arg>>3)%len(famsets)],
					RequireAll: arg&0x20 != 0,
					Sharing:    Sharing{Key: keys[int(op>>3)%3], Ports: portsets[int(op>>5)%3], Local: op&0x80 != 0, Selector: "app=x"},
				}
				switch op % 8 {
				case 3:
					req.Pool = "c"
				case 4:
					req.RequestedIPs = []netip.Addr{netip.AddrFrom4([4]byte{192, 0, 2, arg % 8})}
					req.Families = []Family{IPv4}
				}
				before := a.IPs(svc)
				res := a.Ensure(req)
				for _, ip := range res.IPs {
					if !containsFamily(req.Families, FamilyOf(ip)) {
						t.Fatalf("%s got %s outside its families %v", svc, ip, req.Families)
					}
				}
				// An address held before and still wanted without a
				// specific request must survive the call.
				if req.Pool == "" && len(req.RequestedIPs) == 0 {
					for _, ip := range before {
						if containsFamily(req.Families, FamilyOf(ip)) && !contains(res.IPs, ip) && !hasReason(res, ReasonSharingBroken) {
							t.Fatalf("%s lost %s on a no-op request: %+v", svc, ip, res)
						}
					}
				}
			}
			checkInvariants(t, a)
		}
	}
}

func mustRange(s string) Range {
	r, err := ParseRange(s)
	if err != nil {
		panic(err)
	}
	return r
}

func containsFamily(fs []Family, f Family) bool {
	for _, x := range fs {
		if x == f {
			return true
		}
	}
	return false
}

func contains(ips []netip.Addr, ip netip.Addr) bool {
	for _, x := range ips {
		if x == ip {
			return true
		}
	}
	return false
}
