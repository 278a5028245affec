package bpf

import "testing"

// verifierBudget bounds the instructions the verifier walks for zh_xdp
// (the kernel's limit is 1M; load time grows with it). Part 2 brought it
// to about 70k by verifying the main path once as a global function; the
// new-flow choice and the fast path are too (about 81k with affinity,
// source ranges and the fast path).
const verifierBudget = 120_000

// TestVerifierBudget reports the verifier's work per program and fails
// when zh_xdp outgrows the budget.
func TestVerifierBudget(t *testing.T) {
	d := loadTest(t, Options{})
	for _, c := range []struct {
		name  string
		limit uint32
		info  func() (uint32, bool, error)
	}{
		{"zh_xdp", verifierBudget, func() (uint32, bool, error) {
			i, err := d.objs.ZhXdp.Info()
			if err != nil {
				return 0, false, err
			}
			n, ok := i.VerifiedInstructions()
			return n, ok, nil
		}},
		{"zh_tc_ingress", verifierBudget, func() (uint32, bool, error) {
			i, err := d.objs.ZhTcIngress.Info()
			if err != nil {
				return 0, false, err
			}
			n, ok := i.VerifiedInstructions()
			return n, ok, nil
		}},
		{"zh_tc_pod", verifierBudget, func() (uint32, bool, error) {
			i, err := d.objs.ZhTcPod.Info()
			if err != nil {
				return 0, false, err
			}
			n, ok := i.VerifiedInstructions()
			return n, ok, nil
		}},
		{"zh_tc_egress", verifierBudget, func() (uint32, bool, error) {
			i, err := d.objs.ZhTcEgress.Info()
			if err != nil {
				return 0, false, err
			}
			n, ok := i.VerifiedInstructions()
			return n, ok, nil
		}},
	} {
		n, ok, err := c.info()
		if err != nil || !ok {
			t.Fatalf("%s: verified instructions not available: %v", c.name, err)
		}
		t.Logf("%s: %d instructions verified", c.name, n)
		if n > c.limit {
			t.Errorf("%s: %d instructions verified, budget %d", c.name, n, c.limit)
		}
	}
}
