package controller

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/go-logr/logr"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// TestGatePatch applies the injection's patch to Pods as the API server
// would and checks the result: the gate and the label added, nothing
// removed or changed, no patch for a Pod that already has the gate.
func TestGatePatch(t *testing.T) {
	other := corev1.PodReadinessGate{ConditionType: "example.com/other"}
	gate := corev1.PodReadinessGate{ConditionType: ConditionLoadBalancerReady}
	tests := []struct {
		name       string
		labels     map[string]string
		gates      []corev1.PodReadinessGate
		wantOps    int
		wantLabels map[string]string
		wantGates  []corev1.PodReadinessGate
	}{
		{"bare Pod", nil, nil, 2,
			map[string]string{LabelReadinessGate: "true"}, []corev1.PodReadinessGate{gate}},
		{"labels kept", map[string]string{"app": "web", "a/b~c": "x"}, nil, 2,
			map[string]string{"app": "web", "a/b~c": "x", LabelReadinessGate: "true"}, []corev1.PodReadinessGate{gate}},
		{"other gate kept, ours appended", map[string]string{"app": "web"}, []corev1.PodReadinessGate{other}, 2,
			map[string]string{"app": "web", LabelReadinessGate: "true"}, []corev1.PodReadinessGate{other, gate}},
		{"label already set, value kept", map[string]string{LabelReadinessGate: "yes"}, nil, 1,
			map[string]string{LabelReadinessGate: "yes"}, []corev1.PodReadinessGate{gate}},
		{"gate already there: unchanged", map[string]string{"app": "web"}, []corev1.PodReadinessGate{other, gate}, 0,
			map[string]string{"app": "web"}, []corev1.PodReadinessGate{other, gate}},
		{"empty labels map", map[string]string{}, []corev1.PodReadinessGate{}, 2,
			map[string]string{LabelReadinessGate: "true"}, []corev1.PodReadinessGate{gate}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: "ns", GenerateName: "web-", Labels: tc.labels},
				Spec:       corev1.PodSpec{ReadinessGates: tc.gates, Containers: []corev1.Container{{Name: "c", Image: "i"}}},
			}
			raw, err := json.Marshal(pod)
			if err != nil {
				t.Fatal(err)
			}
			ops := gatePatch(pod)
			if len(ops) != tc.wantOps {
				t.Fatalf("got %d operations %v, want %d", len(ops), ops, tc.wantOps)
			}
			for _, op := range ops {
				if op.Operation != "add" {
					t.Errorf("operation %q on %s: only adds are allowed", op.Operation, op.Path)
				}
			}
			if len(ops) > 0 {
				p, err := json.Marshal(ops)
				if err != nil {
					t.Fatal(err)
				}
				patch, err := jsonpatch.DecodePatch(p)
				if err != nil {
					t.Fatalf("decode %s: %v", p, err)
				}
				if raw, err = patch.Apply(raw); err != nil {
					t.Fatalf("apply %s: %v", p, err)
				}
			}
			var got corev1.Pod
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Labels, tc.wantLabels) {
				t.Errorf("labels %v, want %v", got.Labels, tc.wantLabels)
			}
			if !reflect.DeepEqual(got.Spec.ReadinessGates, tc.wantGates) {
				t.Errorf("readinessGates %v, want %v", got.Spec.ReadinessGates, tc.wantGates)
			}
			if len(got.Spec.Containers) != 1 || got.GenerateName != "web-" {
				t.Errorf("the rest of the Pod changed: %+v", got)
			}
		})
	}
}

// listErrReader fails every read, as a cache that is not synced in time.
type listErrReader struct{ client.Reader }

func (listErrReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("cache not synced")
}

// TestInjectorNeverRefuses checks that the handler lets every Pod through:
// an error or an undecodable object is answered "allowed", unpatched,
// with a warning, so that failurePolicy Ignore is not undone by a refusal.
func TestInjectorNeverRefuses(t *testing.T) {
	inj := &injector{reader: listErrReader{}, decoder: admission.NewDecoder(Scheme()), log: logr.Discard()}
	pod, err := json.Marshal(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: map[string]string{"app": "web"}}})
	if err != nil {
		t.Fatal(err)
	}
	podKind := metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}
	tests := []struct {
		name        string
		op          admissionv1.Operation
		raw         []byte
		wantWarning bool
	}{
		{"services cannot be read", admissionv1.Create, pod, true},
		{"not a Pod's JSON", admissionv1.Create, []byte("{"), true},
		{"an update is not looked at", admissionv1.Update, pod, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := inj.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
				Operation: tc.op, Kind: podKind, Namespace: "ns", Name: "p", Object: runtime.RawExtension{Raw: tc.raw},
			}})
			if !resp.Allowed {
				t.Fatalf("refused: %+v", resp.Result)
			}
			if len(resp.Patches) > 0 {
				t.Errorf("patched: %v", resp.Patches)
			}
			if got := len(resp.Warnings) > 0; got != tc.wantWarning {
				t.Errorf("warnings %v, want some: %v", resp.Warnings, tc.wantWarning)
			}
		})
	}
}
