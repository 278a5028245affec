package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStatusErrorsNameWhatFailed: each failure says which path or option
// is at fault, not just "no such file".
func TestStatusErrorsNameWhatFailed(t *testing.T) {
	dir := t.TempDir()
	badKubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(badKubeconfig, []byte("not: [a kubeconfig"), 0o600); err != nil {
		t.Fatal(err)
	}
	noPins := filepath.Join(dir, "no-pins")
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"no datapath pinned", []string{"--bpf-pin-root", noPins, "--no-api"},
			[]string{"no zerohop datapath pinned under " + noPins, "--node NAME"}},
		{"bad output format", []string{"-o", "yaml"}, []string{`-o "yaml"`}},
		{"--node with --no-api", []string{"--node", "n1", "--no-api"}, []string{"--node reads the API"}},
		{"unreadable kubeconfig", []string{"--node", "n1", "--kubeconfig", badKubeconfig}, []string{"kubeconfig " + badKubeconfig}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KUBECONFIG", "")
			root := newRootCommand()
			root.SetOut(&bytes.Buffer{})
			root.SetErr(&bytes.Buffer{})
			root.SetArgs(append([]string{"status"}, tc.args...))
			err := root.Execute()
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
