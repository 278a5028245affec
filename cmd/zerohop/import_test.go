package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func runImport(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRootCommand()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append([]string{"import", "metallb"}, args...))
	err = root.Execute()
	return out.String(), errOut.String(), err
}

func TestImportMetalLBCommand(t *testing.T) {
	const file = "../../internal/metallbimport/testdata/bgp-communities-bfd.yaml"
	for _, tc := range []struct {
		name       string
		args       []string
		stdin      string
		wantErr    string
		wantOut    string
		wantStderr string
	}{
		{name: "file, text report", args: []string{file},
			wantOut: "apiVersion: zerohop.io/v1alpha1", wantStderr: "untranslated spec.echoMode"},
		{name: "stdin, json report", args: []string{"-", "-o", "json"},
			stdin:   "apiVersion: metallb.io/v1beta1\nkind: BFDProfile\nmetadata: {name: b}\nspec: {echoMode: true}\n",
			wantOut: "kind: BFDProfile", wantStderr: `"level": "untranslated"`},
		{name: "malformed", args: []string{"-"}, stdin: "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: p}\nspec: {myASN: x}\n",
			wantErr: "document 1 (BGPPeer p): spec.myASN: want an integer"},
		{name: "bad format", args: []string{"-", "-o", "xml"}, wantErr: `-o "xml"`},
		{name: "missing file", args: []string{"/nonexistent/zh-metallb.yaml"}, wantErr: "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, err := runImport(t, tc.stdin, tc.args...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				if out != "" {
					t.Errorf("malformed input wrote to stdout: %q", out)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, tc.wantOut) {
				t.Errorf("stdout lacks %q:\n%s", tc.wantOut, out)
			}
			if !strings.Contains(errOut, tc.wantStderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.wantStderr, errOut)
			}
			if strings.Contains(out, "untranslated") {
				t.Errorf("the report leaked into stdout")
			}
			if len(tc.args) > 1 && tc.args[len(tc.args)-1] == "json" {
				var v map[string]any
				if err := json.Unmarshal([]byte(errOut), &v); err != nil {
					t.Errorf("JSON report does not parse: %v", err)
				}
			}
		})
	}
}
