package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestSpeakerCommandValidatesFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"speaker", "--node-name", ""}, "--node-name"},
		{[]string{"speaker", "--node-name", "n1", "--router-id", "2001:db8::1"}, "--router-id"},
		{[]string{"speaker", "--node-name", "n1", "--router-id", "nope"}, "--router-id"},
		{[]string{"speaker", "--node-name", "n1", "--max-services", "0"}, "--max-services 0"},
		{[]string{"speaker", "--node-name", "n1", "--max-backends", "16777217"}, "--max-backends 16777217"},
		{[]string{"speaker", "--node-name", "n1", "--max-flows", "0"}, "--max-flows"},
		{[]string{"speaker", "--node-name", "n1", "--max-flows", "-1"}, "--max-flows"},
		{[]string{"speaker", "--node-name", "n1", "--maglev-table-size", "1000"}, "--maglev-table-size 1000: want a prime"},
		{[]string{"speaker", "--node-name", "n1", "--maglev-table-size", "131"}, "--maglev-table-size 131"},
		{[]string{"speaker", "--node-name", "n1", "--maglev-table-size", "262147"}, "--maglev-table-size 262147"},
	}
	for _, tc := range tests {
		t.Setenv("NODE_NAME", "")
		root := newRootCommand()
		root.SetOut(&bytes.Buffer{})
		root.SetErr(&bytes.Buffer{})
		root.SetArgs(tc.args)
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error about %s", tc.args, err, tc.want)
		}
	}
}
