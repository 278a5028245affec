package metallbimport

// handling says, for every spec field of every MetalLB kind and version the
// importer reads, what becomes of it in zerohop. Label selectors count as
// one field. TestFieldsMatchMetalLB walks MetalLB's own API types by
// reflection and fails on a field missing here (or listed here but gone
// from MetalLB), so a field MetalLB adds cannot be dropped silently;
// docs/import-metallb.md says the same for people.
var handling = map[string]map[string]string{
	"metallb.io/v1beta1 IPAddressPool": {
		"spec.addresses":                            "addresses, normalised; an unusable entry is left out (a smaller pool)",
		"spec.autoAssign":                           "autoAssign",
		"spec.avoidBuggyIPs":                        "avoidBuggyIPs",
		"spec.serviceAllocation.priority":           "serviceAllocation.priority; 0 is none; the serviceAllocation itself is kept even when empty, so the pool is tried before pools without one, as in MetalLB",
		"spec.serviceAllocation.namespaces":         "serviceAllocation.namespaces",
		"spec.serviceAllocation.namespaceSelectors": "serviceAllocation.namespaceSelectors; a selector that cannot be expressed leaves the pool out",
		"spec.serviceAllocation.serviceSelectors":   "serviceAllocation.serviceSelectors; a selector that cannot be expressed leaves the pool out",
	},
	"metallb.io/v1beta1 L2Advertisement": {
		"spec.ipAddressPools":                    "ipAddressPools",
		"spec.ipAddressPoolSelectors":            "ipAddressPoolSelectors; inexpressible: object left out",
		"spec.nodeSelectors":                     "nodeSelectors; inexpressible: object left out",
		"spec.interfaces":                        "interfaces; a non-Linux name is left out, and the object if none is left; empty means the VIP's subnet interface in zerohop, every interface in MetalLB (a note)",
		"spec.serviceSelectors":                  "serviceSelectors; inexpressible: object left out",
		"spec.preferredNodeSelectors.weight":     "preferredNodeSelectors[].weight; outside 1-100: that preference left out",
		"spec.preferredNodeSelectors.preference": "preferredNodeSelectors[].preference; inexpressible: that preference left out",
	},
	"metallb.io/v1beta1 BGPAdvertisement": {
		"spec.aggregationLength":      "aggregationLength; out of range: left out",
		"spec.aggregationLengthV6":    "aggregationLengthV6; out of range: left out",
		"spec.localPref":              "localPref; out of range: left out",
		"spec.asPathPrepend":          "no zerohop field: object left out (without the prepends its routes would draw traffic meant for other paths)",
		"spec.communities":            "communities; aliases resolved (alias names first, as MetalLB); one that cannot be carried leaves the object out (a route without it may travel further)",
		"spec.ipAddressPools":         "ipAddressPools",
		"spec.ipAddressPoolSelectors": "ipAddressPoolSelectors; inexpressible: object left out",
		"spec.nodeSelectors":          "nodeSelectors; inexpressible: object left out",
		"spec.peers":                  "peers",
		"spec.serviceSelectors":       "serviceSelectors; inexpressible, or with a non-default aggregation (MetalLB refuses that too): object left out",
	},
	"metallb.io/v1beta1 BGPPeer": {
		"spec.myASN":         "myASN; missing: peer left out",
		"spec.peerASN":       "peerASN; missing: peer left out",
		"spec.peerAddress":   "peerAddress; not an IP: peer left out",
		"spec.sourceAddress": "sourceAddress; not an IP of peerAddress's family: left out",
		"spec.peerPort":      "peerPort; 0 is unset",
		"spec.holdTime":      "holdTime, with keepaliveTime as MetalLB derives them; 0s is unset",
		"spec.keepaliveTime": "keepaliveTime (with holdTime three times it when only it is set); 0s is unset",
		"spec.routerID":      "routerID; not IPv4: left out",
		"spec.nodeSelectors": "nodeSelectors, operators canonicalised; inexpressible: peer left out",
		"spec.password":      "a basic-auth Secret in the speaker's namespace, referenced by passwordSecret",
		"spec.bfdProfile":    "bfdProfile",
		"spec.ebgpMultiHop":  "ebgpMultiHop; on an iBGP session: left out (refused by MetalLB and zerohop)",
	},
	"metallb.io/v1beta2 BGPPeer": {
		"spec.myASN":                    "myASN, unless localASN is set; missing: peer left out",
		"spec.peerASN":                  "peerASN",
		"spec.localASN":                 "myASN (zerohop's myASN is per session, MetalLB's localASN is what this session presents)",
		"spec.dynamicASN":               "internal: peerASN = the session's AS; external: dynamicASN external",
		"spec.peerAddress":              "peerAddress; not an IP: peer left out",
		"spec.interface":                "interface (BGP unnumbered); not a Linux name: peer left out",
		"spec.sourceAddress":            "sourceAddress; wrong family, or with interface: left out",
		"spec.peerPort":                 "peerPort",
		"spec.holdTime":                 "holdTime, as MetalLB derives it from keepaliveTime when unset; 0 (no hold timer) cannot be run by zerohop's GoBGP: left out",
		"spec.keepaliveTime":            "keepaliveTime; 0s or equal to the hold time: left out (a third of the hold time)",
		"spec.connectTime":              "connectTime; outside 1s-65535s: left out",
		"spec.routerID":                 "routerID; not IPv4: left out",
		"spec.nodeSelectors":            "nodeSelectors; inexpressible: peer left out",
		"spec.password":                 "a basic-auth Secret in the speaker's namespace, referenced by passwordSecret",
		"spec.passwordSecret.name":      "passwordSecret.name; the Secret is copied to the speaker's namespace when it is in the input",
		"spec.passwordSecret.namespace": "ignored, as MetalLB ignores it (it reads its own namespace); the reference points to the speaker's namespace",
		"spec.bfdProfile":               "bfdProfile",
		"spec.enableGracefulRestart":    "enableGracefulRestart",
		"spec.ebgpMultiHop":             "ebgpMultiHop; on an iBGP session: left out",
		"spec.vrf":                      "zerohop peers in the main routing table only: peer left out",
		"spec.disableMP":                "a note: zerohop offers both families on one session",
		"spec.dualStackAddressFamily":   "a note: zerohop offers both families on every session",
	},
	"metallb.io/v1beta1 BFDProfile": {
		"spec.receiveInterval":  "receiveInterval",
		"spec.transmitInterval": "transmitInterval",
		"spec.detectMultiplier": "detectMultiplier",
		"spec.echoInterval":     "no BFD echo in zerohop: left out",
		"spec.echoMode":         "no BFD echo in zerohop: true is left out",
		"spec.passiveMode":      "passiveMode",
		"spec.minimumTtl":       "minimumTtl",
	},
	"metallb.io/v1beta1 Community": {
		"spec.communities.name":  "resolved into the BGPAdvertisements that use the alias",
		"spec.communities.value": "resolved into the BGPAdvertisements that use the alias",
	},
}

// notTranslated are the MetalLB kinds that are status, not configuration:
// reported and not written.
var notTranslated = map[string]string{
	"ServiceL2Status":    "MetalLB's record of which node announces a Service",
	"ServiceBGPStatus":   "MetalLB's record of which peers a Service is announced to",
	"ConfigurationState": "MetalLB's record of whether its configuration loaded",
}
