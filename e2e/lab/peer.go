package lab

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/types/known/anypb"
)

// A test BGP peer is an embedded GoBGP server in a helper process started
// inside a node namespace with `ip netns exec`. A process, not a goroutine:
// GoBGP dials from goroutines of its own, which would not be in the node's
// namespace. Its gRPC API is not started. The test drives it over stdin
// ("announce P", "withdraw P") and reads one "ok"/"error ..." line back.

// PeerConfig configures a test BGP peer on a node, or, with Remote, in
// the client namespace.
type PeerConfig struct {
	Node    int    // 1-based node index
	ASN     uint32 // the peer's own ASN; 0 = DefaultNodeASN
	PeerASN uint32 // the router's ASN; 0 = DefaultRouterASN
	// Remote runs the peer in the client namespace, two hops from the
	// nodes (node, router, client), as an eBGP multihop peer of every
	// node: it listens on port 179 and waits for the nodes to dial (its
	// own packets leave with TTL 255). Node is then unused and PeerASN
	// is the nodes' ASN (0 = DefaultNodeASN); give ASN another value
	// for eBGP.
	Remote bool
}

// Peer is a running test BGP peer.
type Peer struct {
	proc  Proc
	in    *os.File
	out   *bufio.Reader
	outF  *os.File
	mu    sync.Mutex
	owner *Lab
}

// StartPeer starts a GoBGP peer in node cfg.Node that connects to the router
// over IPv4 and IPv6. It is stopped by Lab teardown, or earlier by Stop.
func (l *Lab) StartPeer(ctx context.Context, cfg PeerConfig) (*Peer, error) {
	if !cfg.Remote && (cfg.Node < 1 || cfg.Node > l.opts.Nodes) {
		return nil, fmt.Errorf("peer: no node %d", cfg.Node)
	}
	if cfg.ASN == 0 {
		cfg.ASN = DefaultNodeASN
	}
	switch {
	case cfg.PeerASN != 0:
	case cfg.Remote:
		cfg.PeerASN = DefaultNodeASN
	default:
		cfg.PeerASN = l.opts.RouterASN
	}
	var n4, n6 netip.Addr
	var neighbors []string
	name, ns := fmt.Sprintf("bgp-peer-node%d", cfg.Node), NodeName(cfg.Node)
	var extra []string
	if cfg.Remote {
		n4, n6 = ClientAddrs()
		for i := 1; i <= l.opts.Nodes; i++ {
			a4, _ := NodeAddrs(i)
			neighbors = append(neighbors, a4.String())
		}
		name, ns, extra = "bgp-peer-remote", ClientNS, []string{"-multihop"}
	} else {
		n4, n6 = NodeAddrs(cfg.Node)
		r4, r6 := RouterNodeAddrs()
		neighbors = []string{r4.String(), r6.String()}
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	argv := append(append([]string{}, l.opts.HelperCommand...), "bgp-peer",
		"-asn", fmt.Sprint(cfg.ASN), "-peer-asn", fmt.Sprint(cfg.PeerASN),
		"-router-id", n4.String(), "-local", n4.String()+","+n6.String(),
		"-neighbors", strings.Join(neighbors, ","))
	argv = append(argv, extra...)
	p, _, err := spawn(spawnSpec{name: name, ns: ns,
		argv: argv, logDir: l.logDir(), detach: l.opts.Detach, stdin: inR, stdout: outW})
	_ = inR.Close()
	_ = outW.Close()
	if err != nil {
		_ = inW.Close()
		_ = outR.Close()
		return nil, err
	}
	if err := l.addProc(p); err != nil {
		return nil, err
	}
	peer := &Peer{proc: p, in: inW, out: bufio.NewReader(outR), outF: outR, owner: l}
	// The helper says "ok" once GoBGP runs and the neighbors are configured.
	if err := peer.await(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return peer, nil
}

func (p *Peer) await(ctx context.Context) error {
	type res struct {
		line string
		err  error
	}
	c := make(chan res, 1)
	go func() {
		line, err := p.out.ReadString('\n')
		c <- res{strings.TrimSpace(line), err}
	}()
	select {
	case r := <-c:
		if r.err != nil {
			return fmt.Errorf("helper: %w (see %s log)", r.err, p.proc.Name)
		}
		if r.line != "ok" {
			return errors.New(r.line)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(15 * time.Second):
		return errors.New("helper did not answer within 15s")
	}
}

func (p *Peer) command(ctx context.Context, cmd string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := fmt.Fprintln(p.in, cmd); err != nil {
		return err
	}
	return p.await(ctx)
}

// Announce advertises prefix with the node's own address as next hop.
func (p *Peer) Announce(ctx context.Context, prefix netip.Prefix) error {
	return p.command(ctx, "announce "+prefix.String())
}

// Withdraw withdraws a prefix announced before.
func (p *Peer) Withdraw(ctx context.Context, prefix netip.Prefix) error {
	return p.command(ctx, "withdraw "+prefix.String())
}

// Received reports whether the peer holds a path to prefix from any
// neighbor.
func (p *Peer) Received(ctx context.Context, prefix netip.Prefix) (bool, error) {
	err := p.command(ctx, "received "+prefix.String())
	if err != nil && err.Error() == "error: no path" {
		return false, nil
	}
	return err == nil, err
}

// Stop ends the peer process.
func (p *Peer) Stop() error {
	_ = p.in.Close() // EOF makes the helper exit cleanly
	err := p.proc.stop(5 * time.Second)
	_ = p.outF.Close()
	return err
}

// runPeerHelper is the helper process side.
func runPeerHelper(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("bgp-peer", flag.ContinueOnError)
	asn := fs.Uint("asn", DefaultNodeASN, "local ASN")
	peerASN := fs.Uint("peer-asn", DefaultRouterASN, "router ASN")
	routerID := fs.String("router-id", "", "router ID")
	local := fs.String("local", "", "local addresses (next hops), comma separated")
	neighbors := fs.String("neighbors", "", "neighbor addresses, comma separated")
	multihop := fs.Bool("multihop", false, "eBGP multihop: listen on 179, wait for the neighbors to dial, send with TTL 255")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var nh4, nh6 string
	for _, a := range strings.Split(*local, ",") {
		if ad, err := netip.ParseAddr(a); err == nil && ad.Is4() {
			nh4 = a
		} else if err == nil {
			nh6 = a
		}
	}
	ctx := context.Background()
	s := server.NewBgpServer()
	go s.Serve()
	defer s.Stop()
	// ListenPort -1: the peer only dials out, nothing listens in the node.
	// A multihop peer is dialled by the nodes instead.
	listen := int32(-1)
	if *multihop {
		listen = 179
	}
	if err := s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: uint32(*asn), RouterId: *routerID, ListenPort: listen}}); err != nil {
		return fmt.Errorf("start bgp: %w", err)
	}
	for _, n := range strings.Split(*neighbors, ",") {
		ad, err := netip.ParseAddr(n)
		if err != nil {
			return fmt.Errorf("neighbor %q: %w", n, err)
		}
		afi := api.Family_AFI_IP
		if ad.Is6() {
			afi = api.Family_AFI_IP6
		}
		peer := &api.Peer{
			Conf:   &api.PeerConf{NeighborAddress: n, PeerAsn: uint32(*peerASN)},
			Timers: &api.Timers{Config: &api.TimersConfig{ConnectRetry: 2, HoldTime: 9, KeepaliveInterval: 3}},
			AfiSafis: []*api.AfiSafi{{Config: &api.AfiSafiConfig{
				Family: &api.Family{Afi: afi, Safi: api.Family_SAFI_UNICAST}, Enabled: true}}},
		}
		if *multihop {
			peer.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: 255}
			peer.Transport = &api.Transport{PassiveMode: true}
		}
		if err := s.AddPeer(ctx, &api.AddPeerRequest{Peer: peer}); err != nil {
			return fmt.Errorf("add peer %s: %w", n, err)
		}
	}
	if _, err := fmt.Fprintln(stdout, "ok"); err != nil {
		return err
	}
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		err := func() error {
			if len(f) != 2 || (f[0] != "announce" && f[0] != "withdraw" && f[0] != "received") {
				return fmt.Errorf("bad command %q", sc.Text())
			}
			pfx, err := netip.ParsePrefix(f[1])
			if err != nil {
				return err
			}
			if f[0] == "received" {
				return received(ctx, s, pfx)
			}
			nh := nh4
			if pfx.Addr().Is6() {
				nh = nh6
			}
			path, err := bgpPath(pfx, nh)
			if err != nil {
				return err
			}
			if f[0] == "announce" {
				_, err = s.AddPath(ctx, &api.AddPathRequest{Path: path})
			} else {
				err = s.DeletePath(ctx, &api.DeletePathRequest{Path: path, Family: path.Family})
			}
			return err
		}()
		if err != nil {
			_, _ = fmt.Fprintln(stdout, "error: "+err.Error())
			continue
		}
		_, _ = fmt.Fprintln(stdout, "ok")
	}
	return sc.Err()
}

// received fails unless the global RIB has a path to pfx.
func received(ctx context.Context, s *server.BgpServer, pfx netip.Prefix) error {
	fam := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	if pfx.Addr().Is6() {
		fam.Afi = api.Family_AFI_IP6
	}
	found := false
	err := s.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: fam,
		Prefixes: []*api.TableLookupPrefix{{Prefix: pfx.String(), Type: api.TableLookupPrefix_EXACT}}},
		func(d *api.Destination) { found = found || len(d.Paths) > 0 })
	if err != nil {
		return err
	}
	if !found {
		return errors.New("no path")
	}
	return nil
}

func bgpPath(pfx netip.Prefix, nextHop string) (*api.Path, error) {
	if nextHop == "" {
		return nil, fmt.Errorf("no local address for %s", pfx)
	}
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: pfx.Addr().String(), PrefixLen: uint32(pfx.Bits())})
	if err != nil {
		return nil, err
	}
	origin, err := anypb.New(&api.OriginAttribute{Origin: 0})
	if err != nil {
		return nil, err
	}
	fam := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	var nh *anypb.Any
	if pfx.Addr().Is4() {
		nh, err = anypb.New(&api.NextHopAttribute{NextHop: nextHop})
	} else {
		fam = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
		nh, err = anypb.New(&api.MpReachNLRIAttribute{Family: fam, NextHops: []string{nextHop}, Nlris: []*anypb.Any{nlri}})
	}
	if err != nil {
		return nil, err
	}
	return &api.Path{Family: fam, Nlri: nlri, Pattrs: []*anypb.Any{origin, nh}}, nil
}
