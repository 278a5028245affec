package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestZerohopBinary(t *testing.T) {
	dir := t.TempDir()
	self := filepath.Join(dir, "zerohop-lab")
	exe := filepath.Join(dir, "zerohop")
	other := filepath.Join(dir, "other", "zerohop")
	plain := filepath.Join(dir, "plain")
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{{exe, 0o755}, {other, 0o700}, {plain, 0o644}} {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.path, []byte("#!/bin/sh\n"), f.mode); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
	for _, tc := range []struct {
		name, flag, self string
		want             string
		wantErr          string
	}{
		{name: "beside the lab binary", self: self, want: exe},
		{name: "flag wins", flag: other, self: self, want: other},
		{name: "relative flag made absolute", flag: "other/zerohop", self: self, want: other},
		{name: "none beside", self: filepath.Join(dir, "other", "sub", "zerohop-lab"), wantErr: "pass --zerohop"},
		{name: "missing", flag: filepath.Join(dir, "nope"), self: self, wantErr: "no such file"},
		{name: "not executable", flag: plain, self: self, wantErr: "not an executable file"},
		{name: "a directory", flag: filepath.Join(dir, "other"), self: self, wantErr: "not an executable file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := zerohopBinary(tc.flag, tc.self)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("zerohopBinary(%q, %q) = %q, %v; want error containing %q", tc.flag, tc.self, got, err, tc.wantErr)
				}
			case err != nil:
				t.Fatalf("zerohopBinary(%q, %q): %v", tc.flag, tc.self, err)
			case got != tc.want:
				t.Fatalf("zerohopBinary(%q, %q) = %q, want %q", tc.flag, tc.self, got, tc.want)
			}
		})
	}
}

// The lab starts Pods' echo servers and BGP peers as `zerohop-lab helper
// ROLE ...`: the helper command must be this binary's own and must reach the
// lab's helper roles with its arguments untouched.
func TestHelper(t *testing.T) {
	argv, err := helperCommand()
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(argv, []string{self, "helper"}) {
		t.Fatalf("helperCommand() = %q, want [%q helper]", argv, self)
	}
	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{[]string{"helper"}, "missing role"},
		{[]string{"helper", "no-such-role"}, `unknown role "no-such-role"`},
		// Flags belong to the role, not to cobra.
		{[]string{"helper", "echo", "-no-such-flag"}, "no-such-flag"},
	} {
		root := newRootCommand()
		root.SetOut(&bytes.Buffer{})
		root.SetErr(&bytes.Buffer{})
		root.SetArgs(tc.args)
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("zerohop-lab %s: %v, want error containing %q", strings.Join(tc.args, " "), err, tc.wantErr)
		}
	}
}
