package v1alpha1_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/zerohop/zerohop/internal/apiserver"
)

// TestCRDValidation sends good and bad objects to a real API server and
// checks that the CRD schema alone accepts or refuses each, and that a
// refusal names the offending field.
func TestCRDValidation(t *testing.T) {
	srv := apiserver.ForTest(t)
	dyn, err := dynamic.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		kind string
		spec string
		// wantField is empty for objects that must be accepted, else a
		// substring of the refusal that names the field.
		wantField string
	}{
		// IPAddressPool
		{"pool v4 cidr", "IPAddressPool", `addresses: ["192.0.2.0/24"]`, ""},
		{"pool v6 cidr", "IPAddressPool", `addresses: ["2001:db8::/64"]`, ""},
		{"pool dual stack", "IPAddressPool", `addresses: ["192.0.2.0/28", "2001:db8:1::/120"]`, ""},
		{"pool v4 range", "IPAddressPool", `addresses: ["192.0.2.10-192.0.2.20"]`, ""},
		{"pool v4 range single", "IPAddressPool", `addresses: ["192.0.2.10-192.0.2.10"]`, ""},
		{"pool v4 range spaces", "IPAddressPool", `addresses: ["192.0.2.10 - 192.0.2.20"]`, ""},
		{"pool v6 range", "IPAddressPool", `addresses: ["2001:db8::10-2001:db8::1:0"]`, ""},
		{"pool v6 range compressed ends", "IPAddressPool", `addresses: ["2001:db8::-2001:db8:0:0:ffff::"]`, ""},
		{"pool with allocation", "IPAddressPool", `{addresses: ["198.51.100.0/24"], autoAssign: false, avoidBuggyIPs: true, serviceAllocation: {priority: 10, namespaces: [a, b], namespaceSelectors: [{matchLabels: {team: x}}], serviceSelectors: [{matchExpressions: [{key: tier, operator: In, values: [web]}]}]}}`, ""},
		{"pool no addresses", "IPAddressPool", `addresses: []`, "spec.addresses"},
		{"pool missing addresses", "IPAddressPool", `autoAssign: true`, "spec.addresses"},
		{"pool garbage address", "IPAddressPool", `addresses: ["hello"]`, "spec.addresses[0]"},
		{"pool bad cidr", "IPAddressPool", `addresses: ["192.0.2.0/33"]`, "spec.addresses[0]"},
		{"pool bare ip", "IPAddressPool", `addresses: ["192.0.2.0/24", "192.0.2.7"]`, "spec.addresses[1]"},
		{"pool range mixed family", "IPAddressPool", `addresses: ["192.0.2.1-2001:db8::1"]`, "spec.addresses[0]"},
		{"pool v4 range reversed", "IPAddressPool", `addresses: ["192.0.2.20-192.0.2.10"]`, "spec.addresses[0]"},
		{"pool v4 range reversed high octet", "IPAddressPool", `addresses: ["192.0.3.0-192.0.2.255"]`, "spec.addresses[0]"},
		{"pool range three parts", "IPAddressPool", `addresses: ["192.0.2.1-192.0.2.2-192.0.2.3"]`, "spec.addresses[0]"},
		{"pool range half", "IPAddressPool", `addresses: ["192.0.2.1-"]`, "spec.addresses[0]"},
		{"pool negative priority", "IPAddressPool", `{addresses: ["192.0.2.0/24"], serviceAllocation: {priority: -1}}`, "spec.serviceAllocation.priority"},
		{"pool bad selector operator", "IPAddressPool", `{addresses: ["192.0.2.0/24"], serviceAllocation: {serviceSelectors: [{matchExpressions: [{key: a, operator: Equals, values: [b]}]}]}}`, "spec.serviceAllocation.serviceSelectors"},
		{"pool In without values", "IPAddressPool", `{addresses: ["192.0.2.0/24"], serviceAllocation: {namespaceSelectors: [{matchExpressions: [{key: a, operator: In}]}]}}`, "spec.serviceAllocation.namespaceSelectors"},
		{"pool private v4", "IPAddressPool", `addresses: ["10.0.0.0/8", "2001:db8::/32"]`, ""},
		{"pool loopback", "IPAddressPool", `addresses: ["192.0.2.0/24", "127.0.0.0/8"]`, "spec.addresses[1]"},
		{"pool inside loopback", "IPAddressPool", `addresses: ["127.1.2.0/24"]`, "spec.addresses[0]"},
		{"pool spanning loopback", "IPAddressPool", `addresses: ["64.0.0.0/2"]`, "spec.addresses[0]"},
		{"pool v4 everything", "IPAddressPool", `addresses: ["0.0.0.0/0"]`, "spec.addresses[0]"},
		{"pool v6 everything", "IPAddressPool", `addresses: ["::/0"]`, "spec.addresses[0]"},
		{"pool multicast", "IPAddressPool", `addresses: ["224.0.0.0/4"]`, "spec.addresses[0]"},
		{"pool v6 multicast", "IPAddressPool", `addresses: ["ff05::/64"]`, "spec.addresses[0]"},
		{"pool link-local", "IPAddressPool", `addresses: ["169.254.10.0/24"]`, "spec.addresses[0]"},
		{"pool v6 link-local", "IPAddressPool", `addresses: ["fe80::/64"]`, "spec.addresses[0]"},
		{"pool broadcast", "IPAddressPool", `addresses: ["255.255.255.255/32"]`, "spec.addresses[0]"},
		{"pool v6 loopback", "IPAddressPool", `addresses: ["::1/128"]`, "spec.addresses[0]"},
		{"pool v4-mapped", "IPAddressPool", `addresses: ["::ffff:192.0.2.0/120"]`, "spec.addresses[0]"},
		{"pool range loopback", "IPAddressPool", `addresses: ["127.0.0.1-127.0.0.9"]`, "spec.addresses[0]"},
		{"pool range to broadcast", "IPAddressPool", `addresses: ["255.255.255.0-255.255.255.255"]`, "spec.addresses[0]"},
		{"pool range v6 multicast", "IPAddressPool", `addresses: ["ff02::1-ff02::9"]`, "spec.addresses[0]"},
		{"pool range v6 unspecified", "IPAddressPool", `addresses: ["::-::9"]`, "spec.addresses[0]"},
		{"pool Exists with values", "IPAddressPool", `{addresses: ["192.0.2.0/24"], serviceAllocation: {namespaceSelectors: [{matchExpressions: [{key: a, operator: Exists, values: [x]}]}]}}`, "spec.serviceAllocation.namespaceSelectors"},

		// BGPPeer
		{"peer minimal", "BGPPeer", `{myASN: 64512, peerASN: 64513, peerAddress: 192.0.2.1}`, ""},
		{"peer full v6", "BGPPeer", `{myASN: 4294967295, peerASN: 1, peerAddress: "2001:db8::1", sourceAddress: "2001:db8::2", peerPort: 1179, routerID: 192.0.2.9, holdTime: 9s, keepaliveTime: 3s, connectTime: 5s, ebgpMultiHop: true, passwordSecret: {name: s}, bfdProfile: fast, enableGracefulRestart: true, nodeSelectors: [{matchLabels: {rack: a}}]}`, ""},
		{"peer hold zero", "BGPPeer", `{myASN: 64512, peerASN: 64513, peerAddress: 192.0.2.1, holdTime: 0s}`, ""},
		{"peer asn zero", "BGPPeer", `{myASN: 0, peerASN: 64513, peerAddress: 192.0.2.1}`, "spec.myASN"},
		{"peer asn too big", "BGPPeer", `{myASN: 64512, peerASN: 4294967296, peerAddress: 192.0.2.1}`, "spec.peerASN"},
		{"peer address not ip", "BGPPeer", `{myASN: 64512, peerASN: 64513, peerAddress: router.example}`, "spec.peerAddress"},
		{"peer v6 link-local", "BGPPeer", `{myASN: 64512, peerASN: 64513, peerAddress: "fe80::1"}`, ""},
		{"peer unspecified", "BGPPeer", `{myASN: 64512, peerASN: 64513, peerAddress: 0.0.0.0}`, "spec.peerAddress"},
		{"peer v6 unspecified", "BGPPeer", `{myASN: 64512, peerASN: 64513, peerAddress: "::"}`, "spec.peerAddress"},
		{"peer loopback", "BGPPeer", `{myASN: 64512, peerASN: 64513, peerAddress: 127.0.0.1}`, "spec.peerAddress"},
		{"peer v6 loopback", "BGPPeer", `{myASN: 64512, peerASN: 64513, peerAddress: "::1"}`, "spec.peerAddress"},
		{"peer multicast", "BGPPeer", `{myASN: 64512, peerASN: 64513, peerAddress: 224.0.0.5}`, "spec.peerAddress"},
		{"peer v6 multicast", "BGPPeer", `{myASN: 64512, peerASN: 64513, peerAddress: "ff02::5"}`, "spec.peerAddress"},
		{"peer broadcast", "BGPPeer", `{myASN: 64512, peerASN: 64513, peerAddress: 255.255.255.255}`, "spec.peerAddress"},
		{"peer port zero", "BGPPeer", `{myASN: 64512, peerASN: 64513, peerAddress: 192.0.2.1, peerPort: 0}`, "spec.peerPort"},
		{"peer port too big", "BGPPeer", `{myASN: 64512, peerASN: 64513, peerAddress: 192.0.2.1, peerPort: 65536}`, "spec.peerPort"},
		{"peer hold too short", "BGPPeer", `{myASN: 64512, peerASN: 64513, peerAddress: 192.0.2.1, holdTime: 2s}`, "spec.holdTime"},
		{"peer keepalive not below hold", "BGPPeer", `{myASN: 64512, peerASN: 64513, peerAddress: 192.0.2.1, holdTime: 9s, keepaliveTime: 9s}`, "spec.keepaliveTime"},
		{"peer keepalive above default hold", "BGPPeer", `{myASN: 64512, peerASN: 64513, peerAddress: 192.0.2.1, keepaliveTime: 2m}`, "spec.keepaliveTime"},
		{"peer hold not a duration", "BGPPeer", `{myASN: 64512, peerASN: 64513, peerAddress: 192.0.2.1, holdTime: soon}`, "spec.holdTime"},
		{"peer router id v6", "BGPPeer", `{myASN: 64512, peerASN: 64513, peerAddress: 192.0.2.1, routerID: "2001:db8::1"}`, "spec.routerID"},
		{"peer source family", "BGPPeer", `{myASN: 64512, peerASN: 64513, peerAddress: 192.0.2.1, sourceAddress: "2001:db8::1"}`, "spec.sourceAddress"},
		{"peer missing asn", "BGPPeer", `{peerASN: 64513, peerAddress: 192.0.2.1}`, "spec.myASN"},
		{"peer bad node selector", "BGPPeer", `{myASN: 64512, peerASN: 64513, peerAddress: 192.0.2.1, nodeSelectors: [{matchExpressions: [{key: a, operator: NotIn}]}]}`, "spec.nodeSelectors"},
		{"peer dynamic external", "BGPPeer", `{myASN: 64512, dynamicASN: external, peerAddress: 192.0.2.1, ebgpMultiHop: true}`, ""},
		{"peer dynamic internal", "BGPPeer", `{myASN: 64512, dynamicASN: internal, peerAddress: 192.0.2.1}`, ""},
		{"peer dynamic and peerASN", "BGPPeer", `{myASN: 64512, peerASN: 64513, dynamicASN: external, peerAddress: 192.0.2.1}`, "spec.peerASN"},
		{"peer neither peerASN nor dynamic", "BGPPeer", `{myASN: 64512, peerAddress: 192.0.2.1}`, "spec.peerASN"},
		{"peer dynamic unknown mode", "BGPPeer", `{myASN: 64512, dynamicASN: any, peerAddress: 192.0.2.1}`, "spec.dynamicASN"},
		{"peer unnumbered", "BGPPeer", `{myASN: 64512, peerASN: 64513, interface: swp1, bfdProfile: fast}`, ""},
		{"peer address and interface", "BGPPeer", `{myASN: 64512, peerASN: 64513, peerAddress: 192.0.2.1, interface: swp1}`, "spec.peerAddress"},
		{"peer neither address nor interface", "BGPPeer", `{myASN: 64512, peerASN: 64513}`, "spec.peerAddress"},
		{"peer interface not a name", "BGPPeer", `{myASN: 64512, peerASN: 64513, interface: "eth0:1"}`, "spec.interface"},
		{"peer interface too long", "BGPPeer", `{myASN: 64512, peerASN: 64513, interface: uplink-to-the-tor}`, "spec.interface"},
		{"peer unnumbered with source", "BGPPeer", `{myASN: 64512, peerASN: 64513, interface: swp1, sourceAddress: 192.0.2.9}`, "spec.sourceAddress"},
		{"peer multihop iBGP", "BGPPeer", `{myASN: 64512, peerASN: 64512, peerAddress: 192.0.2.1, ebgpMultiHop: true}`, "spec.ebgpMultiHop"},
		{"peer multihop dynamic internal", "BGPPeer", `{myASN: 64512, dynamicASN: internal, peerAddress: 192.0.2.1, ebgpMultiHop: true}`, "spec.ebgpMultiHop"},
		{"peer iBGP without multihop", "BGPPeer", `{myASN: 64512, peerASN: 64512, peerAddress: 192.0.2.1, ebgpMultiHop: false}`, ""},

		// BGPAdvertisement
		{"bgpadv empty", "BGPAdvertisement", `{}`, ""},
		{"bgpadv full", "BGPAdvertisement", `{aggregationLength: 24, aggregationLengthV6: 64, localPref: 100, communities: ["65000:100", "large:65000:1:2", "no-export"], ipAddressPools: [a], ipAddressPoolSelectors: [{matchLabels: {tier: gold}}], nodeSelectors: [{matchLabels: {rack: a}}], peers: [r1], weightedECMP: true}`, ""},
		{"bgpadv aggregation too long", "BGPAdvertisement", `{aggregationLength: 33}`, "spec.aggregationLength"},
		{"bgpadv aggregation v6 too long", "BGPAdvertisement", `{aggregationLengthV6: 129}`, "spec.aggregationLengthV6"},
		{"bgpadv aggregation negative", "BGPAdvertisement", `{aggregationLength: -1}`, "spec.aggregationLength"},
		{"bgpadv bad community", "BGPAdvertisement", `{communities: ["65536:1"]}`, "spec.communities[0]"},
		{"bgpadv bad community text", "BGPAdvertisement", `{communities: ["65000:1", "nope"]}`, "spec.communities[1]"},
		{"bgpadv bad pool selector", "BGPAdvertisement", `{ipAddressPoolSelectors: [{matchExpressions: [{key: a, operator: Like, values: [b]}]}]}`, "spec.ipAddressPoolSelectors"},
		{"bgpadv service selectors", "BGPAdvertisement", `{ipAddressPools: [a], localPref: 200, serviceSelectors: [{matchLabels: {tier: gold}}, {matchExpressions: [{key: app, operator: Exists}]}], aggregationLength: 32, aggregationLengthV6: 128}`, ""},
		{"bgpadv service selectors with aggregation", "BGPAdvertisement", `{serviceSelectors: [{matchLabels: {tier: gold}}], aggregationLength: 24}`, "spec.serviceSelectors"},
		{"bgpadv service selectors with v6 aggregation", "BGPAdvertisement", `{serviceSelectors: [{matchLabels: {tier: gold}}], aggregationLengthV6: 64}`, "spec.serviceSelectors"},
		{"bgpadv aggregation without service selectors", "BGPAdvertisement", `{serviceSelectors: [], aggregationLength: 24}`, ""},
		{"bgpadv bad service selector", "BGPAdvertisement", `{serviceSelectors: [{matchExpressions: [{key: a, operator: In}]}]}`, "spec.serviceSelectors"},

		// L2Advertisement
		{"l2adv full", "L2Advertisement", `{ipAddressPools: [a], interfaces: [eth0, bond0.100], nodeSelectors: [{matchLabels: {rack: a}}]}`, ""},
		{"l2adv bad interface", "L2Advertisement", `{interfaces: ["eth/0"]}`, "spec.interfaces[0]"},
		{"l2adv long interface", "L2Advertisement", `{interfaces: ["abcdefghijklmnopq"]}`, "spec.interfaces[0]"},
		{"l2adv bad node selector", "L2Advertisement", `{nodeSelectors: [{matchExpressions: [{key: a, operator: DoesNotExist, values: [b]}]}]}`, "spec.nodeSelectors"},
		{"l2adv service selectors and preferences", "L2Advertisement", `{serviceSelectors: [{matchLabels: {app: dns}}], preferredNodeSelectors: [{weight: 100, preference: {matchLabels: {kubernetes.io/hostname: edge-1}}}, {weight: 1, preference: {}}]}`, ""},
		{"l2adv bad service selector", "L2Advertisement", `{serviceSelectors: [{matchExpressions: [{key: "-a", operator: Exists}]}]}`, "spec.serviceSelectors"},
		{"l2adv preference weight zero", "L2Advertisement", `{preferredNodeSelectors: [{weight: 0, preference: {}}]}`, "spec.preferredNodeSelectors[0].weight"},
		{"l2adv preference weight too big", "L2Advertisement", `{preferredNodeSelectors: [{weight: 101, preference: {}}]}`, "spec.preferredNodeSelectors[0].weight"},
		{"l2adv preference without weight", "L2Advertisement", `{preferredNodeSelectors: [{preference: {matchLabels: {a: b}}}]}`, "spec.preferredNodeSelectors[0].weight"},
		{"l2adv preference without selector", "L2Advertisement", `{preferredNodeSelectors: [{weight: 5}]}`, "spec.preferredNodeSelectors[0].preference"},
		{"l2adv bad preference selector", "L2Advertisement", `{preferredNodeSelectors: [{weight: 5, preference: {matchExpressions: [{key: a, operator: Gt, values: ["1"]}]}}]}`, "spec.preferredNodeSelectors[0].preference"},

		// BFDProfile
		{"bfd defaults", "BFDProfile", `{}`, ""},
		{"bfd full", "BFDProfile", `{receiveInterval: 10, transmitInterval: 60000, detectMultiplier: 255, passiveMode: true, minimumTtl: 254, echoMode: false}`, ""},
		{"bfd rx too fast", "BFDProfile", `{receiveInterval: 9}`, "spec.receiveInterval"},
		{"bfd tx too slow", "BFDProfile", `{transmitInterval: 60001}`, "spec.transmitInterval"},
		{"bfd multiplier one", "BFDProfile", `{detectMultiplier: 1}`, "spec.detectMultiplier"},
		{"bfd ttl zero", "BFDProfile", `{minimumTtl: 0}`, "spec.minimumTtl"},
		{"bfd echo refused", "BFDProfile", `{echoMode: true}`, "spec.echoMode"},
	}

	ctx := context.Background()
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var spec map[string]any
			if err := yaml.Unmarshal([]byte(wrapSpec(tc.spec)), &spec); err != nil {
				t.Fatalf("test spec: %v", err)
			}
			obj := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "zerohop.io/v1alpha1",
				"kind":       tc.kind,
				"metadata":   map[string]any{"name": fmt.Sprintf("case-%d", i)},
				"spec":       spec["spec"],
			}}
			gvr := schema.GroupVersionResource{Group: "zerohop.io", Version: "v1alpha1", Resource: strings.ToLower(tc.kind) + "s"}
			_, err := dyn.Resource(gvr).Create(ctx, obj, metav1.CreateOptions{})
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("valid %s refused: %v", tc.kind, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("invalid %s accepted; want refusal naming %s", tc.kind, tc.wantField)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("want an Invalid error naming %s, got %v", tc.wantField, err)
			}
			if !strings.Contains(err.Error(), tc.wantField) {
				t.Fatalf("refusal does not name %s: %v", tc.wantField, err)
			}
		})
	}
}

// wrapSpec turns a one-line spec into a document with a spec key, so the
// table stays short.
func wrapSpec(s string) string {
	if strings.HasPrefix(s, "{") {
		return "spec: " + s
	}
	return "spec: {" + s + "}"
}
