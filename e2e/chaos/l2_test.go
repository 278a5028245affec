package chaos_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/e2e/echo"
	"github.com/zerohop/zerohop/e2e/lab"
)

const (
	l2Nodes = 3
	// On the node segment, so the router reaches them by ARP/NDP.
	l2VIP4 = "198.51.100.200"
	l2VIP6 = "2001:db8:100::200"
	// memberlistPort is speaker.DefaultMemberlistPort.
	memberlistPort = 7946
)

// owners maps each L2 VIP to the nodes whose SpeakerStatus says they own
// it, sorted.
func (e *env) owners() map[string]string {
	var list v1alpha1.SpeakerStatusList
	ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
	defer cancel()
	if err := e.c.List(ctx, &list); err != nil {
		return nil
	}
	m := map[string][]string{}
	for _, s := range list.Items {
		for _, o := range s.Status.L2 {
			m[o.IP] = append(m[o.IP], s.Name)
		}
	}
	out := map[string]string{}
	for ip, ns := range m {
		slices.Sort(ns)
		out[ip] = strings.Join(ns, ",")
	}
	return out
}

// stableOwner waits until vip has one owner that holds for 2s.
func (e *env) stableOwner(t *testing.T, vip string) int {
	t.Helper()
	var owner string
	var since time.Time
	eventually(t, 60*time.Second, "one stable owner of "+vip, func() (bool, string) {
		o := e.owners()[vip]
		if o != owner || strings.Contains(o, ",") || o == "" {
			owner, since = o, time.Now()
			return false, o
		}
		return time.Since(since) > 2*time.Second, o
	})
	for i := 1; i <= l2Nodes; i++ {
		if owner == lab.NodeName(i) {
			return i
		}
	}
	t.Fatalf("owner %q is no lab node", owner)
	return 0
}

// answer is one request of the fine-grained prober.
type answer struct {
	at  time.Time
	pod string
	err error
}

// probeFast sends requests to addr with a short timeout back to back
// until stop, for a failover's gap at ~50ms resolution.
func probeFast(ctx context.Context, addr string) (stop func() []answer) {
	ctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	var out []answer
	done := make(chan struct{})
	dial := lab.DialerIn(lab.ClientNS)
	go func() {
		defer close(done)
		for n := 0; n < 20000 && ctx.Err() == nil; n++ {
			t0 := time.Now()
			rctx, c := context.WithTimeout(ctx, 50*time.Millisecond)
			rep, err := echo.Request(rctx, dial, "tcp", addr)
			c()
			mu.Lock()
			out = append(out, answer{t0, rep.Pod, err})
			mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return func() []answer {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(out)
	}
}

// TestChaosL2 runs the L2-mode scenarios on one lab: an owner node cut
// off (failover by memberlist), and memberlist traffic from a host
// without the key.
func TestChaosL2(t *testing.T) {
	suiteStart := time.Now()
	l := lab.Up(t, lab.Options{Nodes: l2Nodes})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newEnv(t, l, ctx, l2Nodes)
	e.speakerArgs = []string{"--bfd=false"}
	e.speakerEnv = []string{"ZEROHOP_MEMBERLIST_KEY=zh-chaos-l2-shared-key"}
	e.create(&v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "segment"},
		Spec: v1alpha1.IPAddressPoolSpec{Addresses: []v1alpha1.Address{"198.51.100.200/29", "2001:db8:100::200/125"}}})
	e.create(&v1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "segment"},
		Spec: v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"segment"}}})
	for i := 1; i <= l2Nodes; i++ {
		if _, err := l.AddPod(ctx, lab.PodSpec{Name: fmt.Sprintf("web-%d", i), Node: i, Labels: map[string]string{"app": "web"}}); err != nil {
			t.Fatal(err)
		}
	}
	// Local with a Pod on every node: whichever node owns the VIP answers
	// with its own Pod, so the answering Pod names the owner. zerohop's
	// controller assigns the requested IPs.
	l.Controller(t, zerohopBin)
	if err := l.AddLBService(ctx, "web", "web", true, l2VIP4, l2VIP6); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= l2Nodes; i++ {
		e.startSpeaker(i, zerohopBin)
	}
	eventually(t, 30*time.Second, "three SpeakerStatuses", func() (bool, string) {
		var list v1alpha1.SpeakerStatusList
		if err := e.c.List(ctx, &list); err != nil {
			return false, err.Error()
		}
		return len(list.Items) == l2Nodes, fmt.Sprint(len(list.Items))
	})
	e.stableOwner(t, l2VIP4)
	e.stableOwner(t, l2VIP6)
	v4 := hostPort(netip.MustParseAddr(l2VIP4))
	v6 := hostPort(netip.MustParseAddr(l2VIP6))
	eventually(t, 30*time.Second, "both VIPs answering", func() (bool, string) {
		for _, a := range []string{v4, v6} {
			rctx, c := context.WithTimeout(ctx, time.Second)
			_, err := l.Request(rctx, "tcp", a)
			c()
			if err != nil {
				return false, err.Error()
			}
		}
		return true, ""
	})
	t.Logf("L2 lab ready in %s", ms(time.Since(suiteStart)))

	t.Run("memberlist-without-key", func(t *testing.T) {
		before := e.owners()
		ld := startLoad(ctx, v4, v6)
		var changes []string
		wctx, wcancel := context.WithCancel(ctx)
		wdone := make(chan struct{})
		go func() {
			defer close(wdone)
			for n := 0; n < 1000 && wctx.Err() == nil; n++ {
				if o := e.owners(); o != nil && fmt.Sprint(o) != fmt.Sprint(before) {
					changes = append(changes, fmt.Sprintf("%s %v", time.Now().Format("15:04:05.000"), o))
				}
				sleepCtx(wctx, 200*time.Millisecond)
			}
		}()
		time.Sleep(time.Second)
		sent, err := memberlistGarbage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		wcancel()
		<-wdone
		res := ld.stop()
		t.Logf("sent %s from %s to every node's port %d", sent, lab.RouterNS, memberlistPort)
		t.Log(res.summary())
		for i := 1; i <= l2Nodes; i++ {
			if !e.speakerAlive(i) {
				t.Errorf("node%d's speaker died", i)
			}
		}
		if len(changes) > 0 {
			t.Errorf("L2 owners changed (were %v):\n%s", before, strings.Join(changes, "\n"))
		}
		if len(res.failures) > 0 {
			t.Errorf("%d failures:\n%s", len(res.failures), res.firstFailures(10))
		}
		report(t, result{scenario: "memberlist traffic without the key (" + sent + ")", sent: res.sent, failed: len(res.failures),
			recover: fmt.Sprintf("nothing to recover: owners unchanged (%v), speakers up", before),
			user:    "nothing"})
	})

	t.Run("owner-node-cut", func(t *testing.T) {
		var gaps []time.Duration
		var sent, failed, onDead, onReturn int
		for run := 1; run <= 3; run++ {
			owner := e.stableOwner(t, l2VIP4)
			ld := startLoad(ctx, v4, v6)
			stopFast := probeFast(ctx, v4)
			time.Sleep(time.Second)
			link := func(state string) {
				if out, err := exec.CommandContext(ctx, "ip", "-n", lab.NodeName(owner), "link", "set", lab.UplinkIf, state).CombinedOutput(); err != nil {
					t.Fatalf("link %s: %v: %s", state, err, out)
				}
			}
			t0 := time.Now()
			link("down")
			ownerWeb, _ := l.PodByName(fmt.Sprintf("web-%d", owner))
			ownerPod := ownerWeb.Name
			var first time.Time
			deadline := time.Now().Add(15 * time.Second)
			for first.IsZero() && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
				ctx2, c := context.WithTimeout(ctx, 200*time.Millisecond)
				rep, err := l.Request(ctx2, "tcp", v4)
				c()
				if err == nil && rep.Pod != ownerPod {
					break
				}
			}
			time.Sleep(time.Second)
			answers := stopFast()
			tUp := time.Now()
			link("up")
			restoreRoutes(t, ctx, owner, l2Nodes)
			// The node returns; rendezvous hashing may give it the VIP back.
			time.Sleep(500 * time.Millisecond)
			newOwner := e.stableOwner(t, l2VIP4)
			eventually(t, 30*time.Second, "the VIP answering after the node's return", func() (bool, string) {
				rctx, c := context.WithTimeout(ctx, time.Second)
				_, err := l.Request(rctx, "tcp", v4)
				c()
				return err == nil, fmt.Sprint(err)
			})
			time.Sleep(time.Second)
			res := ld.stop()
			var last time.Time
			for _, a := range answers {
				if a.err == nil && a.at.Before(t0) {
					last = a.at
				}
				if a.err == nil && a.at.After(t0) && a.pod != ownerPod && first.IsZero() {
					first = a.at
				}
			}
			if first.IsZero() || last.IsZero() {
				t.Fatalf("run %d: no answer before the cut or none from another node after it", run)
			}
			gap := first.Sub(last)
			gaps = append(gaps, gap)
			sent += res.sent
			failed += len(res.failures)
			onDead += res.count(func(f failure) bool { return f.kind != "short" && f.pod == ownerPod && f.at.Before(tUp) })
			onReturn += res.count(func(f failure) bool { return !f.at.Before(tUp) })
			t.Logf("run %d: node%d cut off, another node answered after a %s gap; owner after its return: node%d; load: %s",
				run, owner, ms(gap), newOwner, res.summary())
			if len(res.failures) > 0 {
				t.Logf("run %d failures:\n%s", run, res.firstFailures(8))
			}
		}
		slices.Sort(gaps)
		median := gaps[len(gaps)/2]
		t.Logf("L2 failover gap over %d cuts: median %s, min %s, max %s", len(gaps), ms(median), ms(gaps[0]), ms(gaps[len(gaps)-1]))
		for i, g := range gaps {
			if g > time.Second {
				t.Errorf("L2 failover gap %s (%d of %d, sorted), want at most 1s: every failover, not the median", ms(g), i+1, len(gaps))
			}
		}
		report(t, result{scenario: "L2 owner's uplink cut, 3 times", sent: sent, failed: failed,
			recover: fmt.Sprintf("another node answered after a median %s gap (min %s, max %s)", ms(median), ms(gaps[0]), ms(gaps[len(gaps)-1])),
			user: fmt.Sprintf("new connections stall for ~%s; %d long-lived connections to the dead node's Pod lost; %d failures when the node came back and took the VIP back",
				ms(median), onDead, onReturn)})
	})
	t.Logf("TestChaosL2 took %s", ms(time.Since(suiteStart)))
}

// memberlist's message types (hashicorp/memberlist net.go).
const (
	mlSuspect  = 3
	mlDead     = 5
	mlCompound = 7
)

// msgpackStr and msgpackDead encode the few msgpack forms memberlist's
// suspect and dead messages need (a map of Incarnation, Node, From).
func msgpackStr(s string) []byte { return append([]byte{0xa0 | byte(len(s))}, s...) }

func msgpackDead(inc uint32, node, from string) []byte {
	b := []byte{0x83}
	b = append(b, msgpackStr("Incarnation")...)
	b = append(b, 0xce, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(b[len(b)-4:], inc)
	b = append(b, msgpackStr("Node")...)
	b = append(b, msgpackStr(node)...)
	b = append(b, msgpackStr("From")...)
	b = append(b, msgpackStr(from)...)
	return b
}

// memberlistGarbage sends, from the router's namespace (a host on the
// node segment without the key), to every node's memberlist port: random
// datagrams, plaintext dead and suspect messages declaring each node
// dead, the same sealed with a wrong key, and TCP connections carrying
// garbage. It returns a description of what it sent.
func memberlistGarbage(ctx context.Context) (string, error) {
	r := rand.New(rand.NewPCG(7946, 14))
	var pc net.PacketConn
	if err := lab.InNetns(lab.RouterNS, func() error {
		var err error
		pc, err = net.ListenPacket("udp", ":0")
		return err
	}); err != nil {
		return "", err
	}
	defer func() { _ = pc.Close() }()
	block, err := aes.NewCipher(func() []byte { k := sha256.Sum256([]byte("not-the-cluster-key")); return k[:] }())
	if err != nil {
		return "", err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return "", err
	}
	var msgs [][]byte
	for i := 1; i <= l2Nodes; i++ {
		for j := 1; j <= l2Nodes; j++ {
			if i == j {
				continue
			}
			for _, typ := range []byte{mlDead, mlSuspect} {
				msgs = append(msgs, append([]byte{typ}, msgpackDead(1<<20, lab.NodeName(i), lab.NodeName(j))...))
			}
		}
	}
	// A compound message of them all: type, count, lengths, bodies.
	comp := []byte{mlCompound, byte(len(msgs))}
	for _, m := range msgs {
		comp = binary.BigEndian.AppendUint16(comp, uint16(len(m)))
	}
	for _, m := range msgs {
		comp = append(comp, m...)
	}
	plain := append(msgs, comp)
	var sealed [][]byte
	for _, m := range plain {
		nonce := make([]byte, gcm.NonceSize())
		for k := range nonce {
			nonce[k] = byte(r.Uint32())
		}
		// memberlist's encryption version 1: version, nonce, ciphertext.
		sealed = append(sealed, gcm.Seal(append([]byte{1}, nonce...), nonce, m, nil))
	}
	random, udp, tcp := 0, 0, 0
	for i := 1; i <= l2Nodes; i++ {
		n4, _ := lab.NodeAddrs(i)
		dst := &net.UDPAddr{IP: n4.AsSlice(), Port: memberlistPort}
		var pkts [][]byte
		for range 200 {
			b := make([]byte, 1+r.IntN(1400))
			for k := range b {
				b[k] = byte(r.Uint32())
			}
			pkts = append(pkts, b)
			random++
		}
		for range 5 {
			pkts = append(pkts, plain...)
			pkts = append(pkts, sealed...)
		}
		for _, p := range pkts {
			if _, err := pc.WriteTo(p, dst); err == nil {
				udp++
			}
			time.Sleep(200 * time.Microsecond)
		}
		dial := lab.DialerIn(lab.RouterNS)
		for k := range 5 {
			dctx, cancel := context.WithTimeout(ctx, time.Second)
			c, err := dial(dctx, "tcp", netip.AddrPortFrom(n4, memberlistPort).String())
			cancel()
			if err != nil {
				continue
			}
			tcp++
			_ = c.SetDeadline(time.Now().Add(time.Second))
			// A push-pull header claiming a huge state, then noise.
			_, _ = c.Write(append([]byte{6, 0x83}, sealed[k%len(sealed)]...))
			_, _ = c.Write(make([]byte, 4096))
			_, _ = c.Read(make([]byte, 512))
			_ = c.Close()
		}
	}
	return fmt.Sprintf("%d UDP datagrams (%d random, the rest plaintext or wrong-key dead/suspect messages), %d TCP connections", udp, random, tcp), nil
}
