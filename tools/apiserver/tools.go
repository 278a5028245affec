//go:build tools

// Package apiserver only records the Kubernetes commands the lab runs as
// dependencies, so that `go build k8s.io/kubernetes/cmd/...` resolves them
// in this module: kube-apiserver, kube-controller-manager, kube-scheduler
// and kube-proxy.
package apiserver

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
