//go:build linux

package l2

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
	"github.com/vishvananda/netns"
)

// nsThread runs functions on one OS thread inside a network namespace.
// The thread is never unlocked, so the runtime discards it when the
// goroutine ends instead of reusing it in the wrong namespace.
type nsThread struct{ fns chan func() }

func newNSThread(t *testing.T, name string) *nsThread {
	t.Helper()
	th := &nsThread{fns: make(chan func())}
	ready := make(chan error)
	go func() {
		runtime.LockOSThread()
		h, err := netns.GetFromName(name)
		if err != nil {
			ready <- err
			return
		}
		err = netns.Set(h)
		_ = h.Close()
		ready <- err
		if err != nil {
			return
		}
		for fn := range th.fns {
			fn()
		}
	}()
	if err := <-ready; err != nil {
		t.Fatalf("enter netns %s: %v", name, err)
	}
	t.Cleanup(func() { close(th.fns) })
	return th
}

func (th *nsThread) do(fn func()) {
	done := make(chan struct{})
	th.fns <- func() { defer close(done); fn() }
	<-done
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

const (
	ifA, ifB = "zh-va", "zh-vb"
)

// lab is two namespaces joined by a veth pair: the owner (A) runs the
// Announcer, the peer (B) asks and listens.
type lab struct {
	a, b *nsThread
	macA net.HardwareAddr
}

func newLab(t *testing.T) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces and raw sockets (make test-l2-unit runs as root)")
	}
	nsA := fmt.Sprintf("zh-l2a-%d", os.Getpid())
	nsB := fmt.Sprintf("zh-l2b-%d", os.Getpid())
	for _, ns := range []string{nsA, nsB} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		// No duplicate address detection: the link-local and test
		// addresses are usable at once.
		run(t, "ip", "netns", "exec", ns, "sysctl", "-qw",
			"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	}
	run(t, "ip", "-n", nsA, "link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", nsB)
	run(t, "ip", "-n", nsA, "addr", "add", "192.0.2.1/24", "dev", ifA)
	run(t, "ip", "-n", nsA, "addr", "add", "2001:db8::1/64", "dev", ifA, "nodad")
	run(t, "ip", "-n", nsB, "addr", "add", "192.0.2.2/24", "dev", ifB)
	run(t, "ip", "-n", nsB, "addr", "add", "2001:db8::2/64", "dev", ifB, "nodad")
	run(t, "ip", "-n", nsA, "link", "set", ifA, "up")
	run(t, "ip", "-n", nsB, "link", "set", ifB, "up")

	// Link-up finishes asynchronously (carrier, then the IPv6 multicast
	// route); until then sends fail with "network is unreachable".
	for _, side := range [][2]string{{nsA, ifA}, {nsB, ifB}} {
		ready := false
		for range 250 {
			err := exec.Command("ip", "-n", side[0], "-6", "route", "get", "ff02::1:ff00:1", "oif", side[1]).Run()
			out, _ := exec.Command("ip", "-n", side[0], "-br", "link", "show", side[1]).Output()
			if err == nil && strings.Contains(string(out), " UP ") {
				ready = true
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if !ready {
			t.Fatalf("%s in %s not up within 5s", side[1], side[0])
		}
	}

	l := &lab{a: newNSThread(t, nsA), b: newNSThread(t, nsB)}
	var err error
	l.a.do(func() {
		var ifi *net.Interface
		if ifi, err = net.InterfaceByName(ifA); err == nil {
			l.macA = ifi.HardwareAddr
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *lab) announcer(t *testing.T, opts Options) *Announcer {
	t.Helper()
	an, err := NewAnnouncer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = an.Close() })
	return an
}

// setOwned calls SetOwned in the owner's namespace, where the sockets must
// be opened.
func (l *lab) setOwned(t *testing.T, an *Announcer, vips ...string) {
	t.Helper()
	var addrs []netip.Addr
	for _, v := range vips {
		addrs = append(addrs, netip.MustParseAddr(v))
	}
	var err error
	l.a.do(func() { err = an.SetOwned(ifA, addrs) })
	if err != nil {
		t.Fatal(err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// arpAsk sends one ARP request for vip from the peer and returns the
// hardware addresses of the replies heard within wait.
func (l *lab) arpAsk(t *testing.T, vip string, wait time.Duration) []net.HardwareAddr {
	t.Helper()
	ip := netip.MustParseAddr(vip)
	var c *arp.Client
	var err error
	l.b.do(func() {
		var ifi *net.Interface
		if ifi, err = net.InterfaceByName(ifB); err == nil {
			c, err = arp.Dial(ifi)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	if err := c.Request(ip); err != nil {
		t.Fatal(err)
	}
	var macs []net.HardwareAddr
	for range 1000 { // the deadline ends it; the count only bounds it
		p, _, err := c.Read()
		if isTimeout(err) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if p.Operation == arp.OperationReply && p.SenderIP == ip {
			macs = append(macs, p.SenderHardwareAddr)
		}
	}
	return macs
}

// ndpAsk sends one neighbour solicitation for vip, to its solicited-node
// group as a host resolving it would, and returns the target link-layer
// addresses of the advertisements heard within wait.
func (l *lab) ndpAsk(t *testing.T, vip string, wait time.Duration) []net.HardwareAddr {
	t.Helper()
	ip := netip.MustParseAddr(vip)
	var (
		c   *ndp.Conn
		mac net.HardwareAddr
		err error
	)
	l.b.do(func() {
		var ifi *net.Interface
		if ifi, err = net.InterfaceByName(ifB); err == nil {
			mac = ifi.HardwareAddr
			c, _, err = ndp.Listen(ifi, ndp.Addr("2001:db8::2"))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	group, err := ndp.SolicitedNodeMulticast(ip)
	if err != nil {
		t.Fatal(err)
	}
	ns := &ndp.NeighborSolicitation{
		TargetAddress: ip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac}},
	}
	if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteTo(ns, nil, group); err != nil {
		t.Fatal(err)
	}
	var macs []net.HardwareAddr
	for range 1000 {
		m, _, _, err := c.ReadFrom()
		if isTimeout(err) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		na, ok := m.(*ndp.NeighborAdvertisement)
		if !ok || na.TargetAddress != ip {
			continue
		}
		if !na.Solicited || !na.Override {
			t.Errorf("advertisement for %s: solicited %t, override %t; want both", ip, na.Solicited, na.Override)
		}
		macs = append(macs, targetLLA(na))
	}
	return macs
}

func targetLLA(na *ndp.NeighborAdvertisement) net.HardwareAddr {
	for _, o := range na.Options {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
			return lla.Addr
		}
	}
	return nil
}

// announcement is one gratuitous ARP or unsolicited NA the peer heard.
type announcement struct {
	vip netip.Addr
	mac net.HardwareAddr
	at  time.Time
}

// capture listens on the peer for gratuitous ARPs and unsolicited NAs for
// d, calling during once it listens, and returns what it heard.
func (l *lab) capture(t *testing.T, d time.Duration, during func()) []announcement {
	t.Helper()
	var (
		ac  *arp.Client
		nc  *ndp.Conn
		err error
	)
	l.b.do(func() {
		var ifi *net.Interface
		if ifi, err = net.InterfaceByName(ifB); err != nil {
			return
		}
		if ac, err = arp.Dial(ifi); err != nil {
			return
		}
		nc, _, err = ndp.Listen(ifi, ndp.Addr("2001:db8::2"))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	defer nc.Close()
	end := time.Now().Add(d)
	_ = ac.SetReadDeadline(end)
	_ = nc.SetReadDeadline(end)

	var (
		mu   sync.Mutex
		got  []announcement
		wg   sync.WaitGroup
		errs = make(chan error, 2)
	)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for range 10000 {
			p, _, err := ac.Read()
			if err != nil {
				if !isTimeout(err) {
					errs <- err
				}
				return
			}
			if p.Operation == arp.OperationRequest && p.SenderIP == p.TargetIP {
				mu.Lock()
				got = append(got, announcement{p.SenderIP, p.SenderHardwareAddr, time.Now()})
				mu.Unlock()
			}
		}
	}()
	go func() {
		defer wg.Done()
		for range 10000 {
			m, _, _, err := nc.ReadFrom()
			if err != nil {
				if !isTimeout(err) {
					errs <- err
				}
				return
			}
			if na, ok := m.(*ndp.NeighborAdvertisement); ok && !na.Solicited {
				mu.Lock()
				got = append(got, announcement{na.TargetAddress, targetLLA(na), time.Now()})
				mu.Unlock()
			}
		}
	}()
	during()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return got
}

func count(anns []announcement, vip string, mac net.HardwareAddr) (n int, first time.Time) {
	ip := netip.MustParseAddr(vip)
	for _, a := range anns {
		if a.vip == ip && equalMAC(a.mac, mac) {
			if n == 0 {
				first = a.at
			}
			n++
		}
	}
	return n, first
}

func TestAnnouncerNetns(t *testing.T) {
	l := newLab(t)
	const wait = 300 * time.Millisecond

	t.Run("answers owned VIPs only", func(t *testing.T) {
		an := l.announcer(t, Options{RefreshInterval: time.Hour})
		l.setOwned(t, an, "192.0.2.10", "2001:db8::10")
		tests := []struct {
			vip  string
			want []net.HardwareAddr
		}{
			{"192.0.2.10", []net.HardwareAddr{l.macA}},
			{"192.0.2.11", nil},
			{"2001:db8::10", []net.HardwareAddr{l.macA}},
			{"2001:db8::11", nil},
		}
		for _, tc := range tests {
			ask := l.arpAsk
			if strings.Contains(tc.vip, ":") {
				ask = l.ndpAsk
			}
			got := ask(t, tc.vip, wait)
			if !slices.EqualFunc(got, tc.want, equalMAC) {
				t.Errorf("%s: answers from %v, want %v", tc.vip, got, tc.want)
			}
		}
	})

	t.Run("kernel neighbour cache learns the owner", func(t *testing.T) {
		an := l.announcer(t, Options{RefreshInterval: time.Hour})
		l.setOwned(t, an, "192.0.2.20", "2001:db8::20")
		nsB := fmt.Sprintf("zh-l2b-%d", os.Getpid())
		for _, vip := range []string{"192.0.2.20", "2001:db8::20"} {
			// The ping itself gets no reply (nothing in A holds the VIP);
			// it only makes B's kernel resolve it.
			_ = exec.Command("ip", "netns", "exec", nsB, "ping", "-c", "1", "-W", "1", vip).Run()
			out := run(t, "ip", "-n", nsB, "neigh", "show", vip)
			if !strings.Contains(out, "lladdr "+l.macA.String()) {
				t.Errorf("neighbour entry for %s: %q, want lladdr %s", vip, out, l.macA)
			}
		}
	})

	t.Run("removed VIP is not answered", func(t *testing.T) {
		an := l.announcer(t, Options{RefreshInterval: time.Hour})
		l.setOwned(t, an, "192.0.2.30", "2001:db8::30")
		if got := l.arpAsk(t, "192.0.2.30", wait); len(got) != 1 {
			t.Fatalf("owned VIP answered %d times, want once", len(got))
		}
		l.setOwned(t, an, "2001:db8::30")
		if got := l.arpAsk(t, "192.0.2.30", wait); len(got) != 0 {
			t.Errorf("removed v4 VIP still answered by %v", got)
		}
		if got := l.ndpAsk(t, "2001:db8::30", wait); len(got) != 1 {
			t.Errorf("v6 VIP answered %d times, want once", len(got))
		}
		l.setOwned(t, an)
		if got := l.ndpAsk(t, "2001:db8::30", wait); len(got) != 0 {
			t.Errorf("removed v6 VIP still answered by %v", got)
		}
		if got := an.Owned(ifA); len(got) != 0 {
			t.Errorf("Owned = %v after releasing everything", got)
		}
	})

	t.Run("takeover burst", func(t *testing.T) {
		const burst = 3
		an := l.announcer(t, Options{Burst: burst, BurstInterval: 50 * time.Millisecond, RefreshInterval: time.Hour})
		var took time.Time
		anns := l.capture(t, 600*time.Millisecond, func() {
			took = time.Now()
			l.setOwned(t, an, "192.0.2.40", "2001:db8::40")
		})
		for _, vip := range []string{"192.0.2.40", "2001:db8::40"} {
			n, first := count(anns, vip, l.macA)
			if n != burst {
				t.Errorf("%s: %d announcements heard, want a burst of %d", vip, n, burst)
				continue
			}
			t.Logf("%s: burst of %d, first heard %v after SetOwned", vip, n, first.Sub(took).Round(10*time.Microsecond))
		}
		// Letting go must be silent from then on.
		anns = l.capture(t, 400*time.Millisecond, func() { l.setOwned(t, an, "192.0.2.41") })
		for _, vip := range []string{"192.0.2.40", "2001:db8::40"} {
			if n, _ := count(anns, vip, l.macA); n != 0 {
				t.Errorf("%s: %d announcements after release", vip, n)
			}
		}
		if n, _ := count(anns, "192.0.2.41", l.macA); n != burst {
			t.Errorf("192.0.2.41: %d announcements, want %d", n, burst)
		}
	})

	t.Run("periodic refresh", func(t *testing.T) {
		an := l.announcer(t, Options{Burst: 1, RefreshInterval: 200 * time.Millisecond})
		anns := l.capture(t, 1100*time.Millisecond, func() {
			l.setOwned(t, an, "192.0.2.50", "2001:db8::50")
		})
		for _, vip := range []string{"192.0.2.50", "2001:db8::50"} {
			// One at takeover, then one each 200ms: about 6; at least 3
			// even on a slow machine.
			if n, _ := count(anns, vip, l.macA); n < 3 {
				t.Errorf("%s: %d announcements in 1.1s with a 200ms refresh", vip, n)
			} else {
				t.Logf("%s: %d announcements in 1.1s (200ms refresh)", vip, n)
			}
		}
		anns = l.capture(t, 500*time.Millisecond, func() { l.setOwned(t, an) })
		for _, vip := range []string{"192.0.2.50", "2001:db8::50"} {
			if n, _ := count(anns, vip, l.macA); n != 0 {
				t.Errorf("%s: %d announcements after releasing everything", vip, n)
			}
		}
	})

	t.Run("interface detection in the namespace", func(t *testing.T) {
		var (
			ifaces []Interface
			up     bool
			err    error
		)
		l.a.do(func() {
			if ifaces, err = Interfaces(); err == nil {
				up, err = LinkUp(ifA)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		if !up {
			t.Errorf("%s reported down", ifA)
		}
		for _, vip := range []string{"192.0.2.99", "2001:db8::99"} {
			if got, ok := InterfaceFor(netip.MustParseAddr(vip), ifaces); !ok || got != ifA {
				t.Errorf("InterfaceFor(%s) = %q, %t; want %s (interfaces %+v)", vip, got, ok, ifA, ifaces)
			}
		}
		// Last subtest: the link stays down.
		run(t, "ip", "-n", fmt.Sprintf("zh-l2a-%d", os.Getpid()), "link", "set", ifA, "down")
		l.a.do(func() {
			if ifaces, err = Interfaces(); err == nil {
				up, err = LinkUp(ifA)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		if up {
			t.Errorf("%s reported up after link set down", ifA)
		}
		if got, ok := InterfaceFor(netip.MustParseAddr("192.0.2.99"), ifaces); ok {
			t.Errorf("InterfaceFor picked %s, which is down", got)
		}
	})
}

func TestSetOwnedErrors(t *testing.T) {
	an, err := NewAnnouncer(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := an.SetOwned("zh-no-such-if", []netip.Addr{netip.MustParseAddr("192.0.2.1")}); err == nil {
		t.Error("SetOwned on a missing interface succeeded")
	}
	// Releasing an interface never set is a no-op.
	if err := an.SetOwned("zh-no-such-if", nil); err != nil {
		t.Error(err)
	}
	if err := an.Close(); err != nil {
		t.Fatal(err)
	}
	if err := an.SetOwned("lo", []netip.Addr{netip.MustParseAddr("192.0.2.1")}); err == nil {
		t.Error("SetOwned after Close succeeded")
	}
	if _, err := NewAnnouncer(Options{Burst: 1000}); err == nil {
		t.Error("NewAnnouncer accepted a burst of 1000")
	}
}
