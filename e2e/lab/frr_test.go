package lab

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBGPDConfig(t *testing.T) {
	c := RouterConfig{ASN: 64512, RouterID: netip.MustParseAddr("198.51.100.1"), MaximumPaths: 4, BFD: true,
		LogDir: "/x", Neighbors: []Neighbor{
			{Addr: netip.MustParseAddr("198.51.100.11"), ASN: 64513, Name: "zh-node1"},
			{Addr: netip.MustParseAddr("2001:db8:100::11"), ASN: 64513, Name: "zh-node1"},
		}}
	got := bgpdConfig(c)
	for _, want := range []string{
		"router bgp 64512\n",
		" neighbor 198.51.100.11 remote-as 64513\n",
		" neighbor 198.51.100.11 bfd\n",
		" neighbor 198.51.100.11 bfd profile zerohop\n",
		" address-family ipv4 unicast\n  neighbor 198.51.100.11 activate\n  maximum-paths 4\n",
		" address-family ipv6 unicast\n  neighbor 2001:db8:100::11 activate\n  maximum-paths 4\n",
		"bgp bestpath as-path multipath-relax",
		" bgp graceful-restart\n update-delay 10 3\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("config lacks %q:\n%s", want, got)
		}
	}
	bfdd := bfddConfig(c)
	if !strings.Contains(bfdd, " profile zerohop\n  receive-interval 100\n  transmit-interval 100\n  detect-multiplier 3\n") {
		t.Errorf("bfdd config lacks the 100 ms x 3 profile:\n%s", bfdd)
	}
	c.BFD = false
	if strings.Contains(bgpdConfig(c), " bfd\n") {
		t.Error("BFD off but config enables it")
	}
}

// TestRestartConfig: a restarted bgpd gets the same configuration but for
// the longer read-only wait; a file without the start-up line is refused.
func TestRestartConfig(t *testing.T) {
	dir := t.TempDir()
	start := bgpdConfig(RouterConfig{ASN: 64512, RouterID: netip.MustParseAddr("198.51.100.1"), MaximumPaths: 4, LogDir: dir})
	conf := filepath.Join(dir, "bgpd.conf")
	if err := os.WriteFile(conf, []byte(start), 0o640); err != nil {
		t.Fatal(err)
	}
	out, err := RestartConfig(conf)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Replace(start, " update-delay 10 3\n", " update-delay 20 12\n", 1); string(b) != want || want == start {
		t.Errorf("restart config:\n%s\nwant:\n%s", b, want)
	}
	if err := os.WriteFile(conf, []byte("router bgp 64512\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := RestartConfig(conf); err == nil {
		t.Error("a config without update-delay: no error")
	}
}

func TestParseKernelRoute(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // nil = no route
	}{
		{"none", "", nil},
		{"empty list", "[]\n", nil},
		{"single", `[{"dst":"203.0.113.10","gateway":"198.51.100.11","dev":"eth-nodes","protocol":"bgp","metric":20,"flags":[]}]`, []string{"198.51.100.11"}},
		{"ecmp", `[{"dst":"203.0.113.10","nhid":30,"protocol":"bgp","metric":20,"flags":[],"nexthops":[{"gateway":"198.51.100.11","dev":"eth-nodes","weight":1,"flags":[]},{"gateway":"198.51.100.12","dev":"eth-nodes","weight":1,"flags":[]}]}]`, []string{"198.51.100.11", "198.51.100.12"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := parseKernelRoute([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				if r != nil {
					t.Fatalf("got %+v, want no route", r)
				}
				return
			}
			if r == nil || strings.Join(r.NextHops, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("got %+v, want next hops %v", r, tc.want)
			}
		})
	}
}

func TestParseNeighbors(t *testing.T) {
	in := `{"198.51.100.11":{"remoteAs":64513,"bgpState":"Established","peerBfdInfo":{"status":"Up"},
	"addressFamilyInfo":{"ipv4Unicast":{"acceptedPrefixCounter":2}}},
	"2001:db8:100::11":{"remoteAs":64513,"bgpState":"Active"}}`
	ns, err := parseNeighbors([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(ns) != 2 {
		t.Fatalf("got %d neighbors", len(ns))
	}
	v4 := ns[1] // sorted by address: "2001:..." < "198..."? no: '1' < '2'
	if ns[0].Addr == "198.51.100.11" {
		v4 = ns[0]
	}
	if v4.State != "Established" || v4.BFDStatus != "Up" || v4.PrefixesIn4 != 2 || v4.RemoteAS != 64513 {
		t.Errorf("v4 neighbor = %+v", v4)
	}
}
