//go:build tools

// Package apiserver only records the kube-apiserver command as a dependency so
// that `go build k8s.io/kubernetes/cmd/kube-apiserver` resolves in this module.
package apiserver

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
