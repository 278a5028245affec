package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/internal/apiserver"
	"github.com/zerohop/zerohop/internal/kubescheme"
	"github.com/zerohop/zerohop/status"
)

func TestIsPlugin(t *testing.T) {
	for argv0, want := range map[string]bool{
		"kubectl-zerohop":                true,
		"/usr/local/bin/kubectl-zerohop": true,
		`C:\bin\kubectl-zerohop.exe`:     false, // not a path on this OS
		"kubectl-zerohop.exe":            true,
		"zerohop":                        false,
		"/usr/bin/zerohop":               false,
		"kubectl-zerohop-status":         false,
	} {
		if got := isPlugin(argv0); got != want {
			t.Errorf("isPlugin(%q) = %v, want %v", argv0, got, want)
		}
	}
}

// TestPluginCommands: kubectl users get the tools, not the components.
func TestPluginCommands(t *testing.T) {
	root := newPluginCommand()
	if root.Use != "kubectl zerohop" {
		t.Errorf("usage line %q", root.Use)
	}
	have := map[string]bool{}
	for _, c := range root.Commands() {
		have[c.Name()] = true
	}
	for name, want := range map[string]bool{"status": true, "import": true, "version": true, "controller": false, "speaker": false} {
		if have[name] != want {
			t.Errorf("kubectl zerohop %s: present %v, want %v", name, have[name], want)
		}
	}
}

// TestPluginStatus runs `kubectl zerohop status -o json` against an API
// server: the API's view of every node without any datapath, with the
// Service's conditions.
func TestPluginStatus(t *testing.T) {
	srv := apiserver.ForTest(t)
	ctx := context.Background()
	c, err := client.New(srv.Config, client.Options{Scheme: kubescheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80}}}}
	if err := c.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.7"}}
	svc.Status.Conditions = []metav1.Condition{{Type: "zerohop.io/Announced", Status: metav1.ConditionTrue, Reason: "Announced",
		Message: "203.0.113.7 by n1 (BGP to r1)", LastTransitionTime: metav1.Now()}}
	if err := c.Status().Update(ctx, svc); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"n1", "n2"} {
		sp := &v1alpha1.SpeakerStatus{ObjectMeta: metav1.ObjectMeta{Name: n}}
		if err := c.Create(ctx, sp); err != nil {
			t.Fatal(err)
		}
		sp.Status = v1alpha1.SpeakerStatusStatus{Node: n, Sessions: []v1alpha1.BGPSessionStatus{{Peer: "r1", State: "established"}}}
		if err := c.Status().Update(ctx, sp); err != nil {
			t.Fatal(err)
		}
	}

	t.Setenv("KUBECONFIG", "")
	root := newPluginCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&bytes.Buffer{})
	root.SetArgs([]string{"status", "-o", "json", "--kubeconfig", srv.Kubeconfig})
	if err := root.Execute(); err != nil {
		t.Fatalf("kubectl zerohop status: %v", err)
	}
	var r status.Report
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if r.Sources.Datapath != "" || !r.Sources.API || len(r.Sessions) != 2 {
		t.Fatalf("sources %+v sessions %+v: want the API's view of both nodes", r.Sources, r.Sessions)
	}
	if len(r.VIPs) != 1 || len(r.VIPs[0].Conditions) != 1 || r.VIPs[0].Conditions[0].Message != "203.0.113.7 by n1 (BGP to r1)" {
		t.Fatalf("vips %+v: want 203.0.113.7 with its Announced condition", r.VIPs)
	}

	root = newPluginCommand()
	root.SetOut(&bytes.Buffer{})
	root.SetErr(&bytes.Buffer{})
	root.SetArgs([]string{"status", "--no-api"})
	if err := root.Execute(); err == nil {
		t.Fatal("kubectl zerohop status --no-api without --bpf-pin-root: want an error")
	}
}
