// Package metallbimport turns MetalLB's metallb.io configuration
// (IPAddressPool, L2Advertisement, BGPAdvertisement, BGPPeer v1beta1 and
// v1beta2, BFDProfile, Community), the MetalLB annotations of Services and
// the Secrets BGPPeers name into zerohop objects, and accounts for every
// field it could not carry over. It narrows or leaves out, never widens:
// an object whose node, pool or Service selection, or whose route
// attributes, cannot be expressed exactly is left out and reported, rather
// than written so that it announces more, or to more, than MetalLB did.
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
	// SecretNamespace is the speaker's namespace, the only one whose
	// Secrets it may read: the Secrets made from BGPPeers' plain passwords
	// and the copies of their passwordSecrets go there. Default
	// zerohop-system.
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
	c := &converter{opts: opts, seen: map[string]Source{}, aliases: map[string]string{}, bfd: map[string]bool{},
		secrets: map[string]bool{}, secretRefs: map[string]bool{}, poolFamilies: map[ipam.Family]bool{}}
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
	c.poolOrder(res)
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
	// secrets are the input's Secrets and secretRefs the ones a BGPPeer's
	// passwordSecret names, both "namespace/name": MetalLB reads them in
	// its own namespace, zerohop's speaker in its own.
	secrets    map[string]bool
	secretRefs map[string]bool
	// poolFamilies are the address families of the input's pools.
	poolFamilies map[ipam.Family]bool
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
	if d.src.Kind == "Secret" && d.src.APIVersion == "v1" {
		var sec corev1.Secret
		if err := decodeField(map[string]any{"secret": d.raw}, "secret", &sec); err != nil {
			return p, errors.New(strings.TrimPrefix(err.Error(), "secret."))
		}
		p.spec = &sec
		c.secrets[sec.Namespace+"/"+sec.Name] = true
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
	case *peerV1beta2:
		if s.PasswordSecret != nil && s.PasswordSecret.Name != "" {
			c.secretRefs[d.meta.Namespace+"/"+s.PasswordSecret.Name] = true
		}
	case *poolSpec:
		for _, a := range s.Addresses {
			if addr, _, err := poolAddress(a); err == nil {
				if r, err := ipam.ParseRange(addr); err == nil {
					c.poolFamilies[r.Family()] = true
				}
			}
		}
	}
	return p, nil
}

func (c *converter) convert(p parsedDoc, e *Entry) []any {
	d := p.doc
	group, _, _ := strings.Cut(d.src.APIVersion, "/")
	if svc, ok := p.spec.(*corev1.Service); ok {
		return c.service(d, svc, e)
	}
	if sec, ok := p.spec.(*corev1.Secret); ok {
		return c.secret(d, sec, e)
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
		// Kept even when it restricts nothing: a pool with a
		// serviceAllocation is tried before pools without one, in MetalLB
		// and in zerohop.
		p.Spec.ServiceAllocation = out
		if reflect.DeepEqual(*out, v1alpha1.ServiceAllocation{}) {
			e.note("spec.serviceAllocation", "admits every Service and sets no priority; written as serviceAllocation: {}, so that the pool is still tried before the pools without a serviceAllocation, as in MetalLB")
		}
	}
	return p
}

// poolOrder records, in the report, the order in which zerohop's
// controller tries the written auto-assign pools (the allocator's own
// order), and notes the pools MetalLB would try in random order among
// each other: same rank, where zerohop goes by name.
func (c *converter) poolOrder(res *Result) {
	var specs []ipam.PoolSpec
	for _, o := range res.Objects {
		p, ok := o.(*v1alpha1.IPAddressPool)
		if !ok || (p.Spec.AutoAssign != nil && !*p.Spec.AutoAssign) {
			continue
		}
		spec := ipam.PoolSpec{Name: p.Name, AutoAssign: true}
		if sa := p.Spec.ServiceAllocation; sa != nil {
			spec.Restricted, spec.Priority = true, int(sa.Priority)
		}
		specs = append(specs, spec)
	}
	a := ipam.New()
	a.SetPools(specs)
	res.Report.PoolOrder = a.Order()
	rank := map[string]ipam.PoolSpec{}
	for _, sp := range specs {
		rank[sp.Name] = sp
	}
	same := func(x, y ipam.PoolSpec) bool { return x.Restricted == y.Restricted && x.Priority == y.Priority }
	order := res.Report.PoolOrder
	for i := 0; i < len(order); {
		j := i + 1
		for j < len(order) && same(rank[order[i]], rank[order[j]]) {
			j++
		}
		if j-i > 1 {
			group := order[i:j]
			for _, name := range group {
				e := entryFor(res, "IPAddressPool/"+name)
				if e == nil {
					continue
				}
				e.note("spec.serviceAllocation", "MetalLB tries pools of equal rank (%s) in random order; zerohop tries them by name: %s",
					rankText(rank[name]), strings.Join(group, ", "))
			}
		}
		i = j
	}
}

func rankText(p ipam.PoolSpec) string {
	switch {
	case !p.Restricted:
		return "no serviceAllocation"
	case p.Priority > 0:
		return fmt.Sprintf("serviceAllocation, priority %d", p.Priority)
	}
	return "serviceAllocation, no priority"
}

func entryFor(res *Result, output string) *Entry {
	for i := range res.Report.Entries {
		if slices.Contains(res.Report.Entries[i].Outputs, output) {
			return &res.Report.Entries[i]
		}
	}
	return nil
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

// advertisementTargets converts the pool, node and Service selection
// shared by both advertisement kinds; ok false means the object must be
// left out.
func advertisementTargets(pools []string, poolSel, nodeSel, svcSel []selector, e *Entry) (names []string, ps, ns, ss []v1alpha1.LabelSelector, ok bool) {
	names = dedup(pools, "spec.ipAddressPools", e)
	ps, ok1 := selectors(poolSel, "spec.ipAddressPoolSelectors", e)
	ns, ok2 := selectors(nodeSel, "spec.nodeSelectors", e)
	ss, ok3 := selectors(svcSel, "spec.serviceSelectors", e)
	if !ok1 || !ok2 || !ok3 {
		e.untranslated("", "a selector cannot be expressed exactly; not written, as a looser one would announce from nodes, pools or Services the MetalLB object did not")
		return nil, nil, nil, nil, false
	}
	return names, ps, ns, ss, true
}

// --- L2Advertisement ---

var ifaceName = regexp.MustCompile(`^[^/\s:]+$`)

func (c *converter) l2(om metav1.ObjectMeta, s *l2AdvertisementSpec, e *Entry) any {
	a := &v1alpha1.L2Advertisement{TypeMeta: typeMeta("L2Advertisement"), ObjectMeta: om}
	var ok bool
	a.Spec.IPAddressPools, a.Spec.IPAddressPoolSelectors, a.Spec.NodeSelectors, a.Spec.ServiceSelectors, ok = advertisementTargets(s.IPAddressPools, s.IPAddressPoolSelectors, s.NodeSelectors, s.ServiceSelectors, e)
	if !ok {
		return nil
	}
	for i, pref := range s.PreferredNodeSelectors {
		field := fmt.Sprintf("spec.preferredNodeSelectors[%d]", i)
		if pref.Weight == nil || *pref.Weight < 1 || *pref.Weight > 100 {
			e.untranslated(field+".weight", "missing or outside 1..100 (MetalLB's schema refuses it too); this preference left out")
			continue
		}
		var sel v1alpha1.LabelSelector
		if pref.Preference != nil {
			var err error
			if sel, err = labelSelector(*pref.Preference); err != nil {
				e.untranslated(field+".preference", "%v; this preference left out", err)
				continue
			}
		}
		a.Spec.PreferredNodeSelectors = append(a.Spec.PreferredNodeSelectors, v1alpha1.PreferredNodeSelector{Weight: int32(*pref.Weight), Preference: sel})
	}
	if len(a.Spec.PreferredNodeSelectors) > 16 {
		e.untranslated("spec.preferredNodeSelectors", "%d preferences, zerohop takes at most 16; the ones after the 16th left out", len(a.Spec.PreferredNodeSelectors))
		a.Spec.PreferredNodeSelectors = a.Spec.PreferredNodeSelectors[:16]
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
	if len(s.Interfaces) == 0 {
		e.note("spec.interfaces", "empty: MetalLB answers ARP/NDP on every interface, zerohop only on the interface that holds the node's address in the VIP's subnet; a pool outside the nodes' subnets is not answered for until you list its interfaces here")
	}
	return a
}

// --- BGPAdvertisement ---

// metallbCommunity parses a community the way MetalLB does (a standard
// "ASN:N" with 16-bit halves, or "large:A:B:C" with 32-bit parts; MetalLB
// has no well-known names) and returns it in zerohop's canonical form.
func metallbCommunity(v string) (string, bool) {
	parts := strings.Split(v, ":")
	parse := func(ps []string, bits int) ([]uint64, bool) {
		var out []uint64
		for _, p := range ps {
			n, err := strconv.ParseUint(p, 10, bits)
			if err != nil {
				return nil, false
			}
			out = append(out, n)
		}
		return out, true
	}
	switch {
	case len(parts) == 2:
		if n, ok := parse(parts, 16); ok {
			return fmt.Sprintf("%d:%d", n[0], n[1]), true
		}
	case len(parts) == 4 && parts[0] == "large":
		if n, ok := parse(parts[1:], 32); ok {
			return fmt.Sprintf("large:%d:%d:%d", n[0], n[1], n[2]), true
		}
	}
	return "", false
}

func (c *converter) bgpAdvertisement(om metav1.ObjectMeta, s *bgpAdvertisementSpec, e *Entry) any {
	a := &v1alpha1.BGPAdvertisement{TypeMeta: typeMeta("BGPAdvertisement"), ObjectMeta: om}
	var ok bool
	a.Spec.IPAddressPools, a.Spec.IPAddressPoolSelectors, a.Spec.NodeSelectors, a.Spec.ServiceSelectors, ok = advertisementTargets(s.IPAddressPools, s.IPAddressPoolSelectors, s.NodeSelectors, s.ServiceSelectors, e)
	if !ok {
		return nil
	}
	if s.AsPathPrepend != nil {
		e.untranslated("spec.asPathPrepend", "zerohop has no AS-path prepending, and without the %d prepends these routes would look shorter than MetalLB's and draw traffic meant for other paths; not written", *s.AsPathPrepend)
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
	if len(a.Spec.ServiceSelectors) > 0 && (a.Spec.AggregationLength != nil && *a.Spec.AggregationLength != 32 || a.Spec.AggregationLengthV6 != nil && *a.Spec.AggregationLengthV6 != 128) {
		e.untranslated("spec.serviceSelectors", "together with an aggregation length other than 32/128, which MetalLB refuses too (an aggregate carries other Services' addresses); not written")
		return nil
	}
	if v := s.LocalPref; v != nil {
		if *v < 0 || *v > 4294967295 {
			e.untranslated("spec.localPref", "%d is outside 0..4294967295; left out", *v)
		} else {
			a.Spec.LocalPref = uint32(*v)
		}
	}
	dropped := false
	for i, cm := range s.Communities {
		field := fmt.Sprintf("spec.communities[%d]", i)
		// MetalLB looks the name up among the aliases first, whatever it
		// looks like: an alias called "no-export" is its value, not the
		// well-known community.
		v, isValue := "", false
		if alias, ok := c.aliases[cm]; ok {
			if v, isValue = metallbCommunity(alias); !isValue {
				e.untranslated(field, "alias %q stands for %q, which is not a community (MetalLB refuses the Community object too)", cm, alias)
				dropped = true
				continue
			}
			e.note(field, "alias %q resolved to %s", cm, v)
		} else if v, isValue = metallbCommunity(cm); !isValue {
			e.untranslated(field, "%q is neither a community (65000:100, large:65000:1:2; MetalLB has no well-known names) nor the name of an alias in the input's Community objects", cm)
			dropped = true
			continue
		} else if v != cm {
			e.note(field, "%q written as %s", cm, v)
		}
		if slices.Contains(a.Spec.Communities, v) {
			e.note(field, "duplicate %s written once", v)
			continue
		}
		a.Spec.Communities = append(a.Spec.Communities, v)
	}
	if dropped {
		e.untranslated("", "a community cannot be carried over, and a route without it (no-export, say) may travel further than MetalLB's; not written")
		return nil
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
	// MetalLB's myASN is the node's BGP router AS; localASN is what this
	// one session presents (FRR's local-as ... replace-as). zerohop's
	// myASN is per session already.
	if s.LocalASN != nil && *s.LocalASN != 0 {
		local, ok := asn(s.LocalASN)
		if !ok {
			e.untranslated("spec.localASN", "%d is outside 1..4294967295; the session would present the wrong AS: peer not written", *s.LocalASN)
			return nil
		}
		e.note("spec.localASN", "this session presents AS %d to the router (MetalLB's router AS %d stays out of it): written as myASN, which zerohop sets per session", local, p.Spec.MyASN)
		p.Spec.MyASN = local
	}
	switch {
	case s.DynamicASN == "":
		if p.Spec.PeerASN, ok = asn(s.PeerASN); !ok {
			e.untranslated("spec.peerASN", "missing or outside 1..4294967295; zerohop needs it (or dynamicASN): peer not written")
			return nil
		}
	case s.PeerASN != nil && *s.PeerASN != 0:
		e.untranslated("spec.dynamicASN", "set together with peerASN, which MetalLB refuses; peerASN used")
		if p.Spec.PeerASN, ok = asn(s.PeerASN); !ok {
			e.untranslated("spec.peerASN", "outside 1..4294967295: peer not written")
			return nil
		}
	case s.DynamicASN == "internal" && s.LocalASN != nil && *s.LocalASN != 0:
		e.untranslated("spec.dynamicASN", "internal together with localASN: whether the router's AS must equal myASN or localASN is FRR's business, not an exact zerohop setting; peer not written")
		return nil
	case s.DynamicASN == "internal":
		p.Spec.PeerASN = p.Spec.MyASN
		e.note("spec.dynamicASN", "internal accepts only the session's own AS: written as peerASN %d", p.Spec.PeerASN)
	case s.DynamicASN == "external":
		p.Spec.DynamicASN = v1alpha1.DynamicASNExternal
	default:
		e.untranslated("spec.dynamicASN", "%q is neither internal nor external (MetalLB refuses it): peer not written", s.DynamicASN)
		return nil
	}
	if s.VRF != "" {
		e.untranslated("spec.vrf", "zerohop opens sessions in the node's main routing table only (docs/api.md says why); a session meant for VRF %q would be opened in the wrong one: peer not written", s.VRF)
		return nil
	}
	var peerIP netip.Addr
	switch {
	case s.Interface != "" && s.PeerAddress != "":
		e.untranslated("spec.interface", "set together with peerAddress, which MetalLB refuses: peer not written")
		return nil
	case s.Interface != "":
		if len(s.Interface) > 15 || !ifaceName.MatchString(s.Interface) {
			e.untranslated("spec.interface", "%q is not a Linux interface name (at most 15 characters, no '/', ':' or spaces): peer not written", s.Interface)
			return nil
		}
		p.Spec.Interface = s.Interface
	default:
		var err error
		peerIP, err = netip.ParseAddr(s.PeerAddress)
		if err != nil || peerIP.Zone() != "" {
			e.untranslated("spec.peerAddress", "%q is not an IP address; zerohop needs one (or interface): peer not written", s.PeerAddress)
			return nil
		}
		p.Spec.PeerAddress = peerIP.String()
	}
	if s.SourceAddress != "" {
		src, err := netip.ParseAddr(s.SourceAddress)
		switch {
		case err != nil:
			e.untranslated("spec.sourceAddress", "%q is not an IP address; left out (the routing table chooses)", s.SourceAddress)
		case p.Spec.Interface != "":
			e.untranslated("spec.sourceAddress", "an unnumbered session is opened from the interface's IPv6 link-local address; left out")
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
	if s.EBGPMultiHop {
		if ibgp := p.Spec.PeerASN == p.Spec.MyASN; ibgp {
			e.untranslated("spec.ebgpMultiHop", "this session is iBGP (AS %d on both ends), where MetalLB and zerohop both refuse ebgpMultiHop; left out", p.Spec.MyASN)
		} else {
			p.Spec.EBGPMultiHop = true
		}
	}
	p.Spec.EnableGracefulRestart = s.EnableGracefulRestart
	c.families(p, s, e)
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
	if s.PasswordSecret != nil && s.PasswordSecret.Name != "" {
		// MetalLB reads the Secret from its own namespace whatever the
		// reference says; zerohop's speaker may read Secrets only in its
		// own (the chart's RBAC), which the reference then leaves implied.
		from := d.meta.Namespace + "/" + s.PasswordSecret.Name
		p.Spec.PasswordSecret = &v1alpha1.SecretReference{Name: s.PasswordSecret.Name}
		if ns := s.PasswordSecret.Namespace; ns != "" && ns != d.meta.Namespace {
			e.note("spec.passwordSecret.namespace", "%q is not where MetalLB reads the Secret (its own namespace, %q); the reference now points to the speaker's namespace", ns, d.meta.Namespace)
		}
		if c.secrets[from] {
			e.note("spec.passwordSecret", "Secret %s is in the input and copied to %s/%s, the speaker's namespace, where zerohop's speaker may read it", from, c.opts.SecretNamespace, s.PasswordSecret.Name)
		} else {
			e.untranslated("spec.passwordSecret", "the speaker reads Secrets only in its own namespace (%s); Secret %s is not in the input, so copy it there (kubectl get secret -n %s %s -o yaml, change the namespace, apply) or the session stays down", c.opts.SecretNamespace, from, d.meta.Namespace, s.PasswordSecret.Name)
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

// families notes what zerohop sends a session that MetalLB did not: MetalLB
// sends a session only its own address family unless
// dualStackAddressFamily is set (or the session is unnumbered), while
// zerohop offers both on every session. It matters only when the input
// has pools of the other family.
func (c *converter) families(p *v1alpha1.BGPPeer, s *peerV1beta2, e *Entry) {
	if s.DualStackAddressFamily {
		e.note("spec.dualStackAddressFamily", "zerohop always offers both families on every session (the other family's next hop is the node's address of that family)")
		return
	}
	if p.Spec.Interface != "" {
		return
	}
	peerIP, err := netip.ParseAddr(p.Spec.PeerAddress)
	if err != nil {
		return
	}
	own, other := ipam.IPv4, ipam.IPv6
	if !peerIP.Is4() {
		own, other = other, own
	}
	field := "spec.peerAddress"
	if s.DisableMP {
		field = "spec.disableMP"
	}
	if c.poolFamilies[other] {
		e.note(field, "MetalLB sends this %s session %s prefixes only; zerohop offers %s prefixes too (next hop: the node's %s address), which the router takes only if it enables %s unicast for this neighbour; limit them with the BGPAdvertisements' peers if it does", own, own, other, other, other)
	} else if s.DisableMP {
		e.note(field, "deprecated in MetalLB; zerohop offers both families on one session, and the input has no %s pool", other)
	}
}

// timers sets holdTime and keepaliveTime as MetalLB derives them (hold
// three times keepalive when only keepalive is set, keepalive a third of
// hold when only hold is), within what zerohop can run: its GoBGP always
// runs a hold timer (0 becomes its 90s default) and sends keepalives
// below the hold time.
func (c *converter) timers(p *v1alpha1.BGPPeer, s *peerV1beta2, e *Entry) {
	hold, okH := duration("spec.holdTime", s.HoldTime, e)
	keep, okK := duration("spec.keepaliveTime", s.KeepaliveTime, e)
	if !okH || !okK {
		return
	}
	switch {
	case hold == nil && keep == nil:
		return
	case hold == nil:
		hold = &metav1.Duration{Duration: 3 * keep.Duration}
	case keep == nil:
		keep = &metav1.Duration{Duration: hold.Duration / 3}
	}
	h, k := hold.Truncate(time.Second), keep.Duration
	holdIssue := ""
	switch {
	case h != 0 && h < 3*time.Second:
		holdIssue = fmt.Sprintf("%s is neither 0 nor at least 3s, which MetalLB refuses too; left out (90s)", hold.Duration)
	case k > hold.Duration:
		// MetalLB refuses the peer; zerohop keeps what it can.
		e.untranslated("spec.keepaliveTime", "%s is above the hold time %s, which MetalLB refuses too; left out (a third of the hold time)", k, hold.Duration)
		if s.HoldTime != nil && h >= 3*time.Second {
			p.Spec.HoldTime = hold
		} else if s.HoldTime != nil {
			e.untranslated("spec.holdTime", "%s cannot be run by zerohop's GoBGP; left out (90s)", hold.Duration)
		}
		return
	case h == 0:
		holdIssue = "MetalLB runs this session without a hold timer (hold time 0, no keepalives); zerohop's GoBGP cannot (it takes 0 as its default): left out, so the session holds for 90s with keepalives every 30s"
	case h > 65535*time.Second:
		holdIssue = fmt.Sprintf("%s is above BGP's 65535s; left out (90s)", hold.Duration)
	}
	if holdIssue != "" {
		field := "spec.holdTime"
		if s.HoldTime == nil {
			field = "spec.keepaliveTime" // the hold time was derived from it
		}
		e.untranslated(field, "%s", holdIssue)
		if s.HoldTime != nil && s.KeepaliveTime != nil {
			e.untranslated("spec.keepaliveTime", "left out with the hold time (a third of 90s)")
		}
		return
	}
	p.Spec.HoldTime = hold
	if s.HoldTime == nil {
		e.note("spec.keepaliveTime", "MetalLB holds the session for three keepalives when only keepaliveTime is set (zerohop would hold for 90s): written with holdTime %s", hold.Duration)
	}
	switch {
	case s.KeepaliveTime == nil:
		// zerohop's default is a third of the hold time, as MetalLB's.
	case k == 0:
		e.untranslated("spec.keepaliveTime", "0s with a hold time of %s: MetalLB sends no keepalives and the session drops when the hold time runs out; zerohop sends one every third of the hold time: left out", hold.Duration)
	case k >= hold.Duration:
		e.untranslated("spec.keepaliveTime", "%s is not below the hold time %s, which zerohop requires (MetalLB does not); left out (a third of the hold time)", k, hold.Duration)
	default:
		p.Spec.KeepaliveTime = keep
	}
}

// secret copies a Secret that a BGPPeer names as its passwordSecret into
// the speaker's namespace; other Secrets are not written.
func (c *converter) secret(d document, sec *corev1.Secret, e *Entry) []any {
	if !c.secretRefs[sec.Namespace+"/"+sec.Name] {
		e.note("", "not the passwordSecret of a BGPPeer in the input; not written")
		return nil
	}
	out := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: sec.Name, Namespace: c.opts.SecretNamespace, Labels: sec.Labels},
		Type:       sec.Type,
		Data:       sec.Data,
		StringData: sec.StringData,
	}
	if !c.claim(d, out, e) {
		return nil
	}
	e.note("metadata.namespace", "a BGPPeer's passwordSecret: copied to %s, the speaker's namespace, where zerohop's speaker may read it. It holds a password: treat the output as a secret", c.opts.SecretNamespace)
	if sec.Type != corev1.SecretTypeBasicAuth {
		e.note("type", "%q: MetalLB and zerohop both need %s with the key %q", sec.Type, corev1.SecretTypeBasicAuth, corev1.BasicAuthPasswordKey)
	}
	return []any{out}
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
