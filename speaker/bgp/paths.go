package bgp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/go-logr/logr"
	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/log"
	"google.golang.org/protobuf/types/known/anypb"
)

const (
	policyName       = "zerohop-export"
	importPolicyName = "zerohop-import"
)

// importPolicy keeps the paths this speaker originates and drops what
// routers send: a speaker has no use for them, and they would cost memory.
// (GoBGP runs the global import policy on local paths too.)
func importPolicy() *api.Policy {
	return &api.Policy{Name: importPolicyName, Statements: []*api.Statement{{
		Name:       "zerohop-local",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ACCEPT},
	}}}
}

// BandwidthPerEndpoint is the link bandwidth, in bytes per second, that
// one ready endpoint stands for in the Link Bandwidth extended community.
// Routers only use the ratios; 1 Gbit/s per endpoint keeps the values
// well inside FRR's Mbit/s arithmetic.
const BandwidthPerEndpoint = 125_000_000

// attrSet is what a peer's export statement adds to a path.
type attrSet struct {
	communities []string
	large       []string
	localPref   uint32
}

func (a attrSet) key() string {
	return strings.Join(a.communities, ",") + "|" + strings.Join(a.large, ",") + "|" + strconv.FormatUint(uint64(a.localPref), 10)
}

func attrsOf(p Path) attrSet {
	var a attrSet
	for _, c := range p.Communities {
		a.communities = append(a.communities, fmt.Sprintf("%d:%d", c>>16, c&0xffff))
	}
	for _, c := range p.LargeCommunities {
		a.large = append(a.large, fmt.Sprintf("%d:%d:%d", c.GlobalAdmin, c.LocalData1, c.LocalData2))
	}
	a.localPref = p.LocalPref
	return a
}

// SetPaths makes the paths each peer receives those given, keyed by peer
// address. Peers not configured with SetPeers are ignored. A path whose
// attributes or peers did not change is not touched; a peer that receives
// a path in the RIB with new attributes (or for the first time) gets its
// table again, without a session reset.
func (s *Server) SetPaths(ctx context.Context, paths map[netip.Addr][]Path) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.setPaths(ctx, paths)
}

func (s *Server) setPaths(ctx context.Context, paths map[netip.Addr][]Path) error {
	// What every peer should get, and what the RIB should hold.
	desired := map[netip.Addr]map[netip.Prefix]string{}
	rib := map[netip.Prefix]uint32{}
	newAttrs := map[string]attrSet{}
	for addr, list := range paths {
		addr = addr.Unmap()
		if _, ok := s.peers[addr]; !ok {
			continue
		}
		m := map[netip.Prefix]string{}
		for _, p := range list {
			a := attrsOf(p)
			k := a.key()
			newAttrs[k] = a
			m[p.Prefix] = k
			rib[p.Prefix] = max(rib[p.Prefix], p.Weight)
		}
		desired[addr] = m
	}

	// Compare with the policy in force, for prefixes that will be in the
	// RIB. Prefixes leaving the RIB keep their (now idle) statements until
	// the next policy rebuild: a Service going unready and back then costs
	// no policy change at all.
	policyChanged := false
	shrink := map[netip.Prefix]bool{} // some peer must stop receiving it
	// resend are the peers that must get a path already in the RIB with
	// other attributes, or for the first time. GoBGP sends nothing when
	// the export policy changes, nor when a path is added again unchanged:
	// these peers get their table again (a soft reset out, no session
	// reset), which carries the new attributes.
	resend := map[netip.Addr]bool{}
	for prefix := range rib {
		_, inRIB := s.rib[prefix]
		for addr := range s.peers {
			want, wok := desired[addr][prefix]
			have, hok := s.applied[addr][prefix]
			if wok == hok && want == have {
				continue
			}
			policyChanged = true
			if hok && !wok {
				shrink[prefix] = true
			}
			if wok && inRIB {
				resend[addr] = true
			}
		}
	}
	for addr := range s.applied {
		if _, ok := s.peers[addr]; !ok {
			policyChanged = true // a removed peer's statements go
		}
	}

	var errs []error
	// GoBGP does not withdraw a path from a peer whose export policy
	// changed to reject it, so such paths leave the RIB under the old
	// policy first and come back under the new one.
	for prefix := range shrink {
		if _, in := s.rib[prefix]; !in {
			continue
		}
		if err := s.deletePath(ctx, prefix); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(s.rib, prefix)
	}
	if policyChanged {
		applied := map[netip.Addr]map[netip.Prefix]string{}
		for addr := range s.peers {
			m := map[netip.Prefix]string{}
			for prefix, k := range desired[addr] {
				m[prefix] = k
			}
			applied[addr] = m
		}
		if err := s.setPolicy(ctx, applied, newAttrs); err != nil {
			errs = append(errs, err)
			resend = nil
		} else {
			s.applied = applied
			s.attrs = newAttrs
		}
	}
	for prefix, w := range rib {
		if old, in := s.rib[prefix]; in && old == w {
			continue
		}
		if err := s.addPath(ctx, prefix, w); err != nil {
			errs = append(errs, err)
			continue
		}
		s.rib[prefix] = w
	}
	for prefix := range s.rib {
		if _, ok := rib[prefix]; ok {
			continue
		}
		if err := s.deletePath(ctx, prefix); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(s.rib, prefix)
	}
	for addr := range resend {
		// A session that is not up gets the whole table when it comes up.
		s.stateMu.Lock()
		up := s.states[addr].Up
		s.stateMu.Unlock()
		if !up {
			continue
		}
		if err := s.s.ResetPeer(ctx, &api.ResetPeerRequest{Address: addr.String(), Soft: true, Direction: api.ResetPeerRequest_OUT}); err != nil {
			errs = append(errs, fmt.Errorf("bgppeer %s: send the changed paths: %w", s.peers[addr].Name, err))
		}
	}
	return errors.Join(errs...)
}

// Paths returns the prefixes in the RIB, sorted.
func (s *Server) Paths() []netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.SortedFunc(maps.Keys(s.rib), func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
}

// setPolicy replaces the export policy in one step (GoBGP swaps defined
// sets and statements under one lock) and keeps its assignment.
func (s *Server) setPolicy(ctx context.Context, applied map[netip.Addr]map[netip.Prefix]string, attrs map[string]attrSet) error {
	req := &api.SetPoliciesRequest{}
	pol := &api.Policy{Name: policyName}
	addrs := slices.SortedFunc(maps.Keys(applied), func(a, b netip.Addr) int { return a.Compare(b) })
	for i, addr := range addrs {
		// Group the peer's prefixes by attribute set and family: GoBGP
		// prefix sets hold one family.
		groups := map[string][]netip.Prefix{}
		for prefix, k := range applied[addr] {
			fam := "4"
			if prefix.Addr().Is6() {
				fam = "6"
			}
			groups[k+"#"+fam] = append(groups[k+"#"+fam], prefix)
		}
		if len(groups) == 0 {
			continue
		}
		// A dynamicASN external router gets nothing until its OPEN
		// showed another AS than the session's own.
		if p := s.peers[addr]; p.ExternalOnly && p.PeerASN == 0 && !s.accepted[addr] {
			continue
		}
		nset := fmt.Sprintf("zh-n%d", i)
		req.DefinedSets = append(req.DefinedSets, &api.DefinedSet{
			DefinedType: api.DefinedType_NEIGHBOR, Name: nset,
			List: []string{netip.PrefixFrom(addr, addr.BitLen()).String()},
		})
		for j, gk := range slices.Sorted(maps.Keys(groups)) {
			k, _, _ := strings.Cut(gk, "#")
			pset := fmt.Sprintf("zh-n%d-g%d", i, j)
			ds := &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: pset}
			for _, p := range groups[gk] {
				ds.Prefixes = append(ds.Prefixes, &api.Prefix{IpPrefix: p.String(), MaskLengthMin: uint32(p.Bits()), MaskLengthMax: uint32(p.Bits())})
			}
			req.DefinedSets = append(req.DefinedSets, ds)
			a := attrs[k]
			actions := &api.Actions{RouteAction: api.RouteAction_ACCEPT}
			// Over an unnumbered session both families keep GoBGP's
			// next hop, this node's link-local address (RFC 8950 for
			// IPv4): the link has no other addresses.
			if fam6 := strings.HasSuffix(gk, "#6"); fam6 != addr.Is6() && s.peers[addr].Interface == "" {
				nh := s.peers[addr].NextHop4
				if fam6 {
					nh = s.peers[addr].NextHop6
				}
				if !nh.IsValid() {
					continue // no usable next hop: the default rejects it
				}
				actions.Nexthop = &api.NexthopAction{Address: nh.String()}
			}
			if len(a.communities) > 0 {
				actions.Community = &api.CommunityAction{Type: api.CommunityAction_ADD, Communities: a.communities}
			}
			if len(a.large) > 0 {
				actions.LargeCommunity = &api.CommunityAction{Type: api.CommunityAction_ADD, Communities: a.large}
			}
			if a.localPref > 0 {
				actions.LocalPref = &api.LocalPrefAction{Value: a.localPref}
			}
			pol.Statements = append(pol.Statements, &api.Statement{
				Name: pset,
				Conditions: &api.Conditions{
					NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: nset},
					PrefixSet:   &api.MatchSet{Type: api.MatchSet_ANY, Name: pset},
				},
				Actions: actions,
			})
		}
	}
	req.Policies = []*api.Policy{pol, importPolicy()}
	if err := s.s.SetPolicies(ctx, req); err != nil {
		return fmt.Errorf("export policy: %w", err)
	}
	return nil
}

func (s *Server) pathOf(prefix netip.Prefix, weight uint32, withdraw bool) (*api.Path, error) {
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: prefix.Addr().String(), PrefixLen: uint32(prefix.Bits())})
	if err != nil {
		return nil, err
	}
	origin, err := anypb.New(&api.OriginAttribute{Origin: 0})
	if err != nil {
		return nil, err
	}
	attrs := []*anypb.Any{origin}
	family := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	// An unspecified next hop makes GoBGP use each session's local
	// address: the node itself.
	if prefix.Addr().Is4() {
		nh, err := anypb.New(&api.NextHopAttribute{NextHop: "0.0.0.0"})
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, nh)
	} else {
		family = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
		mp, err := anypb.New(&api.MpReachNLRIAttribute{Family: family, NextHops: []string{"::"}, Nlris: []*anypb.Any{nlri}})
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, mp)
	}
	if weight > 0 {
		lb, err := anypb.New(&api.LinkBandwidthExtended{Asn: s.opts.ASN & 0xffff, Bandwidth: float32(weight) * BandwidthPerEndpoint})
		if err != nil {
			return nil, err
		}
		ext, err := anypb.New(&api.ExtendedCommunitiesAttribute{Communities: []*anypb.Any{lb}})
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, ext)
	}
	return &api.Path{Family: family, Nlri: nlri, Pattrs: attrs, IsWithdraw: withdraw}, nil
}

func (s *Server) addPath(ctx context.Context, prefix netip.Prefix, weight uint32) error {
	p, err := s.pathOf(prefix, weight, false)
	if err != nil {
		return fmt.Errorf("path %v: %w", prefix, err)
	}
	if _, err := s.s.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: p}); err != nil {
		return fmt.Errorf("announce %v: %w", prefix, err)
	}
	return nil
}

func (s *Server) deletePath(ctx context.Context, prefix netip.Prefix) error {
	p, err := s.pathOf(prefix, 0, true)
	if err != nil {
		return fmt.Errorf("path %v: %w", prefix, err)
	}
	if err := s.s.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Path: p}); err != nil {
		return fmt.Errorf("withdraw %v: %w", prefix, err)
	}
	return nil
}

// logAdapter sends GoBGP's logs to logr. GoBGP's own logger exits the
// process on Fatal (e.g. a policy it cannot load); here it is an error,
// and the call that caused it reports it.
type logAdapter struct {
	l     logr.Logger
	level log.LogLevel
}

func (a *logAdapter) kv(f log.Fields) []any {
	kv := make([]any, 0, 2*len(f))
	for _, k := range slices.Sorted(maps.Keys(f)) {
		kv = append(kv, k, f[k])
	}
	return kv
}

func (a *logAdapter) Panic(msg string, f log.Fields) { a.l.Error(nil, msg, a.kv(f)...) }
func (a *logAdapter) Fatal(msg string, f log.Fields) { a.l.Error(nil, msg, a.kv(f)...) }
func (a *logAdapter) Error(msg string, f log.Fields) { a.l.Error(nil, msg, a.kv(f)...) }
func (a *logAdapter) Warn(msg string, f log.Fields)  { a.l.Info(msg, a.kv(f)...) }
func (a *logAdapter) Info(msg string, f log.Fields)  { a.l.V(2).Info(msg, a.kv(f)...) }
func (a *logAdapter) Debug(msg string, f log.Fields) { a.l.V(4).Info(msg, a.kv(f)...) }
func (a *logAdapter) SetLevel(level log.LogLevel)    { a.level = level }
func (a *logAdapter) GetLevel() log.LogLevel         { return a.level }
