package metallbimport

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"

	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// The MetalLB input, as this package's own structs: importing MetalLB's
// module would pull its version pins into zerohop's binary for a handful
// of field names. The structs have the shape of MetalLB's API (v0.16.2);
// TestFieldsMatchMetalLB holds them, and the handling table in fields.go,
// against MetalLB's own types by reflection, so a field MetalLB adds fails
// the tests until it is handled. In the meantime such a field in the input
// is reported as unknown instead of being dropped silently.

// selector is metav1.LabelSelector's shape, which MetalLB's v1beta1
// NodeSelector shares.
type selector struct {
	MatchLabels      map[string]string `json:"matchLabels,omitempty"`
	MatchExpressions []requirement     `json:"matchExpressions,omitempty"`
}

type requirement struct {
	Key      string   `json:"key"`
	Operator string   `json:"operator"`
	Values   []string `json:"values,omitempty"`
}

type poolSpec struct {
	Addresses         []string           `json:"addresses"`
	AutoAssign        *bool              `json:"autoAssign"`
	AvoidBuggyIPs     bool               `json:"avoidBuggyIPs"`
	ServiceAllocation *serviceAllocation `json:"serviceAllocation"`
}

type serviceAllocation struct {
	Priority           *int64     `json:"priority"`
	Namespaces         []string   `json:"namespaces"`
	NamespaceSelectors []selector `json:"namespaceSelectors"`
	ServiceSelectors   []selector `json:"serviceSelectors"`
}

type l2AdvertisementSpec struct {
	IPAddressPools         []string                `json:"ipAddressPools"`
	IPAddressPoolSelectors []selector              `json:"ipAddressPoolSelectors"`
	NodeSelectors          []selector              `json:"nodeSelectors"`
	Interfaces             []string                `json:"interfaces"`
	ServiceSelectors       []selector              `json:"serviceSelectors"`
	PreferredNodeSelectors []preferredNodeSelector `json:"preferredNodeSelectors"`
}

type preferredNodeSelector struct {
	Weight     *int64    `json:"weight"`
	Preference *selector `json:"preference"`
}

type bgpAdvertisementSpec struct {
	AggregationLength      *int64     `json:"aggregationLength"`
	AggregationLengthV6    *int64     `json:"aggregationLengthV6"`
	LocalPref              *int64     `json:"localPref"`
	AsPathPrepend          *int64     `json:"asPathPrepend"`
	Communities            []string   `json:"communities"`
	IPAddressPools         []string   `json:"ipAddressPools"`
	IPAddressPoolSelectors []selector `json:"ipAddressPoolSelectors"`
	NodeSelectors          []selector `json:"nodeSelectors"`
	Peers                  []string   `json:"peers"`
	ServiceSelectors       []selector `json:"serviceSelectors"`
}

// peerV1beta1 is metallb.io/v1beta1 BGPPeer: durations are not pointers
// there, so "0s" and absent mean the same.
type peerV1beta1 struct {
	MyASN         *int64     `json:"myASN"`
	PeerASN       *int64     `json:"peerASN"`
	PeerAddress   string     `json:"peerAddress"`
	SourceAddress string     `json:"sourceAddress"`
	PeerPort      *int64     `json:"peerPort"`
	HoldTime      *string    `json:"holdTime"`
	KeepaliveTime *string    `json:"keepaliveTime"`
	RouterID      string     `json:"routerID"`
	NodeSelectors []selector `json:"nodeSelectors"`
	Password      string     `json:"password"`
	BFDProfile    string     `json:"bfdProfile"`
	EBGPMultiHop  bool       `json:"ebgpMultiHop"`
}

// peerV1beta2 is metallb.io/v1beta2 BGPPeer, MetalLB's storage version.
type peerV1beta2 struct {
	MyASN                  *int64     `json:"myASN"`
	PeerASN                *int64     `json:"peerASN"`
	LocalASN               *int64     `json:"localASN"`
	DynamicASN             string     `json:"dynamicASN"`
	PeerAddress            string     `json:"peerAddress"`
	Interface              string     `json:"interface"`
	SourceAddress          string     `json:"sourceAddress"`
	PeerPort               *int64     `json:"peerPort"`
	HoldTime               *string    `json:"holdTime"`
	KeepaliveTime          *string    `json:"keepaliveTime"`
	ConnectTime            *string    `json:"connectTime"`
	RouterID               string     `json:"routerID"`
	NodeSelectors          []selector `json:"nodeSelectors"`
	Password               string     `json:"password"`
	PasswordSecret         *secretRef `json:"passwordSecret"`
	BFDProfile             string     `json:"bfdProfile"`
	EnableGracefulRestart  bool       `json:"enableGracefulRestart"`
	EBGPMultiHop           bool       `json:"ebgpMultiHop"`
	VRF                    string     `json:"vrf"`
	DisableMP              bool       `json:"disableMP"`
	DualStackAddressFamily bool       `json:"dualStackAddressFamily"`
}

type secretRef struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

type bfdProfileSpec struct {
	ReceiveInterval  *int64 `json:"receiveInterval"`
	TransmitInterval *int64 `json:"transmitInterval"`
	DetectMultiplier *int64 `json:"detectMultiplier"`
	EchoInterval     *int64 `json:"echoInterval"`
	EchoMode         *bool  `json:"echoMode"`
	PassiveMode      *bool  `json:"passiveMode"`
	MinimumTTL       *int64 `json:"minimumTtl"`
}

type communitySpec struct {
	Communities []communityAlias `json:"communities"`
}

type communityAlias struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// metadata is the part of ObjectMeta that carries over; the rest is
// either written by the API server (and meaningless in another cluster) or
// reported.
type metadata struct {
	Name            string            `json:"name"`
	Namespace       string            `json:"namespace"`
	Labels          map[string]string `json:"labels"`
	Annotations     map[string]string `json:"annotations"`
	GenerateName    string            `json:"generateName"`
	OwnerReferences []any             `json:"ownerReferences"`
	Finalizers      []string          `json:"finalizers"`
	// Written by the API server; dropped without a report line.
	UID                        any `json:"uid"`
	ResourceVersion            any `json:"resourceVersion"`
	Generation                 any `json:"generation"`
	CreationTimestamp          any `json:"creationTimestamp"`
	DeletionTimestamp          any `json:"deletionTimestamp"`
	DeletionGracePeriodSeconds any `json:"deletionGracePeriodSeconds"`
	ManagedFields              any `json:"managedFields"`
	SelfLink                   any `json:"selfLink"`
}

// document is one object of the input.
type document struct {
	src  Source
	meta metadata
	// raw is the whole object, for Services (passed through) and for the
	// unknown-field walk.
	raw map[string]any
}

// readDocuments splits a multi-document YAML stream into objects, expanding
// `kind: List` (what `kubectl get -o yaml` prints). Empty documents are
// skipped.
func readDocuments(r io.Reader) ([]document, error) {
	yr := k8syaml.NewYAMLReader(bufio.NewReader(r))
	var docs []document
	var errs []error
	for index := 1; ; index++ {
		b, err := yr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return docs, errors.Join(append(errs, fmt.Errorf("document %d: %w", index, err))...)
		}
		if len(bytes.TrimSpace(stripComments(b))) == 0 {
			index--
			continue
		}
		j, err := yaml.YAMLToJSON(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("document %d: %w", index, err))
			continue
		}
		var obj map[string]any
		if err := json.Unmarshal(j, &obj); err != nil {
			errs = append(errs, fmt.Errorf("document %d: not an object: %w", index, err))
			continue
		}
		if obj == nil {
			index--
			continue
		}
		loc := fmt.Sprintf("%d", index)
		if kind, _ := obj["kind"].(string); kind == "List" {
			items, ok := obj["items"].([]any)
			if !ok && obj["items"] != nil {
				errs = append(errs, fmt.Errorf("document %s (List): items: want a list", loc))
				continue
			}
			for i, it := range items {
				m, ok := it.(map[string]any)
				if !ok {
					errs = append(errs, fmt.Errorf("document %s (List): items[%d]: want an object", loc, i))
					continue
				}
				d, err := newDocument(fmt.Sprintf("%s.items[%d]", loc, i), m)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				docs = append(docs, d)
			}
			continue
		}
		d, err := newDocument(loc, obj)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		docs = append(docs, d)
	}
	return docs, errors.Join(errs...)
}

func stripComments(b []byte) []byte {
	var out []byte
	for line := range bytes.Lines(b) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
		}
	}
	return out
}

func newDocument(loc string, obj map[string]any) (document, error) {
	d := document{raw: obj}
	d.src.Document = loc
	d.src.APIVersion, _ = obj["apiVersion"].(string)
	d.src.Kind, _ = obj["kind"].(string)
	metaErr := decodeField(obj, "metadata", &d.meta)
	d.src.Namespace, d.src.Name = d.meta.Namespace, d.meta.Name
	where := fmt.Sprintf("document %s", loc)
	if d.src.Kind != "" || d.src.Name != "" {
		where += fmt.Sprintf(" (%s %s)", d.src.Kind, qualified(d.src))
	}
	switch {
	case d.src.APIVersion == "":
		return d, fmt.Errorf("%s: apiVersion: missing or not a string", where)
	case d.src.Kind == "":
		return d, fmt.Errorf("%s: kind: missing or not a string", where)
	case metaErr != nil:
		return d, fmt.Errorf("%s: %w", where, metaErr)
	case d.meta.Name == "":
		return d, fmt.Errorf("%s: metadata.name: missing", where)
	}
	return d, nil
}

// decodeField decodes obj[key] into out and names the field on a type
// mismatch ("spec.peerASN: want a number, got string").
func decodeField(obj map[string]any, key string, out any) error {
	v, ok := obj[key]
	if !ok || v == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			field := key
			if te.Field != "" {
				field += "." + te.Field
			}
			return fmt.Errorf("%s: want %s, got %s", field, typeName(te.Type), te.Value)
		}
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int64, reflect.Int, reflect.Int32, reflect.Uint32, reflect.Uint16:
		return "an integer"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Pointer:
		return typeName(t.Elem())
	}
	return t.String()
}

// unknownFields lists the paths in v (decoded JSON) that t, a struct type
// with json tags, does not have. Such fields come from a MetalLB newer than
// this importer, or are typos that MetalLB's API server would have pruned.
func unknownFields(prefix string, v any, t reflect.Type) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		known := map[string]reflect.Type{}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name != "" && name != "-" {
				known[name] = f.Type
			}
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft, ok := known[k]
			if !ok {
				out = append(out, join(prefix, k))
				continue
			}
			out = append(out, unknownFields(join(prefix, k), m[k], ft)...)
		}
	case reflect.Slice:
		l, ok := v.([]any)
		if !ok {
			return nil
		}
		for i, e := range l {
			out = append(out, unknownFields(fmt.Sprintf("%s[%d]", prefix, i), e, t.Elem())...)
		}
	}
	return out
}

func join(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}
