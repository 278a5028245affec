package controller

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/zerohop/zerohop/controller/webhookcert"
)

// Injection of the readiness gate (docs/readiness-gate.md): a mutating
// webhook, called on Pod CREATE in the namespaces labelled
// LabelGateInjection=GateInjectionEnabled, adds the gate and
// LabelReadinessGate to a Pod that a zerohop LoadBalancer Service selects.
const (
	LabelGateInjection   = "zerohop.io/readiness-gate-injection"
	GateInjectionEnabled = "enabled"
	// InjectionPath is the webhook's URL path.
	InjectionPath = "/inject-readiness-gate"
)

// injectTimeout bounds the handler's read of the Services, below the
// webhook configuration's timeoutSeconds, so that the Pod is let through
// unchanged rather than the API server giving up on the call.
const injectTimeout = 2 * time.Second

// InjectionOptions configure the webhook server and its certificate.
type InjectionOptions struct {
	// Host and Port the webhook listens on; Port 0 means 9443.
	Host string
	Port int
	// Cert names the Secret, the MutatingWebhookConfiguration and the
	// certificate's hosts.
	Cert webhookcert.Options
}

// setupInjection registers the webhook on a server that serves the
// certificate kept in the Secret. Every replica serves it: it reads only
// the cached Services, which standbys hold too.
func (s *state) setupInjection(mgr manager.Manager, keeper *webhookcert.Keeper) error {
	if err := mgr.Add(keeper); err != nil {
		return fmt.Errorf("webhook certificate: %w", err)
	}
	inj := &injector{reader: s.client, decoder: admission.NewDecoder(mgr.GetScheme()), defaultClass: s.opts.DefaultClass, log: s.log.WithName("gate-injection")}
	mgr.GetWebhookServer().Register(InjectionPath, &webhook.Admission{Handler: inj})
	return nil
}

func injectionServer(opts InjectionOptions, keeper *webhookcert.Keeper) webhook.Server {
	port := opts.Port
	if port == 0 {
		port = 9443
	}
	return webhook.NewServer(webhook.Options{Host: opts.Host, Port: port, TLSOpts: []func(*tls.Config){
		func(c *tls.Config) {
			c.GetCertificate = keeper.GetCertificate
			c.MinVersion = tls.VersionTLS12
		},
	}})
}

type injector struct {
	reader       client.Reader
	decoder      admission.Decoder
	defaultClass bool
	log          logr.Logger
}

// Handle never refuses a Pod: an error lets it through unchanged, with a
// warning. A refusal would block Pod creation, which failurePolicy Ignore
// is there to prevent (it covers only calls that fail, not answers).
func (i *injector) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create || req.Kind.Kind != "Pod" || req.SubResource != "" {
		return admission.Allowed("")
	}
	var pod corev1.Pod
	if err := i.decoder.Decode(req, &pod); err != nil {
		return i.letThrough(req, fmt.Errorf("decode pod: %w", err))
	}
	if hasGate(&pod) {
		return admission.Allowed("already gated")
	}
	ctx, cancel := context.WithTimeout(ctx, injectTimeout)
	defer cancel()
	ns := req.Namespace
	svc, err := gatingService(ctx, i.reader, ns, pod.Labels, i.defaultClass)
	if err != nil {
		return i.letThrough(req, err)
	}
	if svc == "" {
		return admission.Allowed("no zerohop LoadBalancer Service selects the Pod")
	}
	return admission.Patched("selected by service "+svc, gatePatch(&pod)...)
}

func (i *injector) letThrough(req admission.Request, err error) admission.Response {
	name := req.Name
	if name == "" {
		name = "(generated name)"
	}
	err = fmt.Errorf("pod %s/%s: readiness gate not injected: %w", req.Namespace, name, err)
	i.log.Error(err, "injection")
	return admission.Allowed("").WithWarnings(err.Error())
}

// gatePatch returns the JSON patch that gives the Pod the readiness gate
// and the label the gate controller watches. It only adds: a patch
// computed from a re-encoded Pod would drop the fields this binary's API
// types do not know.
func gatePatch(pod *corev1.Pod) []jsonpatch.JsonPatchOperation {
	if hasGate(pod) {
		return nil
	}
	var ops []jsonpatch.JsonPatchOperation
	switch _, ok := pod.Labels[LabelReadinessGate]; {
	// Empty and absent read alike once decoded; adding the whole map
	// or list fits both (an add replaces an empty member).
	case len(pod.Labels) == 0:
		ops = append(ops, jsonpatch.NewOperation("add", "/metadata/labels", map[string]string{LabelReadinessGate: "true"}))
	case !ok:
		ops = append(ops, jsonpatch.NewOperation("add", "/metadata/labels/"+escapePointer(LabelReadinessGate), "true"))
	}
	gate := corev1.PodReadinessGate{ConditionType: ConditionLoadBalancerReady}
	if len(pod.Spec.ReadinessGates) == 0 {
		ops = append(ops, jsonpatch.NewOperation("add", "/spec/readinessGates", []corev1.PodReadinessGate{gate}))
	} else {
		ops = append(ops, jsonpatch.NewOperation("add", "/spec/readinessGates/-", gate))
	}
	return ops
}

// escapePointer escapes a JSON pointer token (RFC 6901).
func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}
