// Package metallbimport turns MetalLB's metallb.io configuration
// (IPAddressPool, L2Advertisement, BGPAdvertisement, BGPPeer v1beta1 and
// v1beta2, BFDProfile, Community) and the MetalLB annotations of Services
// into zerohop objects, and accounts for every field it could not carry
// over. It never widens what the source selected: an object whose node,
// pool or Service selection cannot be expressed exactly is left out and
// reported, rather than written with a looser selection.
package metallbimport

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/controller"
	"github.com/zerohop/zerohop/controller/ipam"
)

// Options tune the conversion.
type Options struct {
	// SecretNamespace is where the Secrets made from BGPPeers' plain
	// passwords go: the speaker's namespace. Default zerohop-system.
	SecretNamespace string
	// PinIPs writes the IPs in a LoadBalancer Service's status (MetalLB's
	// allocation) as its zerohop.io/loadBalancerIPs request when it has
	// none, so that the Service keeps its address under zerohop.
	PinIPs bool
}

// Result is a successful conversion.
type Result struct {
	// Objects are the zerohop objects (and Secrets and Services) in input
	// order, ready to be written as YAML.
	Objects []any
	Report  Report
}

// Convert reads MetalLB manifests from r. It fails only on input that is
// not a well-formed manifest (YAML syntax, a missing kind or name, a field
// of the wrong type), naming the document, object and field; everything
// that is well formed but has no zerohop equivalent is reported instead.
func Convert(r io.Reader, opts Options) (*Result, error) {
	if opts.SecretNamespace == "" {
		opts.SecretNamespace = "zerohop-system"
	}
	docs, err := readDocuments(r)
	var errs []error
	if err != nil {
		// Decode the well-formed documents too, so one run names every
		// problem.
		errs = append(errs, err)
	}
	c := &converter{opts: opts, seen: map[string]Source{}, aliases: map[string]string{}, bfd: map[string]bool{}}
	// The first pass decodes every document, so that references between
	// objects (community aliases, BFD profiles) resolve whatever the order.
	parsed := make([]parsedDoc, len(docs))
	for i, d := range docs {
		p, err := c.decode(d)
		if err != nil {
			errs = append(errs, fmt.Errorf("document %s (%s %s): %w", d.src.Document, d.src.Kind, qualified(d.src), err))
			continue
		}
		parsed[i] = p
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	res := &Result{}
	for _, p := range parsed {
		e := Entry{Source: p.doc.src}
		objs := c.convert(p, &e)
		for _, o := range objs {
			e.Outputs = append(e.Outputs, outputName(o))
		}
		if e.Issues == nil {
			e.Issues = []Issue{}
		}
		if e.Outputs == nil {
			e.Outputs = []string{}
		}
		res.Objects = append(res.Objects, objs...)
		res.Report.Entries = append(res.Report.Entries, e)
	}
	res.Report.Objects = len(docs)
	res.Report.Written = len(res.Objects)
	return res, nil
}

func qualified(s Source) string {
	if s.Name == "" {
		return s.Namespace + "/(no name)"
	}
	if s.Namespace != "" {
		return s.Namespace + "/" + s.Name
	}
	return s.Name
}

// parsedDoc is a document with its spec decoded into the struct of its
// kind and version (nil for kinds that are passed through or skipped).
type parsedDoc struct {
	doc  document
	spec any
}

type converter struct {
	opts Options
	// seen maps zerohop kind/name to the source that took it: zerohop's
	// kinds are cluster-scoped, MetalLB's are namespaced.
	seen map[string]Source
	// aliases are the Community objects' names, resolved in
	// BGPAdvertisement communities.
	aliases map[string]string
	// bfd holds the BFDProfile names in the input.
	bfd map[string]bool
}

const metallbGroup = "metallb.io"

// specType returns the input struct for a MetalLB kind and version, or nil
// when this importer does not translate it.
func specType(apiVersion, kind string) any {
	group, version, _ := strings.Cut(apiVersion, "/")
	if group != metallbGroup {
		return nil
	}
	switch {
	case kind == "IPAddressPool" && version == "v1beta1":
		return &poolSpec{}
	case kind == "L2Advertisement" && version == "v1beta1":
		return &l2AdvertisementSpec{}
	case kind == "BGPAdvertisement" && version == "v1beta1":
		return &bgpAdvertisementSpec{}
	case kind == "BGPPeer" && version == "v1beta1":
		return &peerV1beta1{}
	case kind == "BGPPeer" && version == "v1beta2":
		return &peerV1beta2{}
	case kind == "BFDProfile" && version == "v1beta1":
		return &bfdProfileSpec{}
	case kind == "Community" && version == "v1beta1":
		return &communitySpec{}
	}
	return nil
}

func (c *converter) decode(d document) (parsedDoc, error) {
	p := parsedDoc{doc: d}
	if d.src.Kind == "Service" && d.src.APIVersion == "v1" {
		var svc corev1.Service
		if err := decodeField(map[string]any{"service": d.raw}, "service", &svc); err != nil {
			return p, errors.New(strings.TrimPrefix(err.Error(), "service."))
		}
		p.spec = &svc
		return p, nil
	}
	spec := specType(d.src.APIVersion, d.src.Kind)
	if spec == nil {
		return p, nil
	}
	if err := decodeField(d.raw, "spec", spec); err != nil {
		return p, err
	}
	p.spec = spec
	switch s := spec.(type) {
	case *communitySpec:
		for i, a := range s.Communities {
			if a.Name == "" {
				return p, fmt.Errorf("spec.communities[%d].name: missing", i)
			}
			c.aliases[a.Name] = a.Value
		}
	case *bfdProfileSpec:
		c.bfd[d.meta.Name] = true
	}
	return p, nil
}

func (c *converter) convert(p parsedDoc, e *Entry) []any {
	d := p.doc
	group, _, _ := strings.Cut(d.src.APIVersion, "/")
	if svc, ok := p.spec.(*corev1.Service); ok {
		return c.service(d, svc, e)
	}
	if p.spec == nil {
		switch {
		case group == metallbGroup:
			e.untranslated("", "%s %s has no zerohop equivalent in this importer; not written", d.src.APIVersion, d.src.Kind)
		case d.src.Kind == "ConfigMap" && d.src.Name == "config":
			e.untranslated("", "MetalLB's legacy ConfigMap configuration is not read: convert it to metallb.io objects first (MetalLB's configmaptocrs), then import those")
		default:
			e.untranslated("", "not a MetalLB configuration object or a Service; not written")
		}
		return nil
	}
	for _, f := range unknownFields("spec", d.raw["spec"], reflect.TypeOf(p.spec)) {
		e.untranslated(f, "not a field of MetalLB %s %s known to this importer; not translated", d.src.APIVersion, d.src.Kind)
	}
	if _, ok := p.spec.(*communitySpec); ok {
		c.metadata(d, e)
		e.note("", "zerohop has no Community kind: its aliases are resolved into the communities of the BGPAdvertisements that use them")
		return nil
	}
	om := c.metadata(d, e)
	var obj any
	switch s := p.spec.(type) {
	case *poolSpec:
		obj = c.pool(om, s, e)
	case *l2AdvertisementSpec:
		obj = c.l2(om, s, e)
	case *bgpAdvertisementSpec:
		obj = c.bgpAdvertisement(om, s, e)
	case *peerV1beta1:
		return c.peer(om, d, upgradePeer(s), e)
	case *peerV1beta2:
		return c.peer(om, d, s, e)
	case *bfdProfileSpec:
		obj = c.bfdProfile(om, s, e)
	}
	if obj == nil || !c.claim(d, obj, e) {
		return nil
	}
	return []any{obj}
}

// claim records the cluster-scoped name an object takes; a second MetalLB
// object of the same kind and name (from another namespace) is left out.
func (c *converter) claim(d document, obj any, e *Entry) bool {
	key := outputName(obj)
	if first, ok := c.seen[key]; ok {
		e.untranslated("metadata.name", "zerohop's kinds are cluster-scoped and %s already comes from %s; not written (rename one of them)", key, first)
		return false
	}
	c.seen[key] = d.src
	return true
}

// metadata carries name, labels and annotations over; the namespace goes,
// as zerohop's kinds are cluster-scoped.
func (c *converter) metadata(d document, e *Entry) metav1.ObjectMeta {
	m := d.meta
	om := metav1.ObjectMeta{Name: m.Name, Labels: m.Labels}
	for k, v := range m.Annotations {
		if k == corev1.LastAppliedConfigAnnotation {
			continue // kubectl's record of the MetalLB object, stale here
		}
		if om.Annotations == nil {
			om.Annotations = map[string]string{}
		}
		om.Annotations[k] = v
	}
	if m.GenerateName != "" {
		e.untranslated("metadata.generateName", "not carried over; the object keeps metadata.name %q", m.Name)
	}
	if len(m.OwnerReferences) > 0 {
		e.untranslated("metadata.ownerReferences", "owners are objects of the MetalLB installation; not carried over")
	}
	if len(m.Finalizers) > 0 {
		e.untranslated("metadata.finalizers", "MetalLB's finalizers mean nothing to zerohop; not carried over")
	}
	// status is MetalLB's record of what it did, not configuration.
	return om
}

func typeMeta(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: kind}
}

// --- IPAddressPool ---

func (c *converter) pool(om metav1.ObjectMeta, s *poolSpec, e *Entry) any {
	p := &v1alpha1.IPAddressPool{TypeMeta: typeMeta("IPAddressPool"), ObjectMeta: om}
	for i, a := range s.Addresses {
		field := fmt.Sprintf("spec.addresses[%d]", i)
		addr, note, err := poolAddress(a)
		if err != nil {
			e.untranslated(field, "%v; entry left out", err)
			continue
		}
		if note != "" {
			e.note(field, "%s", note)
		}
		if slices.Contains(p.Spec.Addresses, v1alpha1.Address(addr)) {
			e.note(field, "duplicate of an earlier entry; written once")
			continue
		}
		p.Spec.Addresses = append(p.Spec.Addresses, v1alpha1.Address(addr))
	}
	if len(p.Spec.Addresses) > 256 {
		e.untranslated("spec.addresses", "%d entries, zerohop takes at most 256; entries after the 256th left out", len(p.Spec.Addresses))
		p.Spec.Addresses = p.Spec.Addresses[:256]
	}
	if len(p.Spec.Addresses) == 0 {
		e.untranslated("spec.addresses", "no usable address; pool not written")
		return nil
	}
	p.Spec.AutoAssign = s.AutoAssign
	p.Spec.AvoidBuggyIPs = s.AvoidBuggyIPs
	if sa := s.ServiceAllocation; sa != nil {
		out := &v1alpha1.ServiceAllocation{}
		if sa.Priority != nil {
			switch {
			case *sa.Priority < 0 || *sa.Priority > 1<<31-1:
				e.untranslated("spec.serviceAllocation.priority", "%d is outside 0..2147483647; left out (the pool comes after every prioritised pool)", *sa.Priority)
			case *sa.Priority == 0:
				// MetalLB's 0 is "no priority", as is zerohop's omitted field.
			default:
				out.Priority = int32(*sa.Priority)
			}
		}
		out.Namespaces = dedup(sa.Namespaces, "spec.serviceAllocation.namespaces", e)
		var ok1, ok2 bool
		out.NamespaceSelectors, ok1 = selectors(sa.NamespaceSelectors, "spec.serviceAllocation.namespaceSelectors", e)
		out.ServiceSelectors, ok2 = selectors(sa.ServiceSelectors, "spec.serviceAllocation.serviceSelectors", e)
		if !ok1 || !ok2 {
			e.untranslated("", "a serviceAllocation selector cannot be expressed exactly; pool not written, as a looser one would hand its addresses to Services it did not serve")
			return nil
		}
		if !reflect.DeepEqual(*out, v1alpha1.ServiceAllocation{}) {
			p.Spec.ServiceAllocation = out
		}
	}
	return p
}

// poolAddress normalises one MetalLB address entry into zerohop's form.
// MetalLB parses CIDRs with net.ParseCIDR, which masks host bits; zerohop
// refuses them (a likely typo), so the masked prefix is written, which
// covers the addresses MetalLB used.
func poolAddress(a string) (addr, note string, err error) {
	s := strings.TrimSpace(a)
	if lo, hi, ok := strings.Cut(s, "-"); ok {
		s = strings.TrimSpace(lo) + "-" + strings.TrimSpace(hi)
	} else if !strings.Contains(s, "/") {
		ip, perr := netip.ParseAddr(s)
		if perr != nil {
			return "", "", fmt.Errorf("%q is neither a CIDR, a range nor an address", a)
		}
		s = netip.PrefixFrom(ip, ip.BitLen()).String()
		note = fmt.Sprintf("single address %q written as %s", a, s)
	} else if p, perr := netip.ParsePrefix(s); perr == nil && p.Masked() != p {
		s = p.Masked().String()
		note = fmt.Sprintf("%q has host bits set; MetalLB masks them, zerohop refuses them: written as %s", a, s)
	}
	if _, err := ipam.ParseRange(s); err != nil {
		return "", "", err
	}
	if len(s) > 90 {
		return "", "", fmt.Errorf("%q is longer than zerohop's 90 characters", a)
	}
	if s != a && note == "" {
		note = fmt.Sprintf("%q written as %q", a, s)
	}
	return s, note, nil
}

// --- selectors ---

// selectors converts label selectors; ok is false when one of them cannot
// be expressed exactly, and then the caller drops the whole object.
func selectors(in []selector, field string, e *Entry) ([]v1alpha1.LabelSelector, bool) {
	var out []v1alpha1.LabelSelector
	ok := true
	for i, s := range in {
		ls, err := labelSelector(s)
		if err != nil {
			e.untranslated(fmt.Sprintf("%s[%d]", field, i), "%v", err)
			ok = false
			continue
		}
		out = append(out, ls)
	}
	if len(out) > 16 {
		e.untranslated(field, "%d selectors, zerohop takes at most 16", len(out))
		ok = false
	}
	return out, ok
}

var operators = map[string]metav1.LabelSelectorOperator{
	"in":           metav1.LabelSelectorOpIn,
	"notin":        metav1.LabelSelectorOpNotIn,
	"exists":       metav1.LabelSelectorOpExists,
	"doesnotexist": metav1.LabelSelectorOpDoesNotExist,
}

func labelSelector(s selector) (v1alpha1.LabelSelector, error) {
	out := v1alpha1.LabelSelector{MatchLabels: s.MatchLabels}
	for k, v := range s.MatchLabels {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return out, fmt.Errorf("matchLabels key %q: %s", k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return out, fmt.Errorf("matchLabels[%s] value %q: %s", k, v, strings.Join(errs, "; "))
		}
	}
	for j, r := range s.MatchExpressions {
		// MetalLB's v1beta1 node selectors take the operator in any case.
		op, ok := operators[strings.ToLower(r.Operator)]
		if !ok {
			return out, fmt.Errorf("matchExpressions[%d]: operator %q is not one of In, NotIn, Exists, DoesNotExist", j, r.Operator)
		}
		if errs := validation.IsQualifiedName(r.Key); len(errs) > 0 {
			return out, fmt.Errorf("matchExpressions[%d]: key %q: %s", j, r.Key, strings.Join(errs, "; "))
		}
		needsValues := op == metav1.LabelSelectorOpIn || op == metav1.LabelSelectorOpNotIn
		if needsValues != (len(r.Values) > 0) {
			return out, fmt.Errorf("matchExpressions[%d]: operator %s with %d values", j, op, len(r.Values))
		}
		for _, v := range r.Values {
			if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
				return out, fmt.Errorf("matchExpressions[%d]: value %q: %s", j, v, strings.Join(errs, "; "))
			}
		}
		out.MatchExpressions = append(out.MatchExpressions, v1alpha1.LabelSelectorRequirement{Key: r.Key, Operator: op, Values: r.Values})
	}
	return out, nil
}

// dedup drops repeats from a list that zerohop's schema declares a set
// (the API server refuses duplicates there; MetalLB accepted them).
func dedup(in []string, field string, e *Entry) []string {
	var out []string
	for i, s := range in {
		if slices.Contains(out, s) {
			e.note(fmt.Sprintf("%s[%d]", field, i), "duplicate %q written once", s)
			continue
		}
		out = append(out, s)
	}
	return out
}

// advertisementTargets converts the pool and node selection shared by both
// advertisement kinds; ok false means the object must be left out.
func advertisementTargets(pools []string, poolSel, nodeSel []selector, e *Entry) (names []string, ps, ns []v1alpha1.LabelSelector, ok bool) {
	names = dedup(pools, "spec.ipAddressPools", e)
	ps, ok1 := selectors(poolSel, "spec.ipAddressPoolSelectors", e)
	ns, ok2 := selectors(nodeSel, "spec.nodeSelectors", e)
	if !ok1 || !ok2 {
		e.untranslated("", "a selector cannot be expressed exactly; not written, as a looser one would announce from nodes or pools the MetalLB object did not")
		return nil, nil, nil, false
	}
	return names, ps, ns, true
}

// --- L2Advertisement ---

var ifaceName = regexp.MustCompile(`^[^/\s:]+$`)

func (c *converter) l2(om metav1.ObjectMeta, s *l2AdvertisementSpec, e *Entry) any {
	a := &v1alpha1.L2Advertisement{TypeMeta: typeMeta("L2Advertisement"), ObjectMeta: om}
	var ok bool
	a.Spec.IPAddressPools, a.Spec.IPAddressPoolSelectors, a.Spec.NodeSelectors, ok = advertisementTargets(s.IPAddressPools, s.IPAddressPoolSelectors, s.NodeSelectors, e)
	if !ok {
		return nil
	}
	for i, name := range s.Interfaces {
		if slices.Contains(a.Spec.Interfaces, name) {
			e.note(fmt.Sprintf("spec.interfaces[%d]", i), "duplicate %q written once", name)
			continue
		}
		if len(name) > 15 || !ifaceName.MatchString(name) {
			e.untranslated(fmt.Sprintf("spec.interfaces[%d]", i), "%q is not a Linux interface name (at most 15 characters, no '/', ':' or spaces)", name)
			continue
		}
		a.Spec.Interfaces = append(a.Spec.Interfaces, name)
	}
	if len(s.Interfaces) > 0 && len(a.Spec.Interfaces) == 0 {
		e.untranslated("", "no usable interface left: written without interfaces this would answer on every interface; not written")
		return nil
	}
	return a
}

// --- BGPAdvertisement ---

var (
	standardCommunity = regexp.MustCompile(`^([0-9]{1,5}):([0-9]{1,5})$`)
	largeCommunity    = regexp.MustCompile(`^large:([0-9]{1,10}):([0-9]{1,10}):([0-9]{1,10})$`)
	wellKnown         = []string{"no-export", "no-advertise", "no-peer", "blackhole"}
)

// community checks a value against zerohop's community syntax.
func community(v string) bool {
	if slices.Contains(wellKnown, v) {
		return true
	}
	if m := standardCommunity.FindStringSubmatch(v); m != nil {
		return fits(m[1:], 65535)
	}
	if m := largeCommunity.FindStringSubmatch(v); m != nil {
		return fits(m[1:], 4294967295)
	}
	return false
}

func fits(parts []string, limit uint64) bool {
	for _, p := range parts {
		if n, err := strconv.ParseUint(p, 10, 64); err != nil || n > limit {
			return false
		}
	}
	return true
}

func (c *converter) bgpAdvertisement(om metav1.ObjectMeta, s *bgpAdvertisementSpec, e *Entry) any {
	a := &v1alpha1.BGPAdvertisement{TypeMeta: typeMeta("BGPAdvertisement"), ObjectMeta: om}
	var ok bool
	a.Spec.IPAddressPools, a.Spec.IPAddressPoolSelectors, a.Spec.NodeSelectors, ok = advertisementTargets(s.IPAddressPools, s.IPAddressPoolSelectors, s.NodeSelectors, e)
	if !ok {
		return nil
	}
	if v := s.AggregationLength; v != nil {
		if *v < 0 || *v > 32 {
			e.untranslated("spec.aggregationLength", "%d is outside 0..32; left out (zerohop announces /32s)", *v)
		} else {
			a.Spec.AggregationLength = ptr(int32(*v))
		}
	}
	if v := s.AggregationLengthV6; v != nil {
		if *v < 0 || *v > 128 {
			e.untranslated("spec.aggregationLengthV6", "%d is outside 0..128; left out (zerohop announces /128s)", *v)
		} else {
			a.Spec.AggregationLengthV6 = ptr(int32(*v))
		}
	}
	if v := s.LocalPref; v != nil {
		if *v < 0 || *v > 4294967295 {
			e.untranslated("spec.localPref", "%d is outside 0..4294967295; left out", *v)
		} else {
			a.Spec.LocalPref = uint32(*v)
		}
	}
	for i, cm := range s.Communities {
		field := fmt.Sprintf("spec.communities[%d]", i)
		v := cm
		if !community(cm) {
			alias, ok := c.aliases[cm]
			if !ok {
				e.untranslated(field, "%q is neither a community (65000:100, large:65000:1:2) nor the name of an alias in the input's Community objects; left out", cm)
				continue
			}
			if !community(alias) {
				e.untranslated(field, "alias %q stands for %q, which is not a community zerohop accepts; left out", cm, alias)
				continue
			}
			e.note(field, "alias %q resolved to %s", cm, alias)
			v = alias
		}
		if slices.Contains(a.Spec.Communities, v) {
			e.note(field, "duplicate %s written once", v)
			continue
		}
		a.Spec.Communities = append(a.Spec.Communities, v)
	}
	a.Spec.Peers = dedup(s.Peers, "spec.peers", e)
	return a
}

func ptr[T any](v T) *T { return &v }

// --- BGPPeer ---

// upgradePeer lifts a v1beta1 BGPPeer into v1beta2's shape, as MetalLB's
// own conversion does: a zero duration in v1beta1 means "not set".
func upgradePeer(s *peerV1beta1) *peerV1beta2 {
	unset := func(d *string) *string {
		if d == nil {
			return nil
		}
		if v, err := time.ParseDuration(*d); err == nil && v == 0 {
			return nil
		}
		return d
	}
	return &peerV1beta2{
		MyASN: s.MyASN, PeerASN: s.PeerASN, PeerAddress: s.PeerAddress, SourceAddress: s.SourceAddress,
		PeerPort: s.PeerPort, HoldTime: unset(s.HoldTime), KeepaliveTime: unset(s.KeepaliveTime),
		RouterID: s.RouterID, NodeSelectors: s.NodeSelectors, Password: s.Password,
		BFDProfile: s.BFDProfile, EBGPMultiHop: s.EBGPMultiHop,
	}
}

func asn(v *int64) (uint32, bool) {
	if v == nil || *v < 1 || *v > 4294967295 {
		return 0, false
	}
	return uint32(*v), true
}

func duration(field string, v *string, e *Entry) (*metav1.Duration, bool) {
	if v == nil {
		return nil, true
	}
	d, err := time.ParseDuration(*v)
	if err != nil || d < 0 {
		e.untranslated(field, "%q is not a duration; left out", *v)
		return nil, false
	}
	return &metav1.Duration{Duration: d}, true
}

func (c *converter) peer(om metav1.ObjectMeta, d document, s *peerV1beta2, e *Entry) []any {
	p := &v1alpha1.BGPPeer{TypeMeta: typeMeta("BGPPeer"), ObjectMeta: om}
	var ok bool
	if p.Spec.MyASN, ok = asn(s.MyASN); !ok {
		e.untranslated("spec.myASN", "missing or outside 1..4294967295; zerohop needs it: peer not written")
		return nil
	}
	if s.DynamicASN != "" {
		if s.PeerASN != nil {
			e.untranslated("spec.dynamicASN", "set together with peerASN (MetalLB refuses that); peerASN used")
		} else {
			e.untranslated("spec.dynamicASN", "zerohop has no dynamic peer AS (%q): set peerASN; peer not written", s.DynamicASN)
			return nil
		}
	}
	if p.Spec.PeerASN, ok = asn(s.PeerASN); !ok {
		e.untranslated("spec.peerASN", "missing or outside 1..4294967295; zerohop needs it: peer not written")
		return nil
	}
	if s.Interface != "" {
		e.untranslated("spec.interface", "zerohop does not peer BGP unnumbered over an interface (%q); set peerAddress: peer not written", s.Interface)
		return nil
	}
	if s.VRF != "" {
		e.untranslated("spec.vrf", "zerohop peers from the default VRF only; a session meant for VRF %q would be opened in the wrong routing table: peer not written", s.VRF)
		return nil
	}
	peerIP, err := netip.ParseAddr(s.PeerAddress)
	if err != nil || peerIP.Zone() != "" {
		e.untranslated("spec.peerAddress", "%q is not an IP address; zerohop needs one: peer not written", s.PeerAddress)
		return nil
	}
	p.Spec.PeerAddress = peerIP.String()
	if s.SourceAddress != "" {
		src, err := netip.ParseAddr(s.SourceAddress)
		switch {
		case err != nil:
			e.untranslated("spec.sourceAddress", "%q is not an IP address; left out (the routing table chooses)", s.SourceAddress)
		case src.Is4() != peerIP.Is4():
			e.untranslated("spec.sourceAddress", "%s is not of peerAddress's family; left out (the routing table chooses)", src)
		default:
			p.Spec.SourceAddress = src.String()
		}
	}
	if s.PeerPort != nil && *s.PeerPort != 0 {
		if *s.PeerPort < 1 || *s.PeerPort > 65535 {
			e.untranslated("spec.peerPort", "%d is not a port; left out (179)", *s.PeerPort)
		} else {
			p.Spec.PeerPort = uint16(*s.PeerPort)
		}
	}
	if s.RouterID != "" {
		if id, err := netip.ParseAddr(s.RouterID); err != nil || !id.Is4() {
			e.untranslated("spec.routerID", "%q is not an IPv4 address; left out (the node's IPv4 address is used)", s.RouterID)
		} else {
			p.Spec.RouterID = id.String()
		}
	}
	c.timers(p, s, e)
	if s.ConnectTime != nil {
		if ct, ok := duration("spec.connectTime", s.ConnectTime, e); ok {
			if ct.Duration < time.Second || ct.Duration > 65535*time.Second {
				e.untranslated("spec.connectTime", "%s is outside 1s..65535s; left out", ct.Duration)
			} else {
				p.Spec.ConnectTime = ct
			}
		}
	}
	p.Spec.EBGPMultiHop = s.EBGPMultiHop
	p.Spec.EnableGracefulRestart = s.EnableGracefulRestart
	if s.DisableMP {
		e.untranslated("spec.disableMP", "zerohop opens one multiprotocol session carrying IPv4 and IPv6; separate per-family sessions are not available")
	}
	if s.DualStackAddressFamily {
		e.note("spec.dualStackAddressFamily", "zerohop always carries both families on every session (the other family's next hop is the node's address of that family)")
	}
	if s.BFDProfile != "" {
		p.Spec.BFDProfile = s.BFDProfile
		if !c.bfd[s.BFDProfile] {
			e.note("spec.bfdProfile", "BFDProfile %q is not in the input; the session runs without BFD until a zerohop BFDProfile of that name exists", s.BFDProfile)
		}
	}
	var ok1 bool
	if p.Spec.NodeSelectors, ok1 = selectors(s.NodeSelectors, "spec.nodeSelectors", e); !ok1 {
		e.untranslated("", "a node selector cannot be expressed exactly; peer not written, as a looser one would open sessions from nodes the MetalLB peer did not")
		return nil
	}
	hasRef := s.PasswordSecret != nil && s.PasswordSecret.Name != ""
	if hasRef {
		ns := s.PasswordSecret.Namespace
		if ns == "" {
			ns = d.meta.Namespace
		}
		p.Spec.PasswordSecret = &v1alpha1.SecretReference{Name: s.PasswordSecret.Name, Namespace: ns}
		if ns != c.opts.SecretNamespace {
			e.note("spec.passwordSecret", "Secret %s/%s is read from there by the speaker, which watches only its own namespace (%s): copy the Secret there and drop the namespace to have password changes applied at once", ns, s.PasswordSecret.Name, c.opts.SecretNamespace)
		}
		if s.Password != "" {
			e.untranslated("spec.password", "set together with passwordSecret (MetalLB refuses that); passwordSecret used")
		}
	} else if s.Password != "" {
		name := om.Name + "-bgp-password"
		if len(name) > 253 {
			name = name[:253]
		}
		sec := &corev1.Secret{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.opts.SecretNamespace},
			Type:       corev1.SecretTypeBasicAuth,
			StringData: map[string]string{corev1.BasicAuthPasswordKey: s.Password},
		}
		p.Spec.PasswordSecret = &v1alpha1.SecretReference{Name: name}
		if !c.claim(d, p, e) {
			return nil
		}
		if !c.claim(d, sec, e) {
			e.untranslated("spec.password", "the Secret it would go into is taken; peer not written, as it would open its session without the password")
			return nil
		}
		e.note("spec.password", "zerohop reads the TCP MD5 password from a Secret: written as Secret %s/%s (key %q), referenced by passwordSecret", sec.Namespace, sec.Name, corev1.BasicAuthPasswordKey)
		return []any{sec, p}
	}
	if !c.claim(d, p, e) {
		return nil
	}
	return []any{p}
}

// timers applies holdTime and keepaliveTime within zerohop's rules (hold 0
// or at least 3s; keepalive below hold), which are RFC 4271's.
func (c *converter) timers(p *v1alpha1.BGPPeer, s *peerV1beta2, e *Entry) {
	if hold, ok := duration("spec.holdTime", s.HoldTime, e); ok && hold != nil {
		if hold.Duration != 0 && hold.Duration < 3*time.Second {
			e.untranslated("spec.holdTime", "%s is neither 0 nor at least 3s (RFC 4271); left out (90s)", hold.Duration)
		} else {
			p.Spec.HoldTime = hold
		}
	}
	keep, ok := duration("spec.keepaliveTime", s.KeepaliveTime, e)
	if !ok || keep == nil {
		return
	}
	limit := 90 * time.Second
	if p.Spec.HoldTime != nil {
		limit = p.Spec.HoldTime.Duration
	}
	if keep.Duration != 0 && keep.Duration >= limit {
		e.untranslated("spec.keepaliveTime", "%s is not below the hold time %s; left out (a third of the hold time)", keep.Duration, limit)
		return
	}
	p.Spec.KeepaliveTime = keep
}

// --- BFDProfile ---

func (c *converter) bfdProfile(om metav1.ObjectMeta, s *bfdProfileSpec, e *Entry) any {
	b := &v1alpha1.BFDProfile{TypeMeta: typeMeta("BFDProfile"), ObjectMeta: om}
	set := func(field string, v *int64, lo, hi int64, out **uint32) {
		if v == nil {
			return
		}
		if *v < lo || *v > hi {
			e.untranslated(field, "%d is outside %d..%d; left out (default)", *v, lo, hi)
			return
		}
		*out = ptr(uint32(*v))
	}
	set("spec.receiveInterval", s.ReceiveInterval, 10, 60000, &b.Spec.ReceiveInterval)
	set("spec.transmitInterval", s.TransmitInterval, 10, 60000, &b.Spec.TransmitInterval)
	set("spec.detectMultiplier", s.DetectMultiplier, 2, 255, &b.Spec.DetectMultiplier)
	set("spec.minimumTtl", s.MinimumTTL, 1, 255, &b.Spec.MinimumTTL)
	if s.PassiveMode != nil {
		b.Spec.PassiveMode = *s.PassiveMode
	}
	if s.EchoMode != nil && *s.EchoMode {
		e.untranslated("spec.echoMode", "zerohop does not implement BFD echo; sessions run on control packets only")
	}
	if s.EchoInterval != nil {
		e.untranslated("spec.echoInterval", "zerohop does not implement BFD echo; left out")
	}
	return b
}

// --- Services ---

// annotationMap is MetalLB's Service annotations (under both of its
// prefixes) and zerohop's equivalents; "" means written by MetalLB itself
// and not carried over.
var annotationMap = map[string]string{
	"loadBalancerIPs":        controller.AnnotationIPs,
	"address-pool":           controller.AnnotationPool,
	"allow-shared-ip":        controller.AnnotationShare,
	"ip-allocated-from-pool": "",
}

var metallbPrefixes = []string{"metallb.io/", "metallb.universe.tf/"}

func (c *converter) service(d document, svc *corev1.Service, e *Entry) []any {
	raw := cloneMap(d.raw)
	delete(raw, "status")
	if md, ok := raw["metadata"].(map[string]any); ok {
		for _, k := range []string{"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink"} {
			delete(md, k)
		}
	}
	annotations := map[string]string{}
	from := map[string]string{} // zerohop annotation -> the MetalLB one it came from
	touched := false
	keys := make([]string, 0, len(svc.Annotations))
	for k := range svc.Annotations {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	// metallb.io/ sorts before metallb.universe.tf/: the newer prefix wins
	// when both are present.
	for _, k := range keys {
		v := svc.Annotations[k]
		var suffix string
		for _, p := range metallbPrefixes {
			if s, ok := strings.CutPrefix(k, p); ok {
				suffix = s
			}
		}
		if suffix == "" {
			if k != corev1.LastAppliedConfigAnnotation {
				annotations[k] = v
			}
			continue
		}
		touched = true
		field := "metadata.annotations." + k
		target, known := annotationMap[suffix]
		switch {
		case !known:
			e.untranslated(field, "no zerohop equivalent; left out")
		case target == "":
			e.note(field, "written by MetalLB; zerohop names the pool in its IPAllocated Event instead; left out")
		case from[target] != "":
			if annotations[target] != v {
				e.untranslated(field, "conflicts with %s (%q); %s used", from[target], annotations[target], from[target])
			} else {
				e.note(field, "same as %s; written once as %s", from[target], target)
			}
		default:
			if existing, ok := svc.Annotations[target]; ok && existing != v {
				e.untranslated(field, "the Service already has %s=%q, which is kept", target, existing)
				continue
			}
			annotations[target] = v
			from[target] = k
			e.note(field, "written as %s", target)
		}
	}
	if c.opts.PinIPs && svc.Spec.Type == corev1.ServiceTypeLoadBalancer && annotations[controller.AnnotationIPs] == "" {
		var ips []string
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			if ing.IP != "" {
				ips = append(ips, ing.IP)
			}
		}
		if len(ips) > 0 {
			annotations[controller.AnnotationIPs] = strings.Join(ips, ",")
			touched = true
			e.note("status.loadBalancer.ingress", "current IPs pinned as %s=%s (--pin-ips)", controller.AnnotationIPs, annotations[controller.AnnotationIPs])
		}
	}
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer && !touched {
		e.note("", "not a LoadBalancer Service and no MetalLB annotation; not written")
		return nil
	}
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		e.note("spec.type", "%q: zerohop serves only type LoadBalancer; the annotations take effect once it is", svc.Spec.Type)
	}
	if cls := svc.Spec.LoadBalancerClass; cls != nil && *cls != v1alpha1.LoadBalancerClass {
		e.untranslated("spec.loadBalancerClass", "%q is another implementation's class and immutable: zerohop serves only %s (or no class, with the controller's --default-class); re-create the Service with class %s", *cls, v1alpha1.LoadBalancerClass, v1alpha1.LoadBalancerClass)
	}
	md, _ := raw["metadata"].(map[string]any)
	if md == nil {
		md = map[string]any{}
		raw["metadata"] = md
	}
	if len(annotations) == 0 {
		delete(md, "annotations")
	} else {
		am := map[string]any{}
		for k, v := range annotations {
			am[k] = v
		}
		md["annotations"] = am
	}
	return []any{serviceObject(raw)}
}

// serviceObject is a Service passed through as the user wrote it, minus
// status and server-written metadata.
type serviceObject map[string]any

func cloneMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			v = cloneMap(sub)
		}
		out[k] = v
	}
	return out
}

// outputName is "Kind/name" for zerohop's cluster-scoped kinds and
// "Kind namespace/name" for namespaced ones.
func outputName(o any) string {
	switch v := o.(type) {
	case *v1alpha1.IPAddressPool:
		return "IPAddressPool/" + v.Name
	case *v1alpha1.L2Advertisement:
		return "L2Advertisement/" + v.Name
	case *v1alpha1.BGPAdvertisement:
		return "BGPAdvertisement/" + v.Name
	case *v1alpha1.BGPPeer:
		return "BGPPeer/" + v.Name
	case *v1alpha1.BFDProfile:
		return "BFDProfile/" + v.Name
	case *corev1.Secret:
		return "Secret " + v.Namespace + "/" + v.Name
	case serviceObject:
		md, _ := v["metadata"].(map[string]any)
		ns, _ := md["namespace"].(string)
		name, _ := md["name"].(string)
		return "Service " + ns + "/" + name
	}
	return fmt.Sprintf("%T", o)
}
