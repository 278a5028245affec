//go:build linux

package l2

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/mdlayher/arp"

	"github.com/zerohop/zerohop/speaker/l2/election"
	"github.com/zerohop/zerohop/speaker/l2/member"
)

// speaker is the smallest wiring of the three parts, as the real speaker
// does it: on every membership change, recompute the owned VIPs from the
// live eligible members and hand them to the Announcer.
type speaker struct {
	name    string
	th      *nsThread
	cluster *member.Cluster
	an      *Announcer
	stop    chan struct{}
	done    chan struct{}
}

func (s *speaker) follow(t *testing.T, ifname string, vips []netip.Addr, eligible map[string]bool) {
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	apply := func() {
		var owned []netip.Addr
		if s.cluster.HasMajority() {
			var names []string
			for _, m := range s.cluster.Members() {
				if eligible[m] {
					names = append(names, m)
				}
			}
			owned = election.Owned(s.name, vips, names)
		}
		var err error
		s.th.do(func() { err = s.an.SetOwned(ifname, owned) })
		if err != nil {
			t.Errorf("%s: %v", s.name, err)
		}
	}
	go func() {
		defer close(s.done)
		apply()
		for {
			select {
			case <-s.stop:
				return
			case <-s.cluster.Changes():
				apply()
			case <-time.After(time.Second):
				// A missed signal costs at most this long.
				apply()
			}
		}
	}()
}

func (s *speaker) crash() {
	close(s.stop)
	<-s.done
	_ = s.cluster.Close()
	_ = s.an.Close()
}

// TestFailover crashes the owner of a VIP and measures how long until the
// client hears the new owner's gratuitous ARP: memberlist detection plus
// election plus announcement. Three speakers form the cluster (so the
// survivors keep a majority); two of them are eligible and answer on a
// bridge shared with the client.
func TestFailover(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces and raw sockets (make test-l2-unit runs as root)")
	}
	pid := os.Getpid()
	nsC := fmt.Sprintf("zh-l2c-%d", pid)
	nodes := []string{fmt.Sprintf("zh-l2n1-%d", pid), fmt.Sprintf("zh-l2n2-%d", pid)}
	for _, ns := range append([]string{nsC}, nodes...) {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	}
	run(t, "ip", "-n", nsC, "link", "add", "zh-br", "type", "bridge")
	run(t, "ip", "-n", nsC, "addr", "add", "192.0.2.254/24", "dev", "zh-br")
	run(t, "ip", "-n", nsC, "link", "set", "zh-br", "up")
	for i, ns := range nodes {
		port := fmt.Sprintf("zh-p%d", i+1)
		run(t, "ip", "-n", nsC, "link", "add", port, "type", "veth", "peer", "name", "zh-eth", "netns", ns)
		run(t, "ip", "-n", nsC, "link", "set", port, "master", "zh-br", "up")
		run(t, "ip", "-n", ns, "addr", "add", fmt.Sprintf("192.0.2.%d/24", i+1), "dev", "zh-eth")
		run(t, "ip", "-n", ns, "link", "set", "zh-eth", "up")
	}

	key := []byte("failover-test-key-0123456789")
	names := []string{"node-1", "node-2", "node-3"}
	eligible := map[string]bool{"node-1": true, "node-2": true}
	clusters := make([]*member.Cluster, len(names))
	for i, n := range names {
		c, err := member.New(member.Options{Name: n, BindAddr: "127.0.0.1", Key: key})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		c.SetExpected(names)
		clusters[i] = c
		if i > 0 {
			if _, err := c.Join([]string{clusters[0].Addr()}); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(clusters[0].Members()) != 3 || len(clusters[1].Members()) != 3 {
		if time.Now().After(deadline) {
			t.Fatal("cluster did not form within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A VIP node-1 owns while both eligible nodes live.
	var vip netip.Addr
	for i := 100; i < 200; i++ {
		v := netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", i))
		if election.Owner(v, []string{"node-1", "node-2"}) == "node-1" {
			vip = v
			break
		}
	}
	if !vip.IsValid() {
		t.Fatal("node-1 owns none of 100 VIPs")
	}

	speakers := make([]*speaker, 2)
	macs := make([]net.HardwareAddr, 2)
	for i, ns := range nodes {
		an, err := NewAnnouncer(Options{BurstInterval: 50 * time.Millisecond, RefreshInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		s := &speaker{name: names[i], th: newNSThread(t, ns), cluster: clusters[i], an: an}
		s.th.do(func() {
			var ifi *net.Interface
			if ifi, err = net.InterfaceByName("zh-eth"); err == nil {
				macs[i] = ifi.HardwareAddr
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		s.follow(t, "zh-eth", []netip.Addr{vip}, eligible)
		speakers[i] = s
	}
	t.Cleanup(func() {
		for _, s := range speakers {
			select {
			case <-s.stop:
			default:
				s.crash()
			}
		}
	})

	client := newNSThread(t, nsC)
	var (
		ac  *arp.Client
		err error
	)
	client.do(func() {
		var ifi *net.Interface
		if ifi, err = net.InterfaceByName("zh-br"); err == nil {
			ac, err = arp.Dial(ifi)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()

	// Before: node-1 answers.
	resolve := func() net.HardwareAddr {
		for range 20 {
			_ = ac.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if mac, err := ac.Resolve(vip); err == nil {
				return mac
			}
		}
		return nil
	}
	if got := resolve(); !equalMAC(got, macs[0]) {
		t.Fatalf("before the crash %s resolves to %v, want node-1's %v", vip, got, macs[0])
	}

	crashed := time.Now()
	speakers[0].crash()
	var heard time.Duration
	_ = ac.SetReadDeadline(time.Now().Add(5 * time.Second))
	for range 10000 {
		p, _, err := ac.Read()
		if err != nil {
			t.Fatalf("no gratuitous ARP from node-2 within 5s of node-1's crash: %v", err)
		}
		if p.Operation == arp.OperationRequest && p.SenderIP == vip && p.TargetIP == vip &&
			equalMAC(p.SenderHardwareAddr, macs[1]) {
			heard = time.Since(crashed)
			break
		}
	}
	if heard == 0 {
		t.Fatal("no gratuitous ARP from node-2")
	}
	t.Logf("owner crash to the new owner's gratuitous ARP: %v (probe 200ms, timeout 100ms, suspicion mult 2)", heard.Round(time.Millisecond))
	if got := resolve(); !equalMAC(got, macs[1]) {
		t.Fatalf("after the crash %s resolves to %v, want node-2's %v", vip, got, macs[1])
	}
}
