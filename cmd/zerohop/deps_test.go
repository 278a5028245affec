package main

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/zerohop/zerohop"

// labSide are the module's development tools: the lab and the e2e suites
// with their echo server, the benchmarks, the test API server starter and
// the lab's command. The zerohop binary is what the image ships, so it
// links none of them (golangci-lint's depguard checks the same per file).
var labSide = []string{"e2e", "bench", "internal/apiserver", "cmd/zerohop-lab"}

func isLabSide(pkg string) bool {
	rel, ok := strings.CutPrefix(pkg, module+"/")
	if !ok {
		return false
	}
	for _, p := range labSide {
		if rel == p || strings.HasPrefix(rel, p+"/") {
			return true
		}
	}
	return false
}

func TestIsLabSide(t *testing.T) {
	for _, tc := range []struct {
		pkg  string
		want bool
	}{
		{module + "/e2e/lab", true},
		{module + "/e2e/echo", true},
		{module + "/bench", true},
		{module + "/internal/apiserver", true},
		{module + "/cmd/zerohop-lab", true},
		{module + "/cmd/zerohop", false},
		{module + "/internal/version", false},
		{module + "/internal/apiserverx", false},
		{module + "/speaker/datapath", false},
		{module + "/benchmarks", false},
		{"example.com/e2e/lab", false},
		{"testing", false},
	} {
		if got := isLabSide(tc.pkg); got != tc.want {
			t.Errorf("isLabSide(%q) = %v, want %v", tc.pkg, got, tc.want)
		}
	}
}

// TestBinaryLinksNoLabCode lists what `go build ./cmd/zerohop` links and
// fails on any lab-side package, naming the packages that import it.
func TestBinaryLinksNoLabCode(t *testing.T) {
	goBin := os.Getenv("GO")
	if goBin == "" {
		goBin = "go"
	}
	cmd := exec.Command(goBin, "list", "-deps", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", ".")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/zerohop: %v", err)
	}
	deps := map[string]bool{}
	importedBy := map[string][]string{}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		deps[f[0]] = true
		for _, imp := range f[1:] {
			importedBy[imp] = append(importedBy[imp], f[0])
		}
	}
	// A listing without the components would pass for the wrong reason.
	for _, want := range []string{module + "/cmd/zerohop", module + "/controller", module + "/speaker", module + "/bpf"} {
		if !deps[want] {
			t.Fatalf("go list -deps ./cmd/zerohop: %s missing from %d packages", want, len(deps))
		}
	}
	var bad []string
	for pkg := range deps {
		if isLabSide(pkg) {
			bad = append(bad, pkg)
		}
	}
	slices.Sort(bad)
	for _, pkg := range bad {
		by := importedBy[pkg]
		slices.Sort(by)
		t.Errorf("the zerohop binary links %s (imported by %s): lab, bench and test-server code stays out of the product",
			pkg, strings.Join(by, ", "))
	}
}
