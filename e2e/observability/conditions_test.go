package observability_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/controller"
	"github.com/zerohop/zerohop/e2e/lab"
	"github.com/zerohop/zerohop/internal/apiserver"
)

const scraperSA = "zh-prometheus"

// metricsTokens applies the metrics-reader ClusterRole and its binding as
// `helm template` renders them for metrics.readers=[zh-prometheus], and
// returns a token of that ServiceAccount and one of an account without the
// role.
func metricsTokens(t *testing.T, ctx context.Context, l *lab.Lab) (reader, stranger string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, filepath.Join(apiserver.BinDir(), "helm"), "template", "zerohop", "../../charts/zerohop",
		"--namespace", systemNS, "--kube-version", "v1.37.0", "--show-only", "templates/rbac.yaml",
		"--set", "metrics.readers[0].name="+scraperSA, "--set", "metrics.readers[0].namespace="+systemNS)
	cmd.Env = append(cmd.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	applied := 0
	for _, doc := range strings.Split(string(out), "\n---") {
		var head struct {
			Kind     string            `json:"kind"`
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil || !strings.HasSuffix(head.Metadata.Name, "-metrics-reader") {
			continue
		}
		switch head.Kind {
		case "ClusterRole":
			var r rbacv1.ClusterRole
			if err := yaml.Unmarshal([]byte(doc), &r); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Kube.RbacV1().ClusterRoles().Create(ctx, &r, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		case "ClusterRoleBinding":
			var b rbacv1.ClusterRoleBinding
			if err := yaml.Unmarshal([]byte(doc), &b); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Kube.RbacV1().ClusterRoleBindings().Create(ctx, &b, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		default:
			continue
		}
		applied++
	}
	if applied != 2 {
		t.Fatalf("the chart rendered %d metrics-reader objects, want the ClusterRole and its binding", applied)
	}
	token := func(name string) string {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: systemNS, Name: name}}
		if _, err := l.Kube.CoreV1().ServiceAccounts(systemNS).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		tr, err := l.Kube.CoreV1().ServiceAccounts(systemNS).CreateToken(ctx, name, &authnv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	return token(scraperSA), token("zh-no-role")
}

// fetch GETs url with the token (none when empty) and returns the code
// and body, retrying while the endpoint is not up yet.
func fetch(t *testing.T, ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), url, token string) (int, string) {
	t.Helper()
	tr := &http.Transport{DialContext: dial, DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // self-signed test endpoints
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var lastErr error
	for range 50 {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			lastErr = err
			time.Sleep(200 * time.Millisecond)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode, string(body)
	}
	t.Fatalf("GET %s: %v", url, lastErr)
	return 0, ""
}

// refusedService asks for an address outside every pool, so that the
// controller refuses it (and exports zerohop_refusals_total).
func refusedService(t *testing.T, ctx context.Context, c client.Client) string {
	t.Helper()
	class := v1alpha1.LoadBalancerClass
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "obs-refused",
			Annotations: map[string]string{controller.AnnotationIPs: "198.18.0.1"}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: &class,
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80)}}},
	}
	if err := c.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	return "default/obs-refused"
}

// transition is one change of a condition, as the test saw it.
type transition struct {
	at                     time.Duration
	typ, status, reason, m string
}

// nodeCutConditions cuts node 1 off its uplink (BFD takes its sessions
// down within a second) and brings it back, and checks the Service's
// conditions through it: Announced names both nodes, then node 2 alone
// with node 1's paths not accepted, then both again; the address and the
// datapath (3 of 3) stay. It prints the conditions and the Events as
// `kubectl describe service` lays them out.
func nodeCutConditions(t *testing.T, ctx context.Context, l *lab.Lab, c client.Client, vips []netip.Addr) {
	t.Helper()
	both := fmt.Sprintf("%s, %s by zh-node1 (BGP to router-v4, router-v6), zh-node2 (BGP to router-v4, router-v6)", vips[0], vips[1])
	want := func(what string, d time.Duration, check func(map[string]metav1.Condition) bool) {
		t.Helper()
		lab.Eventually(t, d, what, func() (bool, string) {
			conds := serviceConditions(t, ctx, c)
			return check(conds), fmt.Sprint(conds)
		})
	}
	steady := func(conds map[string]metav1.Condition) bool {
		return conds[controller.ConditionAddressAssigned].Status == metav1.ConditionTrue &&
			conds[controller.ConditionDatapathProgrammed].Message == "programmed on 3 of 3 nodes"
	}
	want("both nodes announce, the datapath is on all three", 30*time.Second, func(conds map[string]metav1.Condition) bool {
		a := conds[controller.ConditionAnnounced]
		return steady(conds) && a.Status == metav1.ConditionTrue && a.Message == both
	})

	// Watch the conditions change from here on.
	var seen []transition
	last := map[string]string{}
	start := time.Now()
	record := func() map[string]metav1.Condition {
		conds := serviceConditions(t, ctx, c)
		for _, typ := range slices.Sorted(maps.Keys(conds)) {
			cd := conds[typ]
			if key := string(cd.Status) + cd.Reason + cd.Message; last[typ] != key {
				last[typ] = key
				seen = append(seen, transition{time.Since(start), typ, string(cd.Status), cd.Reason, cd.Message})
			}
		}
		return conds
	}
	record()
	baseline := len(seen)
	watch := func(what string, d time.Duration, check func(map[string]metav1.Condition) bool) time.Duration {
		t.Helper()
		from := time.Now()
		deadline := from.Add(d)
		for {
			conds := record()
			if check(conds) {
				return time.Since(from)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s; conditions %v", what, d, conds)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// The cut drops everything on node 1's uplink in its namespace's
	// netfilter (after XDP, which passes BGP and BFD on): the router
	// loses the node as a cable pull would, but the link stays up, so the
	// node keeps its routes (a link down would flush its IPv6 default
	// route, which the lab does not put back).
	link := func(state string) {
		script := "delete table inet zh-cut\n"
		if state == "down" {
			script = `table inet zh-cut {
	chain in { type filter hook input priority -300; iifname "eth0" drop; }
	chain out { type filter hook output priority -300; oifname "eth0" drop; }
}
`
		}
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", lab.NodeName(1), "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("node 1 uplink %s: %v: %s", state, err, out)
		}
	}
	restored := false
	defer func() {
		if !restored {
			link("up")
		}
	}()

	link("down")
	cut := watch("node 1's paths not accepted after its uplink is cut", 20*time.Second, func(conds map[string]metav1.Condition) bool {
		a := conds[controller.ConditionAnnounced]
		return a.Status == metav1.ConditionTrue && strings.Contains(a.Message, " by zh-node2 (BGP to router-v4, router-v6)") &&
			strings.Contains(a.Message, "sent but not accepted from zh-node1 (no established session: ")
	})
	link("up")
	restored = true
	back := watch("both nodes again after the uplink returns", 60*time.Second, func(conds map[string]metav1.Condition) bool {
		return conds[controller.ConditionAnnounced].Message == both
	})
	final := record()
	if !steady(final) {
		t.Errorf("address or datapath conditions moved during the cut: %v", final)
	}
	for _, tr := range seen[baseline:] {
		if tr.typ != controller.ConditionAnnounced {
			t.Errorf("%s changed during a node cut: %+v", tr.typ, tr)
		}
	}
	t.Logf("uplink cut: Announced shows node 1 not accepted after %s; uplink back: both nodes after %s (lab timings, shared CPU)",
		cut.Round(time.Millisecond), back.Round(time.Millisecond))

	// What kubectl describe shows: an Announcement Event for the cut and
	// one for the return, in that order.
	lab.Eventually(t, 10*time.Second, "Announcement Events for the cut and the return", func() (bool, string) {
		var notes []string
		for _, e := range serviceEvents(t, ctx, l) {
			if e.Reason == "Announcement" && !e.EventTime.Time.Before(start.Add(-time.Second)) {
				notes = append(notes, e.Note)
			}
		}
		i := slices.IndexFunc(notes, func(n string) bool { return strings.Contains(n, "sent but not accepted from zh-node1") })
		ok := i >= 0 && slices.ContainsFunc(notes[i+1:], func(n string) bool { return n == "Announced: "+both })
		return ok, strings.Join(notes, "\n")
	})

	var b strings.Builder
	fmt.Fprintf(&b, "conditions of default/%s as they changed (status.conditions):\n", svcName)
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  AT\tTYPE\tSTATUS\tREASON\tMESSAGE")
	for _, tr := range seen {
		fmt.Fprintf(tw, "  +%s\t%s\t%s\t%s\t%s\n", tr.at.Round(100*time.Millisecond), tr.typ, tr.status, tr.reason, tr.m)
	}
	_ = tw.Flush()
	b.WriteString(describeEvents(t, ctx, l))
	t.Log("\n" + b.String())
}

func serviceConditions(t *testing.T, ctx context.Context, c client.Client) map[string]metav1.Condition {
	t.Helper()
	var svc corev1.Service
	if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: svcName}, &svc); err != nil {
		t.Fatal(err)
	}
	out := map[string]metav1.Condition{}
	for _, typ := range []string{controller.ConditionAddressAssigned, controller.ConditionAnnounced, controller.ConditionDatapathProgrammed} {
		if cd := meta.FindStatusCondition(svc.Status.Conditions, typ); cd != nil {
			out[typ] = *cd
		}
	}
	return out
}

// describeEvents renders the Service's Events the way `kubectl describe
// service` does (its Events section is where describe shows what zerohop
// reports: kubectl prints no Service conditions), and, when kubectl is
// installed, what kubectl itself prints.
func describeEvents(t *testing.T, ctx context.Context, l *lab.Lab) string {
	t.Helper()
	mine := serviceEvents(t, ctx, l)
	var b bytes.Buffer
	b.WriteString("Events (as kubectl describe service shows them):\n")
	tw := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  Type\tReason\tAge\tFrom\tMessage")
	fmt.Fprintln(tw, "  ----\t------\t----\t----\t-------")
	for _, e := range mine {
		from := e.ReportingController
		if e.ReportingInstance != "" && e.ReportingController == "" {
			from = e.ReportingInstance
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", e.Type, e.Reason, time.Since(e.EventTime.Time).Round(time.Second), from, e.Note)
	}
	_ = tw.Flush()
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", l.APIServer().Kubeconfig, "describe", "service", "-n", "default", svcName).CombinedOutput()
		fmt.Fprintf(&b, "\nkubectl describe service default/%s (%s, err %v):\n%s", svcName, kubectl, err, out)
	}
	return b.String()
}

// serviceEvents lists the Service's Events, oldest first.
func serviceEvents(t *testing.T, ctx context.Context, l *lab.Lab) []eventsv1.Event {
	t.Helper()
	evs, err := l.Kube.EventsV1().Events("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var mine []eventsv1.Event
	for _, e := range evs.Items {
		if e.Regarding.Kind == "Service" && e.Regarding.Name == svcName {
			mine = append(mine, e)
		}
	}
	slices.SortFunc(mine, func(a, b eventsv1.Event) int { return a.EventTime.Compare(b.EventTime.Time) })
	return mine
}
